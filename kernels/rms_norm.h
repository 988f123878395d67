// RMSNorm over the last dimension, forward and backward, with the numerics of
// transformers' LlamaRMSNorm:
//
//   rstd = 1 / sqrt(mean(x²) + eps)          float32, summed in float32
//   y    = round(w · round(x · rstd))        each product rounded to the format
//
// x, y and dx are [rows, cols] with a row stride (elements between rows; the
// last dimension is contiguous); w is [cols]; all share one format. The
// weight is frozen in this engine, so backward returns dx only:
//
//   dn = round(dy · w)                        (as autograd sees weight · n)
//   dx = rstd · (dn − x · rstd² · mean(dn · x))   in float32, then rounded
//
// Forward saves rstd (float32 [rows]) so backward does not recompute it.
//
// Example (CPU):
//   RmsNormForwardCpu(x, 4096, w, rows, 4096, 1e-5f, FloatFormat::kBFloat16, y, 4096, rstd);
//   RmsNormBackwardCpu(dy, 4096, x, 4096, w, rstd, rows, 4096, FloatFormat::kBFloat16, dx, 4096);
#ifndef RIGTUNE_KERNELS_RMS_NORM_H_
#define RIGTUNE_KERNELS_RMS_NORM_H_

#include <cstdint>

#include "kernels/float_format.h"

#ifdef RIGTUNE_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace rigtune::kernels {

// Rows [row_begin, row_end) only, so a caller can split the work over threads.
void RmsNormForwardCpu(const void* x, int64_t ld_x, const void* w, int64_t row_begin,
                       int64_t row_end, int64_t cols, float eps, FloatFormat fmt, void* y,
                       int64_t ld_y, float* rstd);
void RmsNormBackwardCpu(const void* dy, int64_t ld_dy, const void* x, int64_t ld_x,
                        const void* w, const float* rstd, int64_t row_begin, int64_t row_end,
                        int64_t cols, FloatFormat fmt, void* dx, int64_t ld_dx);

#ifdef RIGTUNE_WITH_CUDA
// Same contracts over all `rows`, device pointers, queued on `stream`;
// returns the launch error. `y` may alias `x` (dx may alias dy) when the
// strides match.
cudaError_t RmsNormForwardCuda(const void* x, int64_t ld_x, const void* w, int64_t rows,
                               int64_t cols, float eps, FloatFormat fmt, void* y, int64_t ld_y,
                               float* rstd, cudaStream_t stream);
cudaError_t RmsNormBackwardCuda(const void* dy, int64_t ld_dy, const void* x, int64_t ld_x,
                                const void* w, const float* rstd, int64_t rows, int64_t cols,
                                FloatFormat fmt, void* dx, int64_t ld_dx, cudaStream_t stream);
#endif  // RIGTUNE_WITH_CUDA

}  // namespace rigtune::kernels

#endif  // RIGTUNE_KERNELS_RMS_NORM_H_
