// CUDA twin of kernels/rope_cpu.cc: one thread per rotated pair (i, i + h).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/float_format.cuh"
#include "kernels/rope.h"

namespace rigtune::kernels {
namespace {

constexpr int kThreads = 256;

// Grid: x over (head, pair) of one token, y over tokens (looping beyond 65535).
template <typename T>
__global__ void RopeKernel(T* x, int64_t ld_x, const T* cos, const T* sin, int64_t tokens,
                           int64_t heads, int64_t head_dim, bool backward) {
  const int64_t half = head_dim / 2;
  const int64_t pairs = heads * half;
  const int64_t p = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  if (p >= pairs) return;
  const int64_t h = p / half;
  const int64_t i = p % half;
  for (int64_t t = blockIdx.y; t < tokens; t += gridDim.y) {
    T* row = x + t * ld_x + h * head_dim;
    const T* ct = cos + t * head_dim;
    const T* st = sin + t * head_dim;
    const float a = ToFloat(row[i]);
    const float b = ToFloat(row[i + half]);
    const float c1 = ToFloat(ct[i]), c2 = ToFloat(ct[i + half]);
    const float s1 = ToFloat(st[i]), s2 = ToFloat(st[i + half]);
    float ya, yb;
    if (backward) {
      ya = a * c1 + b * s2;
      yb = b * c2 - a * s1;
    } else {
      ya = RoundTo<T>(__fmul_rn(a, c1)) + RoundTo<T>(__fmul_rn(-b, s1));
      yb = RoundTo<T>(__fmul_rn(b, c2)) + RoundTo<T>(__fmul_rn(a, s2));
    }
    row[i] = FromFloat<T>(ya);
    row[i + half] = FromFloat<T>(yb);
  }
}

template <typename T>
cudaError_t Launch(void* x, int64_t ld_x, const void* cos, const void* sin, int64_t tokens,
                   int64_t heads, int64_t head_dim, bool backward, cudaStream_t stream) {
  const int64_t pairs = heads * (head_dim / 2);
  const dim3 grid(static_cast<unsigned>((pairs + kThreads - 1) / kThreads),
                  static_cast<unsigned>(std::min<int64_t>(tokens, 65535)));
  RopeKernel<T><<<grid, kThreads, 0, stream>>>(static_cast<T*>(x), ld_x,
                                               static_cast<const T*>(cos),
                                               static_cast<const T*>(sin), tokens, heads,
                                               head_dim, backward);
  return cudaGetLastError();
}

}  // namespace

cudaError_t RopeCuda(void* x, int64_t ld_x, const void* cos, const void* sin, int64_t tokens,
                     int64_t heads, int64_t head_dim, FloatFormat fmt, bool backward,
                     cudaStream_t stream) {
  if (tokens == 0 || heads == 0 || head_dim < 2) return cudaSuccess;
  switch (fmt) {
    case FloatFormat::kFloat32:
      return Launch<float>(x, ld_x, cos, sin, tokens, heads, head_dim, backward, stream);
    case FloatFormat::kFloat16:
      return Launch<__half>(x, ld_x, cos, sin, tokens, heads, head_dim, backward, stream);
    case FloatFormat::kBFloat16:
      return Launch<__nv_bfloat16>(x, ld_x, cos, sin, tokens, heads, head_dim, backward, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace rigtune::kernels
