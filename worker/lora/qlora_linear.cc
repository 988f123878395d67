#include "worker/lora/qlora_linear.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "worker/lora/dora.h"
#include "worker/profile/step_profiler.h"

namespace rigtune::lora {
namespace {

// Note [Dequantize twice, save nothing]
// A bf16 copy of every frozen weight kept for backward would cost 2 bytes per
// parameter, four times the NF4 weight itself. Nf4Matmul saves only a pointer
// to the packed weight (which outlives the step) and the workspace; backward
// dequantizes again into the same buffer. Dequantizing is bandwidth-bound and
// cheap next to the GEMM that follows it. The weight must stay alive and
// unchanged until backward has run; the trainer guarantees it (FSDP keeps a
// gathered layer until its backward is done).

// The weight in `dtype` on `device`: a dense base as it is, a quantized one
// dequantized into the workspace (valid until the next call).
at::Tensor Dequant(const quant::FrozenWeight& weight, DequantWorkspace& workspace,
                   at::ScalarType dtype, at::Device device) {
  if (weight.is_dense() && weight.dense().scalar_type() == dtype) return weight.dense();
  const std::vector<int64_t> shape = weight.shape();
  at::Tensor w = workspace.Get(shape[0], shape[1], dtype, device);
  profile::ScopedPhase phase(profile::Phase::kDequantize, w);
  absl::Status s = weight.DequantizeInto(w);
  if (!s.ok()) throw std::runtime_error(std::string(s.message()));
  return w;
}

// Note [A product whose value is never read]
// -------------------------------------------
// In the checkpointed step's recompute, a layer's output is never used as a
// value: the layer's backward only sends the output gradient, which the
// trainer already holds, back through the graph. What the backward of
// y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ reads is W (dequantized again), x, A, B and the thin
// x·Aᵀ, never y. So when nothing reads y (the last linear of the MLP, whose
// output only joins the residual sum, unless a sandwich norm normalizes it
// first: Gemma), its forward may skip the base GEMM and the B product and
// return a stand-in of y's shape (a broadcast zero, no memory), keeping the
// node's backward unchanged. The caller decides when that holds
// (see Note [Keeping the gate/up product] in llama.cc): the node cannot
// know who reads its output.

// A broadcast zero of y's shape for x [..., in] and `out` features.
at::Tensor ValuelessOutput(const at::Tensor& x, int64_t out) {
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = out;
  return at::zeros({}, x.options()).expand(sizes);
}

struct Nf4MatmulFunction : public torch::autograd::Function<Nf4MatmulFunction> {
  // `value` false: Note [A product whose value is never read].
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const quant::FrozenWeight* weight, DequantWorkspace* workspace,
                            bool value) {
    ctx->saved_data["weight"] = reinterpret_cast<int64_t>(weight);
    ctx->saved_data["workspace"] = reinterpret_cast<int64_t>(workspace);
    if (!value) return ValuelessOutput(x, weight->shape()[0]);
    return Multiply(x, *weight, *workspace);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto* weight = reinterpret_cast<const quant::FrozenWeight*>(ctx->saved_data["weight"].toInt());
    auto* workspace = reinterpret_cast<DequantWorkspace*>(ctx->saved_data["workspace"].toInt());
    const at::Tensor& g = grad_out[0];
    at::Tensor w = Dequant(*weight, *workspace, g.scalar_type(), g.device());
    profile::ScopedPhase phase(profile::Phase::kBaseGemm, g);
    return {at::matmul(g, w), at::Tensor(), at::Tensor(), at::Tensor()};
  }

