// NF4 4-bit quantization in bitsandbytes' exact layout: a CPU reference and
// CUDA kernels that produce the same bits.
//
// Every function works on raw, contiguous buffers of `n` elements in row-major
// order; the caller owns all memory. Sizes follow from `n`:
//   packed bytes    Nf4PackedBytes(n)        = ceil(n / 2)
//   absmax floats   Nf4NumBlocks(n)          = ceil(n / 64)
//   nested scales   Nf4NumNestedBlocks(nb)   = ceil(nb / 256)
//
// Example (CPU, with double quantization):
//   std::vector<uint8_t> packed(Nf4PackedBytes(n));
//   std::vector<float> absmax(Nf4NumBlocks(n));
//   Nf4QuantizeCpu(weights, FloatFormat::kBFloat16, n, packed.data(), absmax.data());
//   std::vector<uint8_t> q8(absmax.size());
//   std::vector<float> absmax2(Nf4NumNestedBlocks(absmax.size()));
//   float offset = Nf4DoubleQuantCpu(absmax.data(), absmax.size(), DynamicMap8().data(),
//                                    q8.data(), absmax2.data());
//   Nf4DequantizeNestedCpu(packed.data(), q8.data(), absmax2.data(), DynamicMap8().data(),
//                          offset, n, FloatFormat::kBFloat16, out);
//
// Note [bitsandbytes NF4 layout]
// ------------------------------
// The oracle is bitsandbytes 0.50.2 on CPU (tests/golden/test_nf4.py):
//  * Blocks of 64 consecutive elements of the flattened tensor. absmax[b] is
//    the float32 max |x| of block b; a final partial block uses its valid
//    elements only.
//  * Scaling: a full block multiplies by the float32 reciprocal 1/absmax; the
//    final partial block divides by absmax instead (bitsandbytes' CPU quantizer
//    treats the remainder separately). absmax is clamped to 1e-38f for the
//    scale, so an all-zero block scales to 0 and gets code 7 (the exact zero
//    of the table). A full block stores the unclamped absmax (0); the final
//    partial block stores the clamped one (1e-38f), as the oracle does.
//    (bitsandbytes' CUDA kernel writes code 0 there; both dequantize to 0.
//    We follow the CPU oracle.)
//  * Code choice: code = number of midpoints (c[i] + c[i+1]) / 2, computed in
//    float32, that are strictly below the scaled value: nearest code, a tie
//    goes to the lower index.
//  * Packing: byte j = code[2j] << 4 | code[2j+1]: the first element sits in the
//    HIGH nibble; an odd n pads the last low nibble with code 7.
//  * Double quantization: offset = float32 mean of absmax, summed in the order
//    of LibTorch's single-threaded CPU sum (see Note [absmax mean order] in
//    nf4_cpu.cc); then blocks of 256 of (absmax - offset), each with a float32
//    scale absmax2 = max |absmax - offset|, are coded to 8 bits against the
//    signed dynamic map (DynamicMap8) the way bitsandbytes' CPU kernel does:
//    u = trunc(fma((clamp(v / absmax2, -1, 1) + 1) * 0.5, 65535, 0.5)), then the
//    code whose midpoints bracket -1 + 2u / 65535. A 256-block of zeros gets 0.
//  * Dequantize: w = code[q] * absmax in float32, rounded to nearest-even into
//    the output format. Nested: absmax = map8[q8] * absmax2[b / 256] + offset
//    (a float32 multiply then a float32 add, never fused).
#ifndef RIGTUNE_KERNELS_NF4_H_
#define RIGTUNE_KERNELS_NF4_H_

#include <array>
#include <cstdint>

#include "kernels/float_format.h"

#ifdef RIGTUNE_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace rigtune::kernels {

inline constexpr int64_t kNf4BlockSize = 64;
inline constexpr int64_t kNf4NestedBlockSize = 256;

// The 16 NF4 values, index -> value (bitsandbytes' `quant_map`).
inline constexpr std::array<float, 16> kNf4Code = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};
inline constexpr uint8_t kNf4ZeroCode = 7;

inline constexpr int64_t Nf4NumBlocks(int64_t n) { return (n + kNf4BlockSize - 1) / kNf4BlockSize; }
inline constexpr int64_t Nf4PackedBytes(int64_t n) { return (n + 1) / 2; }
inline constexpr int64_t Nf4NumNestedBlocks(int64_t num_blocks) {
  return (num_blocks + kNf4NestedBlockSize - 1) / kNf4NestedBlockSize;
}

// bitsandbytes' signed 8-bit dynamic map (create_dynamic_map(signed=True)),
// sorted ascending, 256 float32 values from -0.99296875 to 1.0. Checkpoints
// carry their own copy (`nested_quant_map`); prefer that one when loading.
const std::array<float, 256>& DynamicMap8();

// ---- CPU reference -------------------------------------------------------

// Quantizes n elements of `in` (format `fmt`) into `packed`
// [Nf4PackedBytes(n)] and `absmax` [Nf4NumBlocks(n)].
void Nf4QuantizeCpu(const void* in, FloatFormat fmt, int64_t n, uint8_t* packed, float* absmax);

// The float32 mean of absmax that bitsandbytes uses as the nested offset.
float Nf4AbsmaxMeanCpu(const float* absmax, int64_t num_blocks);

// Double-quantizes absmax: writes q8 [num_blocks] and absmax2
// [Nf4NumNestedBlocks(num_blocks)] and returns the offset. `map8` is a sorted
// 256-entry map (normally DynamicMap8()).
float Nf4DoubleQuantCpu(const float* absmax, int64_t num_blocks, const float* map8, uint8_t* q8,
                        float* absmax2);

// Dequantizes n elements into `out` (format `fmt`) with float32 absmax.
void Nf4DequantizeCpu(const uint8_t* packed, const float* absmax, int64_t n, FloatFormat fmt,
                      void* out);

// Same, reconstructing each absmax from its 8-bit code on the fly.
void Nf4DequantizeNestedCpu(const uint8_t* packed, const uint8_t* q8, const float* absmax2,
                            const float* map8, float offset, int64_t n, FloatFormat fmt, void* out);

// ---- CUDA ----------------------------------------------------------------
// Same contracts as the CPU twins, bit for bit; every pointer is device
// memory, work is queued on `stream`, and the return value is the launch
// error (cudaSuccess when queued). `map8` is 256 floats in device memory.
#ifdef RIGTUNE_WITH_CUDA

cudaError_t Nf4QuantizeCuda(const void* in, FloatFormat fmt, int64_t n, uint8_t* packed,
                            float* absmax, cudaStream_t stream);

// Writes the offset to the device float `offset` (the CPU twin returns it).
cudaError_t Nf4DoubleQuantCuda(const float* absmax, int64_t num_blocks, const float* map8,
                               uint8_t* q8, float* absmax2, float* offset, cudaStream_t stream);

cudaError_t Nf4DequantizeCuda(const uint8_t* packed, const float* absmax, int64_t n,
                              FloatFormat fmt, void* out, cudaStream_t stream);

cudaError_t Nf4DequantizeNestedCuda(const uint8_t* packed, const uint8_t* q8, const float* absmax2,
                                    const float* map8, float offset, int64_t n, FloatFormat fmt,
                                    void* out, cudaStream_t stream);

#endif  // RIGTUNE_WITH_CUDA

}  // namespace rigtune::kernels

#endif  // RIGTUNE_KERNELS_NF4_H_
