// CUDA twin of kernels/hqq4_cpu.cc: the same bits (Note [hqq4 layout and
// rounding] in hqq4.h). The subtract and the multiply are spelled __fsub_rn
// and __fmul_rn so that nvcc can neither contract nor reorder them.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/float_format.cuh"
#include "kernels/grid.cuh"
#include "kernels/hqq4.h"
#include "kernels/pack16.cuh"

namespace rigtune::kernels {
namespace {

// float(code) for a 4-bit code without an int-to-float conversion (a
// quarter-rate instruction): 2^23 + code is exact in float32, and so is the
// subtraction of 2^23.
__device__ __forceinline__ float CodeAsFloat(uint32_t code) {
  return __fsub_rn(__uint_as_float(0x4B000000u | code), 8388608.0f);
}

// (q − zero) · scale in float32, two roundings, never fused.
__device__ __forceinline__ float Dequant(uint32_t code, float zero, float scale) {
  return __fmul_rn(__fsub_rn(CodeAsFloat(code), zero), scale);
}

// Note [hqq4 vector path]
// ~~~~~~~~~~~~~~~~~~~~~~~
// Byte p of the packed codes holds element p (high nibble) and element
// p + n/2 (low nibble), so one thread that reads kVec<T> consecutive bytes
// (8 for bf16/fp16, 4 for fp32) writes one 16-byte Pack<T> into each half of
// the output. A warp's code loads are one contiguous run (256 or 128 bytes)
// and each of its two store instructions is one contiguous 512-byte run: no
// sector is written twice. Scale and zero are read per thread (kVec<T>
// divides 64, so a thread's bytes sit in one group; 8 or 16 neighbouring
// threads share a group and the reads broadcast from L1). Each thread keeps
// kUnroll steps in flight to cover the latency. The path needs `packed` and
// `out` 16-byte aligned; n/2 is then a multiple of 64 elements, so the
// second half starts aligned too and every step is whole. Anything else
// takes the one-byte-per-thread kernel. The second half's start is its own
// kernel argument: computed in the kernel as out + n/2, nvcc no longer knows
// it is aligned and splits that store into 2- or 4-byte pieces.
constexpr int kUnroll = 4;

template <typename T>
using CodeWord = std::conditional_t<kVec<T> == 8, uint2, uint32_t>;

template <typename T>
__device__ __forceinline__ uint32_t ByteOf(const CodeWord<T>& w, int k) {
  if constexpr (kVec<T> == 8) {
    return ((k < 4 ? w.x : w.y) >> (8 * (k & 3))) & 0xFFu;
  } else {
    return (w >> (8 * k)) & 0xFFu;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    DequantizeVecKernel(const CodeWord<T>* packed, const float* scale, const float* zero,
                        int64_t half, int64_t steps, T* out_hi, T* out_lo) {
  constexpr int kV = kVec<T>;
  constexpr int64_t kStepsPerGroup = kHqq4GroupSize / kV;
  const int64_t half_groups = half / kHqq4GroupSize;
  const int64_t stride = int64_t{gridDim.x} * kThreads;
  for (int64_t s0 = int64_t{blockIdx.x} * kThreads + threadIdx.x; s0 < steps;
       s0 += kUnroll * stride) {
    CodeWord<T> word[kUnroll];
    float s_hi[kUnroll], z_hi[kUnroll], s_lo[kUnroll], z_lo[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const int64_t s = s0 + r * stride;
      if (s < steps) {
        const int64_t g = s / kStepsPerGroup;
        word[r] = __ldg(packed + s);
        s_hi[r] = __ldg(scale + g);
        z_hi[r] = __ldg(zero + g);
        s_lo[r] = __ldg(scale + half_groups + g);
        z_lo[r] = __ldg(zero + half_groups + g);
      }
    }
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const int64_t s = s0 + r * stride;
      if (s >= steps) continue;
      Pack<T> hi;
#pragma unroll
      for (int k = 0; k < kV; ++k) {
        hi.v[k] = FromFloat<T>(Dequant(ByteOf<T>(word[r], k) >> 4, z_hi[r], s_hi[r]));
      }
      StorePack(out_hi + s * kV, hi);
      Pack<T> lo;
#pragma unroll
      for (int k = 0; k < kV; ++k) {
        lo.v[k] = FromFloat<T>(Dequant(ByteOf<T>(word[r], k) & 0x0Fu, z_lo[r], s_lo[r]));
      }
      StorePack(out_lo + s * kV, lo);
    }
  }
}

// Any alignment: one packed byte, two elements per thread.
__global__ void DequantizeBytesKernel(const uint8_t* packed, const float* scale, const float* zero,
                                      int64_t half, FloatFormat fmt, void* out) {
  const int64_t half_groups = half / kHqq4GroupSize;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t p = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; p < half; p += stride) {
    const uint32_t b = packed[p];
    const int64_t g = p / kHqq4GroupSize;
    StoreElement(out, fmt, p, Dequant(b >> 4, zero[g], scale[g]));
    StoreElement(out, fmt, half + p,
                 Dequant(b & 0x0Fu, zero[half_groups + g], scale[half_groups + g]));
  }
}

template <typename T>
void LaunchVec(const uint8_t* packed, const float* scale, const float* zero, int64_t half,
               void* out, cudaStream_t stream) {
  const int64_t steps = half / kVec<T>;
  DequantizeVecKernel<T><<<GridFor(CeilDiv(steps, kUnroll)), kThreads, 0, stream>>>(
      reinterpret_cast<const CodeWord<T>*>(packed), scale, zero, half, steps, static_cast<T*>(out),
      static_cast<T*>(out) + half);
}

}  // namespace

cudaError_t Hqq4DequantizeCuda(const uint8_t* packed, const float* scale, const float* zero,
                               int64_t n, FloatFormat fmt, void* out, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (n % kHqq4PairElements != 0) return cudaErrorInvalidValue;
  const int64_t half = Hqq4PackedBytes(n);
  if (Aligned16(packed) && Aligned16(out)) {
    switch (fmt) {
      case FloatFormat::kFloat32:
        LaunchVec<float>(packed, scale, zero, half, out, stream);
        break;
      case FloatFormat::kFloat16:
        LaunchVec<__half>(packed, scale, zero, half, out, stream);
        break;
      case FloatFormat::kBFloat16:
        LaunchVec<__nv_bfloat16>(packed, scale, zero, half, out, stream);
        break;
    }
  } else {
    DequantizeBytesKernel<<<GridFor(half), kThreads, 0, stream>>>(packed, scale, zero, half, fmt,
                                                                  out);
  }
  return cudaGetLastError();
}

}  // namespace rigtune::kernels
