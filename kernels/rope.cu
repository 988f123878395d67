// CUDA twin of kernels/rope_cpu.cc: one thread per rotated pair (i, i + h), or
// per pack of pairs where rows allow (Note [16-byte RoPE accesses]).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/float_format.cuh"
#include "kernels/pack16.cuh"
#include "kernels/rope.h"

namespace rigtune::kernels {
namespace {

constexpr int kThreads = 256;

// One rotated pair (a = x[i], b = x[i + h]) with its table entries; the
// one-pair and the packed kernels share it, so both give the CPU twin's
// numbers.
template <typename T>
__device__ void RotatePair(T& a_io, T& b_io, T c1_t, T c2_t, T s1_t, T s2_t, bool backward) {
  const float a = ToFloat(a_io), b = ToFloat(b_io);
  const float c1 = ToFloat(c1_t), c2 = ToFloat(c2_t);
  const float s1 = ToFloat(s1_t), s2 = ToFloat(s2_t);
  float ya, yb;
  if (backward) {
    ya = a * c1 + b * s2;
    yb = b * c2 - a * s1;
  } else {
    ya = RoundTo<T>(__fmul_rn(a, c1)) + RoundTo<T>(__fmul_rn(-b, s1));
    yb = RoundTo<T>(__fmul_rn(b, c2)) + RoundTo<T>(__fmul_rn(a, s2));
  }
  a_io = FromFloat<T>(ya);
  b_io = FromFloat<T>(yb);
}

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
    RotatePair(row[i], row[i + half], ct[i], ct[i + half], st[i], st[i + half], backward);
  }
}

// Note [16-byte RoPE accesses]: with head_dim / 2 a whole number of 16-byte
// packs and every row aligned, each thread rotates one pack of pairs (8 for
// bf16/fp16, 4 for float32), loading x's two halves and the tables 16 bytes
// at a time instead of one element per load.
template <typename T>
__global__ void RopeKernelVec(T* x, int64_t ld_x, const T* cos, const T* sin, int64_t tokens,
                              int64_t heads, int64_t head_dim, bool backward) {
  constexpr int V = kVec<T>;
  const int64_t half = head_dim / 2;
  const int64_t packs_per_head = half / V;
  const int64_t p = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  if (p >= heads * packs_per_head) return;
  const int64_t h = p / packs_per_head;
  const int64_t i = (p % packs_per_head) * V;
  for (int64_t t = blockIdx.y; t < tokens; t += gridDim.y) {
    T* row = x + t * ld_x + h * head_dim;
    const T* ct = cos + t * head_dim;
    const T* st = sin + t * head_dim;
    Pack<T> a = LoadPack(row + i), b = LoadPack(row + i + half);
    const Pack<T> c1 = LoadPack(ct + i), c2 = LoadPack(ct + i + half);
    const Pack<T> s1 = LoadPack(st + i), s2 = LoadPack(st + i + half);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      RotatePair(a.v[j], b.v[j], c1.v[j], c2.v[j], s1.v[j], s2.v[j], backward);
    }
    StorePack(row + i, a);
    StorePack(row + i + half, b);
  }
}

template <typename T>
cudaError_t Launch(void* x, int64_t ld_x, const void* cos, const void* sin, int64_t tokens,
                   int64_t heads, int64_t head_dim, bool backward, cudaStream_t stream) {
  const int64_t half = head_dim / 2;
  const unsigned grid_y = static_cast<unsigned>(std::min<int64_t>(tokens, 65535));
  auto* xt = static_cast<T*>(x);
  const auto* c = static_cast<const T*>(cos);
  const auto* s = static_cast<const T*>(sin);
  const bool packed = head_dim % 2 == 0 && half % kVec<T> == 0 && ld_x % kVec<T> == 0 &&
                      Aligned16(x) && Aligned16(cos) && Aligned16(sin);
  if (packed) {
    const int64_t packs = heads * (half / kVec<T>);
    const dim3 grid(static_cast<unsigned>((packs + kThreads - 1) / kThreads), grid_y);
    RopeKernelVec<T><<<grid, kThreads, 0, stream>>>(xt, ld_x, c, s, tokens, heads, head_dim,
                                                    backward);
  } else {
    const int64_t pairs = heads * half;
    const dim3 grid(static_cast<unsigned>((pairs + kThreads - 1) / kThreads), grid_y);
    RopeKernel<T><<<grid, kThreads, 0, stream>>>(xt, ld_x, c, s, tokens, heads, head_dim,
                                                 backward);
  }
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
