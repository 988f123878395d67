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

bool DoraNormCache::Key::operator==(const Key& o) const {
  return a_impl == o.a_impl && b_impl == o.b_impl && a_data == o.a_data && b_data == o.b_data &&
         a_version == o.a_version && b_version == o.b_version && scale == o.scale;
}

const at::Tensor& DoraNormCache::Get(const quant::FrozenWeight& weight, const at::Tensor& lora_a,
                                     const at::Tensor& lora_b, double scale,
                                     DequantWorkspace& workspace) {
  Key key;
  key.a_impl = lora_a.unsafeGetTensorImpl();
  key.b_impl = lora_b.unsafeGetTensorImpl();
  key.a_data = lora_a.data_ptr();
  key.b_data = lora_b.data_ptr();
  key.a_version = lora_a._version();
  key.b_version = lora_b._version();
  key.scale = scale;
  if (!norm_.defined() || !(key == key_)) {
    norm_ = DoraRowNorms(weight, lora_a, lora_b, scale, workspace);
    key_ = key;
    ++computed_;
  }
  return norm_;
}

at::Tensor DoraProduct(const at::Tensor& x, const at::Tensor& h, const at::Tensor& lora_a,
                       const at::Tensor& lora_b, const at::Tensor& magnitude,
                       const at::Tensor& norm, const quant::FrozenWeight& weight,
                       DequantWorkspace& workspace, double scale) {
  const at::Tensor factor = (magnitude / norm).to(x.scalar_type());  // m/n, grad to m
  if (h.is_same(x)) {
    return QLoraProduct(x, x, lora_a, lora_b, weight, workspace, scale) * factor;
  }
  const at::Tensor z = QLoraProduct(h, h, lora_a, lora_b, weight, workspace, scale);
  return Nf4Matmul(x, weight, workspace) - Nf4Matmul(h, weight, workspace) + z * factor;
}

at::Tensor DoraProduct(const at::Tensor& x, const at::Tensor& h, const at::Tensor& lora_a,
                       const at::Tensor& lora_b, const at::Tensor& magnitude,
                       const quant::FrozenWeight& weight, DequantWorkspace& workspace,
                       double scale) {
  const at::Tensor norm = DoraRowNorms(weight, lora_a, lora_b, scale, workspace);
  return DoraProduct(x, h, lora_a, lora_b, magnitude, norm, weight, workspace, scale);
}

}  // namespace rigtune::lora
