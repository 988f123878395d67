// QLoraLinear: a frozen base linear layer (NF4, or dense: FrozenWeight) plus
// a trainable LoRA adapter.
//
//   y = x · dequant(W)ᵀ + bias + s · dropout(x) · Aᵀ · Bᵀ,   s = α/r (or α/√r, rsLoRA)
//
// With DoRA (spec.dora, PEFT's use_dora) a trainable magnitude m [out] rescales
// every output row by m / ‖W + s·B·A‖ (row norm, treated as a constant in
// backward); see worker/lora/dora.h.
//
// With train.method full the weight is dense and requires grad, there is no
// adapter, and the product is at::linear, so autograd yields the weight's
// (and bias's) gradient like any nn.Linear.
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
#include <memory>
#include <optional>
#include <vector>

#include "worker/quant/frozen_weight.h"

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
  bool dora = false;   // weight-decomposed: a trainable magnitude per output row
};

// The trainable tensors of an adapter. Every place that lays adapters out
// (optimizer, FSDP buffers, checkpoints, PEFT export) iterates AdapterParts,
// so a new part is added here once.
enum class AdapterPart { kA, kB, kMagnitude };
// The parts a linear with `spec` trains, in their fixed order: A, B, and for
// DoRA the magnitude. Empty when spec.r == 0.
std::vector<AdapterPart> AdapterParts(const LoraSpec& spec);
// PEFT's key suffix: "lora_A.weight", "lora_B.weight", "lora_magnitude_vector".
const char* PeftSuffix(AdapterPart part);
// [r, in], [out, r] or [out].
std::vector<int64_t> AdapterPartShape(AdapterPart part, const LoraSpec& spec, int64_t out,
                                      int64_t in);

class DoraNormCache;  // worker/lora/dora.h

class QLoraLinear {
 public:
  QLoraLinear() = default;
  // `bias` may be undefined. When spec.r > 0, A is drawn Kaiming-uniform from
  // `seed` and B set to zero, both float32 on the weight's device; with
  // spec.dora the magnitude starts at the row norms of W (PEFT's init).
  QLoraLinear(quant::FrozenWeight weight, at::Tensor bias, const LoraSpec& spec, uint64_t seed);
  // Wraps existing adapter tensors (FSDP hands in views of a gathered
  // buffer). `lora_a` [r, in], `lora_b` [out, r] and, with spec.dora,
  // `magnitude` [out] are float32 and should require grad; all undefined
  // when spec.r == 0.
  QLoraLinear(quant::FrozenWeight weight, at::Tensor bias, const LoraSpec& spec, at::Tensor lora_a,
              at::Tensor lora_b, at::Tensor magnitude = {});

  // x: [..., in] in the compute dtype. `dropout_seed` makes the dropout mask a
  // pure function of the seed, so a checkpointed recompute draws the same mask.
  at::Tensor Forward(const at::Tensor& x, DequantWorkspace& workspace, bool training,
                     uint64_t dropout_seed) const;

  // Whether GradientOnlyForward applies: a frozen weight, no bias, no
  // DoRA and (when `training`) no dropout.
  bool CanSkipValue(bool training) const;
  // Forward's autograd node for training without its value: backward gives
  // the same gradients (x, A, B) as Forward(x, ..., training = true, ...)'s,
  // but the output is a stand-in of the right shape (zeros) and neither the
  // base GEMM nor the B product runs. For outputs that nothing reads; see
  // Note [A product whose value is never read] in qlora_linear.cc. Throws
  // std::invalid_argument unless CanSkipValue(true).
  at::Tensor GradientOnlyForward(const at::Tensor& x, DequantWorkspace& workspace) const;

  int64_t in_features() const { return weight_.shape()[1]; }
  int64_t out_features() const { return weight_.shape()[0]; }
  bool has_adapter() const { return lora_a_.defined(); }
  // Whether the base weight itself trains (train.method full): a dense
  // weight that requires grad. Such a linear has no adapter.
  bool weight_trains() const { return weight_.is_dense() && weight_.dense().requires_grad(); }
  const quant::FrozenWeight& weight() const { return weight_; }
  quant::FrozenWeight& mutable_weight() { return weight_; }
  const at::Tensor& bias() const { return bias_; }
  at::Tensor& lora_a() { return lora_a_; }  // float32 [r, in], requires grad
  at::Tensor& lora_b() { return lora_b_; }  // float32 [out, r], requires grad
  const at::Tensor& lora_a() const { return lora_a_; }
  const at::Tensor& lora_b() const { return lora_b_; }
  at::Tensor& magnitude() { return magnitude_; }  // float32 [out] (DoRA), requires grad
  const at::Tensor& magnitude() const { return magnitude_; }
  bool is_dora() const { return spec_.dora && has_adapter(); }
  // One trainable tensor by part (see AdapterParts(spec())).
  at::Tensor& adapter(AdapterPart part);
  const at::Tensor& adapter(AdapterPart part) const;
  double scale() const { return spec_.scale; }
  const LoraSpec& spec() const { return spec_; }

 private:
  quant::FrozenWeight weight_;
  at::Tensor bias_;
  LoraSpec spec_;
  at::Tensor lora_a_;
  at::Tensor lora_b_;
  at::Tensor magnitude_;
  // DoRA's row norms, computed once per optimizer update (Note [DoRA norm
  // cache] in dora.h); shared by copies of this linear, which hold the same
  // adapter tensors.
  mutable std::shared_ptr<DoraNormCache> dora_norms_;
};

// x · dequant(W)ᵀ with the dequantize-twice backward (exposed for tests).
// Backward reads `weight` again, so it must outlive the graph: a temporary
// (say an Nf4Tensor converted on the fly) is refused at compile time.
at::Tensor Nf4Matmul(const at::Tensor& x, const quant::FrozenWeight& weight,
                     DequantWorkspace& workspace);
at::Tensor Nf4Matmul(const at::Tensor& x, quant::FrozenWeight&& weight,
                     DequantWorkspace& workspace) = delete;

// x · dequant(W)ᵀ + s · (h · Aᵀ) · Bᵀ as one autograd node (no bias): the
// product QLoraLinear::Forward runs, and the one DoRA rescales. Gradients for
// x, h, A and B (A's and B's in their own dtype).
at::Tensor QLoraProduct(const at::Tensor& x, const at::Tensor& h, const at::Tensor& lora_a,
                        const at::Tensor& lora_b, const quant::FrozenWeight& weight,
                        DequantWorkspace& workspace, double scale);

// The base weight [out, in] in `dtype` on `device`: a dense base already in
// `dtype` as it is (do not write to it), otherwise dequantized or cast into
// the workspace (valid until its next use).
at::Tensor BaseWeightIn(const quant::FrozenWeight& weight, DequantWorkspace& workspace,
                        at::ScalarType dtype, at::Device device);

}  // namespace rigtune::lora

#endif  // RIGTUNE_WORKER_LORA_QLORA_LINEAR_H_
