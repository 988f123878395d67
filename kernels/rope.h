// Rotary position embedding applied in place, forward and backward, with the
// numerics of transformers' apply_rotary_pos_emb (rotate_half convention):
//
//   y[i]     = round(round(x[i]·cos[i])     + round(−x[i+h]·sin[i]))
//   y[i+h]   = round(round(x[i+h]·cos[i+h]) + round(x[i]·sin[i+h]))      h = head_dim / 2
//
// each product and the sum rounded to the format (float32: no rounding).
// Backward applies the transposed rotation to the gradient in float32:
//
//   dx[i]   = dy[i]·cos[i] + dy[i+h]·sin[i+h]
//   dx[i+h] = dy[i+h]·cos[i+h] − dy[i]·sin[i]
//
// x is `tokens` rows of `heads` × head_dim elements; heads are contiguous
// within a row and rows are `ld_x` elements apart, so q and k can be rotated
// where a fused QKV product left them. cos and sin are [tokens, head_dim]
// contiguous, in x's format (the tables MakeAttentionInputs builds). The
// rotation is in place: nothing is allocated and no rotate_half copy exists.
//
// Example (CPU, q of 32 heads × 128 in a [tokens, 6144] QKV buffer):
//   RopeCpu(qkv, 6144, cos, sin, 0, tokens, 32, 128, FloatFormat::kBFloat16, /*backward=*/false);
#ifndef RIGTUNE_KERNELS_ROPE_H_
#define RIGTUNE_KERNELS_ROPE_H_

#include <cstdint>

#include "kernels/float_format.h"

#ifdef RIGTUNE_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace rigtune::kernels {

// Rows [token_begin, token_end) only, so a caller can split the work over threads.
// `head_dim` must be even.
void RopeCpu(void* x, int64_t ld_x, const void* cos, const void* sin, int64_t token_begin,
             int64_t token_end, int64_t heads, int64_t head_dim, FloatFormat fmt, bool backward);

#ifdef RIGTUNE_WITH_CUDA
// Same contract over all `tokens`, device pointers, queued on `stream`;
// returns the launch error.
cudaError_t RopeCuda(void* x, int64_t ld_x, const void* cos, const void* sin, int64_t tokens,
                     int64_t heads, int64_t head_dim, FloatFormat fmt, bool backward,
                     cudaStream_t stream);
#endif  // RIGTUNE_WITH_CUDA

}  // namespace rigtune::kernels

#endif  // RIGTUNE_KERNELS_ROPE_H_
