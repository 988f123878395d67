// The SwiGLU activation of the Llama MLP, forward and backward fused, with
// the numerics of transformers' act_fn(gate) * up:
//
//   s   = round(silu(g)),  silu(g) = g · σ(g), σ(g) = 1 / (1 + e^−g)
//   out = round(s · u)
//
// Backward from dout, recomputing σ from g instead of saving anything:
//
//   du = round(dout · s)
//   dg = round(round(dout · u) · σ(g) · (1 + g · (1 − σ(g))))
//
// gate, up, dgate and dup are [rows, cols] with their own row strides (the
// last dimension contiguous), so gate and up can be two halves of one fused
// gate/up product; out and dout are [rows, cols] with stride ld_out. All
// share one format; arithmetic is float32.
//
// Example (CPU, gate and up side by side in a [rows, 2·I] buffer):
//   SwigluForwardCpu(gu, 2 * I, gu + I * elem, 2 * I, 0, rows, I, fmt, out, I);
#ifndef RIGTUNE_KERNELS_SWIGLU_H_
#define RIGTUNE_KERNELS_SWIGLU_H_

#include <cstdint>

#include "kernels/float_format.h"

#ifdef RIGTUNE_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace rigtune::kernels {

// Rows [row_begin, row_end) only, so a caller can split the work over threads.
void SwigluForwardCpu(const void* gate, int64_t ld_gate, const void* up, int64_t ld_up,
                      int64_t row_begin, int64_t row_end, int64_t cols, FloatFormat fmt,
                      void* out, int64_t ld_out);
// dgate may alias gate and dup may alias up (same strides): each element is
// read before it is written.
void SwigluBackwardCpu(const void* dout, int64_t ld_out, const void* gate, int64_t ld_gate,
                       const void* up, int64_t ld_up, int64_t row_begin, int64_t row_end,
                       int64_t cols, FloatFormat fmt, void* dgate, int64_t ld_dgate, void* dup,
                       int64_t ld_dup);

#ifdef RIGTUNE_WITH_CUDA
// Same contracts over all `rows`, device pointers, queued on `stream`;
// returns the launch error.
cudaError_t SwigluForwardCuda(const void* gate, int64_t ld_gate, const void* up, int64_t ld_up,
                              int64_t rows, int64_t cols, FloatFormat fmt, void* out,
                              int64_t ld_out, cudaStream_t stream);
cudaError_t SwigluBackwardCuda(const void* dout, int64_t ld_out, const void* gate,
                               int64_t ld_gate, const void* up, int64_t ld_up, int64_t rows,
                               int64_t cols, FloatFormat fmt, void* dgate, int64_t ld_dgate,
                               void* dup, int64_t ld_dup, cudaStream_t stream);
#endif  // RIGTUNE_WITH_CUDA

}  // namespace rigtune::kernels

#endif  // RIGTUNE_KERNELS_SWIGLU_H_
