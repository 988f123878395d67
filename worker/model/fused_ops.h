// The decoder's elementwise and normalization steps as fused autograd
// functions over kernels/ (RMSNorm, in-place RoPE, SwiGLU): one kernel each
// way instead of a chain of ATen ops and their temporaries.
//
// Each function picks its kernel by the tensor's device: CUDA tensors run the
// .cu kernel on the current stream, CPU tensors the CPU reference twin (split
// over threads), so the CPU engine and its golden tests check the same
// arithmetic the GPU runs (tests/gpu checks the CUDA kernels against the
// twins). Inputs may be non-contiguous (they are made contiguous first);
// float32, float16 and bfloat16 are supported, anything else throws
// std::invalid_argument. The numerics follow transformers' Llama modules:
// see kernels/rms_norm.h, kernels/rope.h and kernels/swiglu.h.
#ifndef RIGTUNE_WORKER_MODEL_FUSED_OPS_H_
#define RIGTUNE_WORKER_MODEL_FUSED_OPS_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace rigtune::model {

// weight · x / rms(x) over the last dimension. `weight` [hidden] is frozen (no
// gradient); x gets one. Saves x and the float32 1/rms per row for backward.
at::Tensor FusedRmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);

// Rotates the first `heads` heads (heads · head_dim columns) of each row of
// x [B, T, width] (contiguous) in place by the rotary tables cos, sin
// [B, T, head_dim] and returns it: a q projection (width = heads · head_dim),
// or q and k at the front of a fused QKV product. Autograd sees an in-place op
// (x's version bumps); its backward rotates the gradient back. x must not be
// a view or a leaf that requires grad.
at::Tensor RotaryInPlace(at::Tensor x, int64_t heads, const at::Tensor& cos, const at::Tensor& sin);

// silu(gate) · up, elementwise; gate and up have one shape. Saves gate and up.
at::Tensor FusedSwiglu(const at::Tensor& gate, const at::Tensor& up);
// The same over a fused gate/up product [..., 2·I] (gate first): [..., I].
// Its backward writes both gradients into one [..., 2·I] tensor: with
// `overwrite_input`, into gate_up itself, which the caller gives up (a
// non-leaf temporary nothing reads after this backward; Note [SwiGLU's
// gradient over its input] in fused_ops.cc).
at::Tensor FusedSwiglu(const at::Tensor& gate_up, bool overwrite_input = false);

}  // namespace rigtune::model

#endif  // RIGTUNE_WORKER_MODEL_FUSED_OPS_H_
