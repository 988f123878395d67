// QLoraLinear: a frozen NF4 linear layer plus a trainable LoRA adapter.
//
//   y = x · dequant(W)ᵀ + bias + s · dropout(x) · Aᵀ · Bᵀ,   s = α/r (or α/√r, rsLoRA)
//
// The base product runs through Nf4Matmul, a custom autograd function that
// dequantizes W into a shared workspace, multiplies, and keeps nothing but a
// pointer to the packed weight: backward dequantizes W again to form
// grad_x = grad_y · W. The base weight has no gradient. See
// Note [Dequantize twice, save nothing].
//
// A and B are float32 leaves (the master copy the optimizer updates); the
// forward casts them to the compute dtype inside the graph, so their
// gradients arrive in float32. A starts Kaiming-uniform (a = √5, as PEFT and
// nn.Linear), B starts at zero, so a fresh adapter leaves the model unchanged.
#ifndef RIGTUNE_WORKER_LORA_QLORA_LINEAR_H_
#define RIGTUNE_WORKER_LORA_QLORA_LINEAR_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

#include "worker/quant/nf4_tensor.h"

namespace rigtune::lora {

// One dequantization buffer per device, reused by every linear of the model:
// layers run one after another on one stream, so a single buffer sized for
// the largest weight suffices. Not thread-safe; one per training process.
class DequantWorkspace {
 public:
  // A [rows, cols] view of the buffer in `dtype` on `device`, grown on demand.
  at::Tensor Get(int64_t rows, int64_t cols, at::ScalarType dtype, at::Device device);
  int64_t bytes() const;

 private:
  at::Tensor buffer_;
};

struct LoraSpec {
  int64_t r = 0;       // 0 = no adapter on this linear
  double scale = 0.0;  // alpha/r or alpha/sqrt(r)
  double dropout = 0.0;
};

class QLoraLinear {
 public:
  QLoraLinear() = default;
  // `bias` may be undefined. When spec.r > 0, A is drawn Kaiming-uniform from
  // `seed` and B set to zero, both float32 on the weight's device.
  QLoraLinear(quant::Nf4Tensor weight, at::Tensor bias, const LoraSpec& spec, uint64_t seed);
  // Wraps existing adapter tensors (FSDP hands in views of a gathered
  // buffer). `lora_a` [r, in] and `lora_b` [out, r] are float32 and should
  // require grad; both undefined when spec.r == 0.
  QLoraLinear(quant::Nf4Tensor weight, at::Tensor bias, const LoraSpec& spec, at::Tensor lora_a,
              at::Tensor lora_b);

  // x: [..., in] in the compute dtype. `dropout_seed` makes the dropout mask a
  // pure function of the seed, so a checkpointed recompute draws the same mask.
  at::Tensor Forward(const at::Tensor& x, DequantWorkspace& workspace, bool training,
                     uint64_t dropout_seed) const;

  int64_t in_features() const { return weight_.shape()[1]; }
  int64_t out_features() const { return weight_.shape()[0]; }
  bool has_adapter() const { return lora_a_.defined(); }
  const quant::Nf4Tensor& weight() const { return weight_; }
  quant::Nf4Tensor& mutable_weight() { return weight_; }
  const at::Tensor& bias() const { return bias_; }
  at::Tensor& lora_a() { return lora_a_; }  // float32 [r, in], requires grad
  at::Tensor& lora_b() { return lora_b_; }  // float32 [out, r], requires grad
  const at::Tensor& lora_a() const { return lora_a_; }
  const at::Tensor& lora_b() const { return lora_b_; }
  double scale() const { return spec_.scale; }
  const LoraSpec& spec() const { return spec_; }

 private:
  quant::Nf4Tensor weight_;
  at::Tensor bias_;
  LoraSpec spec_;
  at::Tensor lora_a_;
  at::Tensor lora_b_;
};

// x · dequant(W)ᵀ with the dequantize-twice backward (exposed for tests).
at::Tensor Nf4Matmul(const at::Tensor& x, const quant::Nf4Tensor& weight,
                     DequantWorkspace& workspace);

}  // namespace rigtune::lora

#endif  // RIGTUNE_WORKER_LORA_QLORA_LINEAR_H_
