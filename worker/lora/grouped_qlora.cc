#include "worker/lora/grouped_qlora.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <stdexcept>
#include <string>

#include "worker/profile/step_profiler.h"

namespace rigtune::lora {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// [Σ out_i, in] in `dtype`: every weight dequantized into its rows.
at::Tensor DequantStacked(const std::vector<int64_t>& weights, const std::vector<int64_t>& outs,
                          DequantWorkspace& workspace, at::ScalarType dtype, at::Device device) {
  int64_t total = 0;
  for (int64_t o : outs) total += o;
  const auto* first = reinterpret_cast<const quant::FrozenWeight*>(weights[0]);
  at::Tensor w = workspace.Get(total, first->shape()[1], dtype, device);
  profile::ScopedPhase phase(profile::Phase::kDequantize, w);
  int64_t row = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    at::Tensor rows = w.narrow(0, row, outs[i]);
    const absl::Status s =
        reinterpret_cast<const quant::FrozenWeight*>(weights[i])->DequantizeInto(rows);
    if (!s.ok()) throw std::runtime_error(std::string(s.message()));
    row += outs[i];
  }
  return w;
}

// The grouped product's forward: y = x·[W₀; W₁; …]ᵀ + Σ s_i·(x·A_iᵀ)·B_iᵀ, or,
// with `kept` defined (the y an earlier no-grad forward computed from this
// same x and these weights), `kept` itself with neither product run. Either
// way it saves what GroupedBackward reads: the thin x·Aᵀ is recomputed
// rather than kept (see Note [Keeping the gate/up product] in llama.cc).
at::Tensor GroupedForwardImpl(AutogradContext* ctx, const at::Tensor& x, at::TensorList lora_a,
                              at::TensorList lora_b, const std::vector<int64_t>& weights,
                              const std::vector<int64_t>& outs, const std::vector<double>& scales,
                              DequantWorkspace* workspace, const at::Tensor& kept) {
  const at::ScalarType dtype = x.scalar_type();
  at::Tensor y = kept;
  if (!kept.defined()) {
    at::Tensor w = DequantStacked(weights, outs, *workspace, dtype, x.device());
    profile::ScopedPhase phase(profile::Phase::kBaseGemm, x);
    y = at::matmul(x, w.t());
  }
  ctx->saved_data["weights"] = weights;
  ctx->saved_data["outs"] = outs;
  ctx->saved_data["scales"] = scales;
  ctx->saved_data["workspace"] = reinterpret_cast<int64_t>(workspace);
  if (lora_a.empty()) return y;
  profile::ScopedPhase phase(profile::Phase::kLora, x);
  const at::Tensor h2 = x.reshape({-1, x.size(-1)});
  const at::Tensor a = at::cat(lora_a, 0).to(dtype);  // [Σ r_i, in]
  const at::Tensor xa = at::mm(h2, a.t());            // [tokens, Σ r_i]
  std::vector<at::Tensor> saved = {h2, xa, a};
  int64_t col = 0, rcol = 0;
  for (size_t i = 0; i < outs.size(); ++i) {
    const int64_t r = lora_a[i].size(0);
    const at::Tensor b = lora_b[i].to(dtype);
    if (!kept.defined()) {
      y.view({-1, y.size(-1)})
          .narrow(1, col, outs[i])
          .addmm_(xa.narrow(1, rcol, r), b.t(), 1.0, scales[i]);
    }
    saved.push_back(b);
    col += outs[i];
    rcol += r;
  }
  ctx->save_for_backward(saved);
  ctx->saved_data["master_dtype"] = static_cast<int64_t>(lora_a[0].scalar_type());
  return y;
}

// Gradients for x, every A and every B; `trailing` undefined ones follow for
// the forward's non-tensor (and kept) arguments.
variable_list GroupedBackward(AutogradContext* ctx, const variable_list& grad_out, size_t trailing);

// Inputs: x, then every A, then every B (float32 masters; empty lists without
// adapters), then the packed weights' addresses, output sizes and scales.
struct GroupedFunction : public torch::autograd::Function<GroupedFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList lora_a,
                            at::TensorList lora_b, std::vector<int64_t> weights,
                            std::vector<int64_t> outs, std::vector<double> scales,
                            DequantWorkspace* workspace) {
    return GroupedForwardImpl(ctx, x, lora_a, lora_b, weights, outs, scales, workspace, {});
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    return GroupedBackward(ctx, grad_out, 4);  // weights, outs, scales, workspace
  }
};

// GroupedFunction whose forward hands back `kept` (the same inputs and one
// more: the product, which takes no gradient); its backward is
// GroupedFunction's.
struct KeptGroupedFunction : public torch::autograd::Function<KeptGroupedFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList lora_a,
                            at::TensorList lora_b, std::vector<int64_t> weights,
                            std::vector<int64_t> outs, std::vector<double> scales,
                            DequantWorkspace* workspace, const at::Tensor& kept) {
    return GroupedForwardImpl(ctx, x, lora_a, lora_b, weights, outs, scales, workspace, kept);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    return GroupedBackward(ctx, grad_out, 5);  // weights, outs, scales, workspace, kept
  }
};

