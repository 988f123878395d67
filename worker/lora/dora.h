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

// The DoRA output without bias for x [..., in] and the adapter's input h
// (x itself, or x with dropout). Gradients reach x, h, A, B and m.
at::Tensor DoraProduct(const at::Tensor& x, const at::Tensor& h, const at::Tensor& lora_a,
                       const at::Tensor& lora_b, const at::Tensor& magnitude,
                       const quant::FrozenWeight& weight, DequantWorkspace& workspace,
                       double scale);

}  // namespace rigtune::lora

#endif  // RIGTUNE_WORKER_LORA_DORA_H_
