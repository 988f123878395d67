// Device-side loads and stores of kernels/float_format.h's formats, for .cu
// files only. Loads widen to float32; stores round to nearest even.
#ifndef RIGTUNE_KERNELS_FLOAT_FORMAT_CUH_
#define RIGTUNE_KERNELS_FLOAT_FORMAT_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/float_format.h"

namespace rigtune::kernels {

__device__ inline float LoadElement(const void* in, FloatFormat fmt, int64_t i) {
  if (fmt == FloatFormat::kFloat32) return static_cast<const float*>(in)[i];
  const uint16_t bits = static_cast<const uint16_t*>(in)[i];
  if (fmt == FloatFormat::kBFloat16) return __uint_as_float(static_cast<uint32_t>(bits) << 16);
  return __half2float(__ushort_as_half(bits));
}

__device__ inline void StoreElement(void* out, FloatFormat fmt, int64_t i, float v) {
  if (fmt == FloatFormat::kFloat32) {
    static_cast<float*>(out)[i] = v;
  } else if (fmt == FloatFormat::kBFloat16) {
    static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(v);
  } else {
    static_cast<__half*>(out)[i] = __float2half_rn(v);
  }
}

// Typed twins for kernels templated on the element type (float, __half,
// __nv_bfloat16): the format is known at compile time, so no branch per load.
__device__ inline float ToFloat(float v) { return v; }
__device__ inline float ToFloat(__half v) { return __half2float(v); }
__device__ inline float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ inline T FromFloat(float v);
template <>
__device__ inline float FromFloat<float>(float v) { return v; }
template <>
__device__ inline __half FromFloat<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ inline __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// `v` rounded to T and back: what a tensor of T would hold.
template <typename T>
__device__ inline float RoundTo(float v) { return ToFloat(FromFloat<T>(v)); }

}  // namespace rigtune::kernels

#endif  // RIGTUNE_KERNELS_FLOAT_FORMAT_CUH_