variable_list GroupedBackward(AutogradContext* ctx, const variable_list& grad_out,
                              size_t trailing) {
  const std::vector<int64_t> weights = ctx->saved_data["weights"].toIntVector();
  const std::vector<int64_t> outs = ctx->saved_data["outs"].toIntVector();
  const std::vector<double> scales = ctx->saved_data["scales"].toDoubleVector();
  auto* workspace = reinterpret_cast<DequantWorkspace*>(ctx->saved_data["workspace"].toInt());
  const at::Tensor& g = grad_out[0];
  at::Tensor w = DequantStacked(weights, outs, *workspace, g.scalar_type(), g.device());
  at::Tensor grad_x;
  {
    profile::ScopedPhase phase(profile::Phase::kBaseGemm, g);
    grad_x = at::matmul(g, w);
  }
  const size_t n = outs.size();
  const auto saved = ctx->get_saved_variables();
  variable_list grads = {grad_x};
  if (saved.empty()) {
    grads.resize(1 + trailing);
    return grads;
  }
  profile::ScopedPhase phase(profile::Phase::kLora, g);
  const auto master = static_cast<at::ScalarType>(ctx->saved_data["master_dtype"].toInt());
  const at::Tensor &h2 = saved[0], &xa = saved[1], &a = saved[2];
  const at::Tensor g2 = g.reshape({-1, g.size(-1)});
  std::vector<at::Tensor> gb(n), grad_b(n);
  int64_t col = 0, rcol = 0;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& b = saved[3 + i];
    const int64_t r = b.size(1);
    const at::Tensor gi = g2.narrow(1, col, outs[i]);
    gb[i] = at::mm(gi, b).mul_(scales[i]);  // s_i·g_i·B_i  [tokens, r_i]
    grad_b[i] = at::mm(gi.t(), xa.narrow(1, rcol, r)).to(master).mul_(scales[i]);
    col += outs[i];
    rcol += r;
  }
  const at::Tensor gb_all = at::cat(gb, 1);  // [tokens, Σ r_i]
  grad_x.view({-1, grad_x.size(-1)}).addmm_(gb_all, a);
  const at::Tensor grad_a_all = at::mm(gb_all.t(), h2).to(master);  // [Σ r_i, in]
  rcol = 0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t r = grad_b[i].size(1);
    grads.push_back(grad_a_all.narrow(0, rcol, r));
    rcol += r;
  }
  for (size_t i = 0; i < n; ++i) grads.push_back(grad_b[i]);
  grads.resize(grads.size() + trailing);
  return grads;
}

}  // namespace

bool CanRunAsOneProduct(const std::vector<const QLoraLinear*>& linears, bool training) {
  if (linears.empty()) return false;
  const QLoraLinear& first = *linears[0];
  for (const QLoraLinear* l : linears) {
    if (l->bias().defined() || l->in_features() != first.in_features() ||
        l->has_adapter() != first.has_adapter() ||
        l->weight().device() != first.weight().device() || l->weight_trains()) {
      return false;
    }
    if (training && l->has_adapter() && l->spec().dropout > 0) return false;
    if (l->is_dora()) return false;  // per-row rescaling by its own weight norm
  }
  return true;
}

bool CanGroup(const std::vector<const QLoraLinear*>& linears, bool training) {
  return linears.size() >= 2 && CanRunAsOneProduct(linears, training);
}

namespace {

// GroupedFunction's (or KeptGroupedFunction's) arguments for `linears`.
struct GroupArgs {
  std::vector<at::Tensor> a, b;
  std::vector<int64_t> weights, outs;
  std::vector<double> scales;

  explicit GroupArgs(const std::vector<const QLoraLinear*>& linears) {
    for (const QLoraLinear* l : linears) {
      weights.push_back(reinterpret_cast<int64_t>(&l->weight()));
      outs.push_back(l->out_features());
      scales.push_back(l->scale());
      if (l->has_adapter()) {
        a.push_back(l->lora_a());
        b.push_back(l->lora_b());
      }
    }
  }
};

}  // namespace

at::Tensor GroupedForward(const std::vector<const QLoraLinear*>& linears, const at::Tensor& x,
                          DequantWorkspace& workspace) {
  GroupArgs g(linears);
  return GroupedFunction::apply(x, at::TensorList(g.a), at::TensorList(g.b), std::move(g.weights),
                                std::move(g.outs), std::move(g.scales), &workspace);
}

at::Tensor KeptGroupedForward(const std::vector<const QLoraLinear*>& linears, const at::Tensor& x,
                              const at::Tensor& kept, DequantWorkspace& workspace) {
  GroupArgs g(linears);
  int64_t total = 0;
  for (int64_t o : g.outs) total += o;
  std::vector<int64_t> want = x.sizes().vec();
  want.back() = total;
  if (!kept.sizes().equals(want) || kept.scalar_type() != x.scalar_type() ||
      kept.device() != x.device()) {
    throw std::invalid_argument(
        "KeptGroupedForward: the kept product does not match the input (shape, dtype or device)");
  }
  return KeptGroupedFunction::apply(x, at::TensorList(g.a), at::TensorList(g.b),
                                    std::move(g.weights), std::move(g.outs), std::move(g.scales),
                                    &workspace, kept.detach());
}

}  // namespace rigtune::lora
