#include "worker/lora/qlora_linear.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <stdexcept>

#include "absl/strings/str_cat.h"

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
struct Nf4MatmulFunction : public torch::autograd::Function<Nf4MatmulFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const quant::Nf4Tensor* weight, DequantWorkspace* workspace) {
    ctx->saved_data["weight"] = reinterpret_cast<int64_t>(weight);
    ctx->saved_data["workspace"] = reinterpret_cast<int64_t>(workspace);
    return Multiply(x, *weight, *workspace);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto* weight = reinterpret_cast<const quant::Nf4Tensor*>(ctx->saved_data["weight"].toInt());
    auto* workspace = reinterpret_cast<DequantWorkspace*>(ctx->saved_data["workspace"].toInt());
    const at::Tensor& g = grad_out[0];
    at::Tensor w = Dequant(*weight, *workspace, g.scalar_type(), g.device());
    return {at::matmul(g, w), at::Tensor(), at::Tensor()};
  }

  static at::Tensor Dequant(const quant::Nf4Tensor& weight, DequantWorkspace& workspace,
                            at::ScalarType dtype, at::Device device) {
    at::Tensor w = workspace.Get(weight.shape()[0], weight.shape()[1], dtype, device);
    absl::Status s = weight.DequantizeInto(w);
    if (!s.ok()) throw std::runtime_error(std::string(s.message()));
    return w;
  }

  static at::Tensor Multiply(const at::Tensor& x, const quant::Nf4Tensor& weight,
                             DequantWorkspace& workspace) {
    at::Tensor w = Dequant(weight, workspace, x.scalar_type(), x.device());
    return at::matmul(x, w.t());
  }
};

}  // namespace

at::Tensor DequantWorkspace::Get(int64_t rows, int64_t cols, at::ScalarType dtype,
                                 at::Device device) {
  const int64_t bytes_needed = rows * cols * static_cast<int64_t>(c10::elementSize(dtype));
  if (!buffer_.defined() || buffer_.device() != device || buffer_.numel() < bytes_needed) {
    buffer_ = at::empty({bytes_needed}, at::TensorOptions().dtype(at::kByte).device(device));
  }
  return buffer_.narrow(0, 0, bytes_needed).view(dtype).view({rows, cols});
}

int64_t DequantWorkspace::bytes() const { return buffer_.defined() ? buffer_.numel() : 0; }

at::Tensor Nf4Matmul(const at::Tensor& x, const quant::Nf4Tensor& weight,
                     DequantWorkspace& workspace) {
  return Nf4MatmulFunction::apply(x, &weight, &workspace);
}

QLoraLinear::QLoraLinear(quant::Nf4Tensor weight, at::Tensor bias, const LoraSpec& spec,
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
}

QLoraLinear::QLoraLinear(quant::Nf4Tensor weight, at::Tensor bias, const LoraSpec& spec,
                         at::Tensor lora_a, at::Tensor lora_b)
    : weight_(std::move(weight)),
      bias_(std::move(bias)),
      spec_(spec),
      lora_a_(std::move(lora_a)),
      lora_b_(std::move(lora_b)) {}

at::Tensor QLoraLinear::Forward(const at::Tensor& x, DequantWorkspace& workspace, bool training,
                                uint64_t dropout_seed) const {
  at::Tensor y = Nf4Matmul(x, weight_, workspace);
  if (bias_.defined()) y = y + bias_;
  if (!has_adapter()) return y;
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
  at::Tensor a = lora_a_.to(x.scalar_type());
  at::Tensor b = lora_b_.to(x.scalar_type());
  return y + at::matmul(at::matmul(h, a.t()), b.t()) * spec_.scale;
}

}  // namespace rigtune::lora
