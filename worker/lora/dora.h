// DoRA (weight-decomposed low-rank adaptation) on any frozen base, with the
// semantics of PEFT's `use_dora=True`:
//
//   W' = m ⊙ (W + s·B·A) / ‖W + s·B·A‖_row      (m: [out], one per output row)
//   y  = x·W'ᵀ + bias = (m / n) ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ) + bias,   n = ‖W + s·B·A‖_row
//
// n is treated as a constant in backward (the DoRA paper's §4.3, PEFT detaches
// it), so gradients reach A and B only through the low-rank product and m
// through m/n. The magnitude starts at n with the initial adapter (B = 0:
// the row norms of W), so a fresh DoRA adapter leaves the model unchanged.
//
// With dropout during training PEFT applies the dropout to the adapter's
// input h and rescales the base product of h, not of x:
//   y = x·Wᵀ + (m/n − 1) ⊙ (h·Wᵀ) + (m/n) ⊙ s·(h·Aᵀ)·Bᵀ
// which costs one more base product; without dropout h is x and the form
// above needs one.
#ifndef RIGTUNE_WORKER_LORA_DORA_H_
#define RIGTUNE_WORKER_LORA_DORA_H_

#include <ATen/core/Tensor.h>

#include "worker/lora/qlora_linear.h"

namespace rigtune::lora {

// n = ‖W + s·B·A‖ per output row, float32 [out] on the weight's device,
// computed without gradient (the base weight dequantized to float32 in the
// workspace; A and B are float32 masters).
at::Tensor DoraRowNorms(const quant::FrozenWeight& weight, const at::Tensor& lora_a,
                        const at::Tensor& lora_b, double scale, DequantWorkspace& workspace);

// Note [DoRA norm cache]
// ----------------------
// n depends on W, A and B alone. W is frozen and A and B change only when
// the optimizer updates them, yet a step asked for n in the no-grad forward,
// again in the checkpointed recompute, and again for every micro-batch and
// every row chunk of a tiled MLP; each time it dequantized W to float32,
// added s·B·A over the whole [out, in] matrix and reduced it (≈ 16.5 bytes
// of memory traffic and 2·r FLOPs per weight). DoraNormCache computes n once
// per update: it remembers which A and B tensors (their TensorImpl and data)
// at which version counters n was computed for. Every in-place write to a
// tensor bumps its version (copy_ when an adapter or checkpoint is loaded,
// AdamW's ATen path), and AdamW::Step bumps it after its fused CUDA kernel,
// which writes through raw pointers. FSDP builds a new linear (and cache)
// for every gather, so there the cache only spans one gathered visit.
// The result is the same tensor DoraRowNorms would compute, bit for bit.
class DoraNormCache {
 public:
  // n for this linear's weight and adapter: the cached tensor when A and B
  // are the same tensors at the same versions as last time, else computed
  // (DoraRowNorms) and kept. The weight must be the one n was computed for.
  const at::Tensor& Get(const quant::FrozenWeight& weight, const at::Tensor& lora_a,
                        const at::Tensor& lora_b, double scale, DequantWorkspace& workspace);
  // How many times Get computed n (tests).
  int64_t computed() const { return computed_; }

 private:
  struct Key {
    const void* a_impl = nullptr;
    const void* b_impl = nullptr;
    const void* a_data = nullptr;
    const void* b_data = nullptr;
    int64_t a_version = -1;
    int64_t b_version = -1;
    double scale = 0.0;
    bool operator==(const Key& o) const;
  };
  Key key_;
  at::Tensor norm_;
  int64_t computed_ = 0;
};

// The DoRA output without bias for x [..., in] and the adapter's input h
// (x itself, or x with dropout), with the row norms `norm` (DoraRowNorms or
// a DoraNormCache). Gradients reach x, h, A, B and m.
at::Tensor DoraProduct(const at::Tensor& x, const at::Tensor& h, const at::Tensor& lora_a,
                       const at::Tensor& lora_b, const at::Tensor& magnitude,
                       const at::Tensor& norm, const quant::FrozenWeight& weight,
                       DequantWorkspace& workspace, double scale);
// Same, computing the norms first.
at::Tensor DoraProduct(const at::Tensor& x, const at::Tensor& h, const at::Tensor& lora_a,
                       const at::Tensor& lora_b, const at::Tensor& magnitude,
                       const quant::FrozenWeight& weight, DequantWorkspace& workspace,
                       double scale);

}  // namespace rigtune::lora

#endif  // RIGTUNE_WORKER_LORA_DORA_H_
