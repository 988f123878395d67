// HQQ 4-bit dequantize (`train.base hqq4`): a CPU reference and a CUDA
// kernel that produce the same bits. Quantization itself (hqq's solver)
// stays in worker/quant/hqq4_tensor.cc; this is the per-step hot path.
//
// Every function works on raw, contiguous buffers of `n` elements of the
// row-major flattened weight; the caller owns all memory. `n` must be a
// positive multiple of kHqq4PairElements (an even number of groups of 64,
// as hqq's packing needs); Hqq4Tensor checks that when it is built. Sizes:
//   packed bytes      Hqq4PackedBytes(n) = n / 2
//   scale, zero       Hqq4NumGroups(n)   = n / 64 floats each
//
// Example (CPU):
//   Hqq4DequantizeCpu(packed, scale, zero, n, FloatFormat::kBFloat16, out);
//
// Note [hqq4 layout and rounding]
// -------------------------------
// The oracle is hqq 0.2.8 (Quantizer.dequantize, tests/golden/
// test_base_types.py), with our float32 scale and zero:
//  * Groups of 64 consecutive elements; group g has scale[g] and zero[g].
//  * Packing: the [groups, 64] code matrix is split into its first and second
//    halves of rows and byte p holds both: element p (first half) in the HIGH
//    nibble, element p + n/2 (second half) in the low nibble. So byte p serves
//    groups p / 64 and p / 64 + groups / 2.
//  * w = (float(q) − zero) · scale: a float32 subtract, then a float32
//    multiply (never fused), rounded once to nearest-even into the output
//    format. That is hqq's dequantize with a float32 compute dtype bit for
//    bit; for bf16/fp16 output it is that result rounded, as the engine's
//    ATen path (Hqq4Tensor::DequantizeInto on the CPU) computes it. (hqq with
//    a bf16 compute dtype would round scale, zero and each step to bf16; we
//    keep them float32 on purpose: the scale of a solver run in fp16 on a GPU
//    is exact in float32, and one rounding is closer to the weight.)
#ifndef RIGTUNE_KERNELS_HQQ4_H_
#define RIGTUNE_KERNELS_HQQ4_H_

#include <cstdint>

#include "kernels/float_format.h"

#ifdef RIGTUNE_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace rigtune::kernels {

inline constexpr int64_t kHqq4GroupSize = 64;
// Two groups share one row of packed bytes: `n` is a multiple of this.
inline constexpr int64_t kHqq4PairElements = 2 * kHqq4GroupSize;

inline constexpr int64_t Hqq4NumGroups(int64_t n) { return n / kHqq4GroupSize; }
inline constexpr int64_t Hqq4PackedBytes(int64_t n) { return n / 2; }

// ---- CPU reference -------------------------------------------------------

// Dequantizes n elements into `out` (format `fmt`). See the note above.
void Hqq4DequantizeCpu(const uint8_t* packed, const float* scale, const float* zero, int64_t n,
                       FloatFormat fmt, void* out);

// ---- CUDA ----------------------------------------------------------------
// The same contract bit for bit; every pointer is device memory, work is
// queued on `stream`, and the return value is the launch error (cudaSuccess
// when queued; cudaErrorInvalidValue when n is not a multiple of 128). Any
// alignment works; 16-byte aligned `packed` and `out` take the vector path
// (Note [hqq4 vector path] in hqq4.cu).
#ifdef RIGTUNE_WITH_CUDA

cudaError_t Hqq4DequantizeCuda(const uint8_t* packed, const float* scale, const float* zero,
                               int64_t n, FloatFormat fmt, void* out, cudaStream_t stream);

#endif  // RIGTUNE_WITH_CUDA

}  // namespace rigtune::kernels

#endif  // RIGTUNE_KERNELS_HQQ4_H_
