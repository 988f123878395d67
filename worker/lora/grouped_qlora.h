// Linears that read one input (Q/K/V; gate/up) run as one product.
//
//   y = x · [W₀; W₁; …]ᵀ  with each adapter's s_i·(x·A_iᵀ)·B_iᵀ accumulated into
//   its own column block:  y = [y₀ | y₁ | …],  [..., Σ out_i]
//
// The NF4 weights are dequantized into adjacent rows of the one workspace and
// multiplied in one GEMM (backward: grad_x = g · [W₀; W₁; …], one GEMM again);
// the adapters' A's are stacked so x·Aᵀ is one thin product too. Checkpoint
// and adapter formats are untouched: each QLoraLinear keeps its own weight
// and A/B. See Note [LoRA folded into the base product] in qlora_linear.cc.
#ifndef RIGTUNE_WORKER_LORA_GROUPED_QLORA_H_
#define RIGTUNE_WORKER_LORA_GROUPED_QLORA_H_

#include <ATen/core/Tensor.h>

#include <vector>

#include "worker/lora/qlora_linear.h"

namespace rigtune::lora {

// Whether GroupedForward computes what each linear's Forward would: same
// in_features, no biases, all with adapters or none, and no dropout to draw
// (training with dropout > 0 keeps per-linear masks, so it does not group),
// and no DoRA (each output block is rescaled by its own weight's row norms).
bool CanGroup(const std::vector<const QLoraLinear*>& linears, bool training);
// CanGroup's conditions for a list that may hold a single linear (Phi-3's
// fused gate_up_proj): whether the linears' product can go through
// GroupedForward and KeptGroupedForward.
bool CanRunAsOneProduct(const std::vector<const QLoraLinear*>& linears, bool training);

// The concatenated outputs [..., Σ out_i] for x [..., in]. Requires CanGroup.
at::Tensor GroupedForward(const std::vector<const QLoraLinear*>& linears, const at::Tensor& x,
                          DequantWorkspace& workspace);

// GroupedForward's node without its forward work: returns `kept` (the value
// GroupedForward gave for this x and these weights and adapters, computed
// earlier without grad) and runs neither the base product nor the adapters'
// B product, but backpropagates exactly as GroupedForward's node does
// (grad_x through the dequantized weights and the adapters, dA, dB). Only
// the thin x·Aᵀ that dB needs is computed. Requires CanRunAsOneProduct;
// throws std::invalid_argument when `kept` is not [..., Σ out_i] in x's
// dtype and device. See Note [Keeping the gate/up product] in llama.cc.
at::Tensor KeptGroupedForward(const std::vector<const QLoraLinear*>& linears, const at::Tensor& x,
                              const at::Tensor& kept, DequantWorkspace& workspace);

}  // namespace rigtune::lora

#endif  // RIGTUNE_WORKER_LORA_GROUPED_QLORA_H_
