#include "worker/lora/dora.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "worker/profile/step_profiler.h"

namespace rigtune::lora {

at::Tensor DoraRowNorms(const quant::FrozenWeight& weight, const at::Tensor& lora_a,
                        const at::Tensor& lora_b, double scale, DequantWorkspace& workspace) {
  c10::NoGradGuard no_grad;
  const at::Device device = weight.device();
  at::Tensor w = BaseWeightIn(weight, workspace, at::kFloat, device);
  const at::Tensor a = lora_a.detach().to(device, at::kFloat);
  const at::Tensor b = lora_b.detach().to(device, at::kFloat);
  profile::ScopedPhase phase(profile::Phase::kLora, w);
  // The workspace is scratch and takes W + s·B·A in place; a dense float32
  // base is the weight itself and must stay untouched.
  const bool is_scratch = !(weight.is_dense() && w.is_same(weight.dense()));
  at::Tensor sum = is_scratch ? w.addmm_(b, a, 1.0, scale) : at::addmm(w, b, a, 1.0, scale);
  return at::linalg_vector_norm(sum, 2, at::IntArrayRef{1}, /*keepdim=*/false);
}

at::Tensor DoraProduct(const at::Tensor& x, const at::Tensor& h, const at::Tensor& lora_a,
                       const at::Tensor& lora_b, const at::Tensor& magnitude,
                       const quant::FrozenWeight& weight, DequantWorkspace& workspace,
                       double scale) {
  // The norm first: the products below reuse the workspace.
  const at::Tensor norm = DoraRowNorms(weight, lora_a, lora_b, scale, workspace);
  const at::Tensor factor = (magnitude / norm).to(x.scalar_type());  // m/n, grad to m
  if (h.is_same(x)) {
    return QLoraProduct(x, x, lora_a, lora_b, weight, workspace, scale) * factor;
  }
  const at::Tensor z = QLoraProduct(h, h, lora_a, lora_b, weight, workspace, scale);
  return Nf4Matmul(x, weight, workspace) - Nf4Matmul(h, weight, workspace) + z * factor;
}

}  // namespace rigtune::lora