  static at::Tensor Multiply(const at::Tensor& x, const quant::FrozenWeight& weight,
                             DequantWorkspace& workspace) {
    at::Tensor w = Dequant(weight, workspace, x.scalar_type(), x.device());
    profile::ScopedPhase phase(profile::Phase::kBaseGemm, x);
    return at::matmul(x, w.t());
  }
};

// Note [LoRA folded into the base product]
// ----------------------------------------
// y = x·Wᵀ + s·(h·Aᵀ)·Bᵀ (h = x, or x with dropout) as one autograd node:
// the adapter's product accumulates into the base GEMM's output (addmm with
// beta = 1, alpha = s), so no [tokens, out] temporary is written, scaled and
// added. Backward likewise: with gB = g·B (a thin [tokens, r] product),
// grad_x = g·W + s·gB·A accumulates into the base product's output, and
// grad_A = s·gBᵀ·h, grad_B = s·gᵀ·(h·Aᵀ) come from the saved thin xa = h·Aᵀ and
// h. Adapter gradients are returned in the masters' dtype (float32). When h is
// x itself both gradients leave in x's slot, so autograd adds nothing.
struct QLoraFunction : public torch::autograd::Function<QLoraFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& h, const at::Tensor& lora_a, const at::Tensor& lora_b,
                            const quant::FrozenWeight* weight, DequantWorkspace* workspace,
                            double scale, bool value) {
    const at::ScalarType dtype = x.scalar_type();
    // `value` false: Note [A product whose value is never read].
    at::Tensor y = value ? Nf4MatmulFunction::Multiply(x, *weight, *workspace)
                         : ValuelessOutput(x, weight->shape()[0]);
    profile::ScopedPhase phase(profile::Phase::kLora, x);
    const at::Tensor a = lora_a.to(dtype), b = lora_b.to(dtype);
    const at::Tensor h2 = h.reshape({-1, h.size(-1)});
    const at::Tensor xa = at::mm(h2, a.t());
    if (value) y.view({-1, y.size(-1)}).addmm_(xa, b.t(), 1.0, scale);
    ctx->save_for_backward({h2, xa, a, b});
    ctx->saved_data["weight"] = reinterpret_cast<int64_t>(weight);
    ctx->saved_data["workspace"] = reinterpret_cast<int64_t>(workspace);
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["h_is_x"] = h.is_same(x);
    ctx->saved_data["master_dtype"] = static_cast<int64_t>(lora_a.scalar_type());
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto* weight = reinterpret_cast<const quant::FrozenWeight*>(ctx->saved_data["weight"].toInt());
    auto* workspace = reinterpret_cast<DequantWorkspace*>(ctx->saved_data["workspace"].toInt());
    const double scale = ctx->saved_data["scale"].toDouble();
    const auto master = static_cast<at::ScalarType>(ctx->saved_data["master_dtype"].toInt());
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &h2 = saved[0], &xa = saved[1], &a = saved[2], &b = saved[3];
    const at::Tensor& g = grad_out[0];
    at::Tensor w = Dequant(*weight, *workspace, g.scalar_type(), g.device());
    at::Tensor grad_x;
    {
      profile::ScopedPhase phase(profile::Phase::kBaseGemm, g);
      grad_x = at::matmul(g, w);
    }
    profile::ScopedPhase phase(profile::Phase::kLora, g);
    const at::Tensor g2 = g.reshape({-1, g.size(-1)});
    const at::Tensor gb = at::mm(g2, b);  // [tokens, r]
    at::Tensor grad_a = at::mm(gb.t(), h2).to(master).mul_(scale);
    at::Tensor grad_b = at::mm(g2.t(), xa).to(master).mul_(scale);
    at::Tensor grad_h;
    if (ctx->saved_data["h_is_x"].toBool()) {
      grad_x.view({-1, grad_x.size(-1)}).addmm_(gb, a, 1.0, scale);
    } else {
      grad_h = at::mm(gb, a).mul_(scale).view(grad_x.sizes());
    }
    return {grad_x, grad_h, grad_a, grad_b, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

std::vector<AdapterPart> AdapterParts(const LoraSpec& spec) {
  if (spec.r <= 0) return {};
  if (spec.dora) return {AdapterPart::kA, AdapterPart::kB, AdapterPart::kMagnitude};
  return {AdapterPart::kA, AdapterPart::kB};
}

const char* PeftSuffix(AdapterPart part) {
  switch (part) {
    case AdapterPart::kA: return "lora_A.weight";
    case AdapterPart::kB: return "lora_B.weight";
    case AdapterPart::kMagnitude: return "lora_magnitude_vector";
  }
  return "?";
}

std::vector<int64_t> AdapterPartShape(AdapterPart part, const LoraSpec& spec, int64_t out,
                                      int64_t in) {
  switch (part) {
    case AdapterPart::kA: return {spec.r, in};
    case AdapterPart::kB: return {out, spec.r};
    case AdapterPart::kMagnitude: return {out};
  }
  return {};
}

at::Tensor BaseWeightIn(const quant::FrozenWeight& weight, DequantWorkspace& workspace,
                        at::ScalarType dtype, at::Device device) {
  return Dequant(weight, workspace, dtype, device);
}

at::Tensor QLoraProduct(const at::Tensor& x, const at::Tensor& h, const at::Tensor& lora_a,
                        const at::Tensor& lora_b, const quant::FrozenWeight& weight,
                        DequantWorkspace& workspace, double scale) {
  return QLoraFunction::apply(x, h, lora_a, lora_b, &weight, &workspace, scale, true);
}

at::Tensor& QLoraLinear::adapter(AdapterPart part) {
  return part == AdapterPart::kA ? lora_a_ : part == AdapterPart::kB ? lora_b_ : magnitude_;
}

const at::Tensor& QLoraLinear::adapter(AdapterPart part) const {
  return part == AdapterPart::kA ? lora_a_ : part == AdapterPart::kB ? lora_b_ : magnitude_;
}

at::Tensor DequantWorkspace::Get(int64_t rows, int64_t cols, at::ScalarType dtype,
                                 at::Device device) {
  const int64_t bytes_needed = rows * cols * static_cast<int64_t>(c10::elementSize(dtype));
  if (!buffer_.defined() || buffer_.device() != device || buffer_.numel() < bytes_needed) {
    buffer_ = at::empty({bytes_needed}, at::TensorOptions().dtype(at::kByte).device(device));
  }
  return buffer_.narrow(0, 0, bytes_needed).view(dtype).view({rows, cols});
}

int64_t DequantWorkspace::bytes() const { return buffer_.defined() ? buffer_.numel() : 0; }

at::Tensor Nf4Matmul(const at::Tensor& x, const quant::FrozenWeight& weight,
                     DequantWorkspace& workspace) {
  return Nf4MatmulFunction::apply(x, &weight, &workspace, true);
}

QLoraLinear::QLoraLinear(quant::FrozenWeight weight, at::Tensor bias, const LoraSpec& spec,
                         uint64_t seed)
    : weight_(std::move(weight)), bias_(std::move(bias)), spec_(spec) {
  if (spec_.r <= 0) return;
  const int64_t in = in_features(), out = out_features();
  auto opts = at::TensorOptions().dtype(at::kFloat).device(weight_.device());
  // Kaiming-uniform with a = sqrt(5): bound = sqrt(6 / ((1 + a^2) * fan_in)) = 1/sqrt(fan_in).
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  lora_a_ = at::empty({spec_.r, in}, at::kFloat).uniform_(-bound, bound, gen).to(opts);
  lora_b_ = at::zeros({out, spec_.r}, opts);
  lora_a_.set_requires_grad(true);
  lora_b_.set_requires_grad(true);
  if (spec_.dora) {
    DequantWorkspace workspace;
    magnitude_ = DoraRowNorms(weight_, lora_a_, lora_b_, spec_.scale, workspace);
    magnitude_.set_requires_grad(true);
  }
}

QLoraLinear::QLoraLinear(quant::FrozenWeight weight, at::Tensor bias, const LoraSpec& spec,
                         at::Tensor lora_a, at::Tensor lora_b, at::Tensor magnitude)
    : weight_(std::move(weight)),
      bias_(std::move(bias)),
      spec_(spec),
      lora_a_(std::move(lora_a)),
      lora_b_(std::move(lora_b)),
      magnitude_(std::move(magnitude)) {}

at::Tensor QLoraLinear::Forward(const at::Tensor& x, DequantWorkspace& workspace, bool training,
                                uint64_t dropout_seed) const {
  if (!has_adapter()) {
    // A trained dense weight (train.method full) is an ordinary autograd
    // leaf: at::linear gives its gradient (and the bias's) as nn.Linear does.
    if (weight_trains()) return at::linear(x, weight_.dense(), bias_);
    at::Tensor y = Nf4Matmul(x, weight_, workspace);
    return bias_.defined() ? y + bias_ : y;
  }
  at::Tensor h = x;
  if (training && spec_.dropout > 0) {
    // A private generator seeded per call: the mask is a function of the seed
    // alone, on CPU and CUDA alike.
    at::Generator gen = at::globalContext().defaultGenerator(x.device()).clone();
    gen.set_current_seed(dropout_seed);
    const double keep = 1.0 - spec_.dropout;
    at::Tensor mask = at::empty_like(x).bernoulli_(keep, gen);
    h = x * mask.div_(keep);
  }
  at::Tensor y;
  if (is_dora()) {
    if (!dora_norms_) dora_norms_ = std::make_shared<DoraNormCache>();
    const at::Tensor& norm = dora_norms_->Get(weight_, lora_a_, lora_b_, spec_.scale, workspace);
    y = DoraProduct(x, h, lora_a_, lora_b_, magnitude_, norm, weight_, workspace, spec_.scale);
  } else {
    y = QLoraFunction::apply(x, h, lora_a_, lora_b_, &weight_, &workspace, spec_.scale, true);
  }
  return bias_.defined() ? y + bias_ : y;
}

bool QLoraLinear::CanSkipValue(bool training) const {
  return !bias_.defined() && !weight_trains() && !is_dora() &&
         !(training && has_adapter() && spec_.dropout > 0);
}

at::Tensor QLoraLinear::GradientOnlyForward(const at::Tensor& x,
                                            DequantWorkspace& workspace) const {
  if (!CanSkipValue(/*training=*/true)) {
    throw std::invalid_argument(
        "QLoraLinear::GradientOnlyForward: needs a frozen weight without bias, DoRA or dropout");
  }
  if (!has_adapter()) return Nf4MatmulFunction::apply(x, &weight_, &workspace, false);
  return QLoraFunction::apply(x, x, lora_a_, lora_b_, &weight_, &workspace, spec_.scale, false);
}

}  // namespace rigtune::lora
