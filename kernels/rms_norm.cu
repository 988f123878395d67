// CUDA twins of kernels/rms_norm_cpu.cc: one thread block per row, float32
// sums reduced across the block, the element type a template parameter;
// 16 bytes per access where the operands allow (Note [16-byte RMSNorm
// accesses]).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "kernels/float_format.cuh"
#include "kernels/pack16.cuh"
#include "kernels/rms_norm.h"

namespace rigtune::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxGridRows = 65535 * 4;  // rows beyond the grid loop

// Sum of `v` over the block; every thread gets the result.
__device__ float BlockSum(float v) {
  __shared__ float partial[kThreads / 32];
  __shared__ float total;
  for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, s);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    float t = threadIdx.x < kThreads / 32 ? partial[threadIdx.x] : 0.0f;
    for (int s = 16; s > 0; s >>= 1) t += __shfl_xor_sync(0xFFFFFFFFu, t, s);
    if (threadIdx.x == 0) total = t;
  }
  __syncthreads();
  const float result = total;
  __syncthreads();  // `partial` and `total` are reused by the next row
  return result;
}

template <typename T>
__global__ void ForwardKernel(const T* x, int64_t ld_x, const T* w, int64_t rows, int64_t cols,
                              float eps, T* y, int64_t ld_y, float* rstd) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * ld_x;
    float sum = 0.0f;
    for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
      const float v = ToFloat(xr[c]);
      sum += v * v;
    }
    const float inv = 1.0f / sqrtf(BlockSum(sum) / static_cast<float>(cols) + eps);
    if (threadIdx.x == 0) rstd[r] = inv;
    T* yr = y + r * ld_y;
    for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
      const float n = RoundTo<T>(ToFloat(xr[c]) * inv);
      yr[c] = FromFloat<T>(ToFloat(w[c]) * n);
    }
  }
}

template <typename T>
__global__ void BackwardKernel(const T* dy, int64_t ld_dy, const T* x, int64_t ld_x, const T* w,
                               const float* rstd, int64_t rows, int64_t cols, T* dx,
                               int64_t ld_dx) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* dyr = dy + r * ld_dy;
    const T* xr = x + r * ld_x;
    float dot = 0.0f;
    for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
      dot += RoundTo<T>(ToFloat(dyr[c]) * ToFloat(w[c])) * ToFloat(xr[c]);
    }
    dot = BlockSum(dot);
    const float inv = rstd[r];
    const float k = inv * inv * dot / static_cast<float>(cols);
    T* dxr = dx + r * ld_dx;
    for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
      const float dn = RoundTo<T>(ToFloat(dyr[c]) * ToFloat(w[c]));
      dxr[c] = FromFloat<T>(inv * (dn - ToFloat(xr[c]) * k));
    }
  }
}

// Note [16-byte RMSNorm accesses]
// The same two passes per row with each thread moving 16 bytes per access
// (8 bf16/fp16 or 4 float32 elements) when the rows of every operand start
// 16-byte aligned and the columns split into whole packs: at 7B a row is
// 4096 bf16, two packs per thread instead of sixteen 2-byte loads. Each
// thread sums its packs' elements in order, then the block reduction: the
// float32 sum is ordered differently from the one-element kernels, well
// within the CPU twin's tolerance.
template <typename T>
__global__ void ForwardKernelVec(const T* x, int64_t ld_x, const T* w, int64_t rows, int64_t cols,
                                 float eps, T* y, int64_t ld_y, float* rstd) {
  constexpr int V = kVec<T>;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * ld_x;
    float sum = 0.0f;
    for (int64_t c = threadIdx.x * int64_t{V}; c < cols; c += kThreads * V) {
      const Pack<T> p = LoadPack(xr + c);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float v = ToFloat(p.v[j]);
        sum += v * v;
      }
    }
    const float inv = 1.0f / sqrtf(BlockSum(sum) / static_cast<float>(cols) + eps);
    if (threadIdx.x == 0) rstd[r] = inv;
    T* yr = y + r * ld_y;
    for (int64_t c = threadIdx.x * int64_t{V}; c < cols; c += kThreads * V) {
      const Pack<T> p = LoadPack(xr + c);
      const Pack<T> wp = LoadPack(w + c);
      Pack<T> out;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float n = RoundTo<T>(ToFloat(p.v[j]) * inv);
        out.v[j] = FromFloat<T>(ToFloat(wp.v[j]) * n);
      }
      StorePack(yr + c, out);
    }
  }
}

template <typename T>
__global__ void BackwardKernelVec(const T* dy, int64_t ld_dy, const T* x, int64_t ld_x,
                                  const T* w, const float* rstd, int64_t rows, int64_t cols, T* dx,
                                  int64_t ld_dx) {
  constexpr int V = kVec<T>;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* dyr = dy + r * ld_dy;
    const T* xr = x + r * ld_x;
    float dot = 0.0f;
    for (int64_t c = threadIdx.x * int64_t{V}; c < cols; c += kThreads * V) {
      const Pack<T> d = LoadPack(dyr + c), xp = LoadPack(xr + c), wp = LoadPack(w + c);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        dot += RoundTo<T>(ToFloat(d.v[j]) * ToFloat(wp.v[j])) * ToFloat(xp.v[j]);
      }
    }
    dot = BlockSum(dot);
    const float inv = rstd[r];
    const float k = inv * inv * dot / static_cast<float>(cols);
    T* dxr = dx + r * ld_dx;
    for (int64_t c = threadIdx.x * int64_t{V}; c < cols; c += kThreads * V) {
      // All loads before the store: dx may alias dy.
      const Pack<T> d = LoadPack(dyr + c), xp = LoadPack(xr + c), wp = LoadPack(w + c);
      Pack<T> out;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float dn = RoundTo<T>(ToFloat(d.v[j]) * ToFloat(wp.v[j]));
        out.v[j] = FromFloat<T>(inv * (dn - ToFloat(xp.v[j]) * k));
      }
      StorePack(dxr + c, out);
    }
  }
}

int Grid(int64_t rows) { return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(rows, kMaxGridRows))); }

template <typename T>
cudaError_t LaunchForward(const void* x, int64_t ld_x, const void* w, int64_t rows, int64_t cols,
                          float eps, void* y, int64_t ld_y, float* rstd, cudaStream_t stream) {
  if (Vectorizable<T>(cols, {{x, ld_x}, {w, 0}, {y, ld_y}})) {
    ForwardKernelVec<T><<<Grid(rows), kThreads, 0, stream>>>(
        static_cast<const T*>(x), ld_x, static_cast<const T*>(w), rows, cols, eps,
        static_cast<T*>(y), ld_y, rstd);
  } else {
    ForwardKernel<T><<<Grid(rows), kThreads, 0, stream>>>(
        static_cast<const T*>(x), ld_x, static_cast<const T*>(w), rows, cols, eps,
        static_cast<T*>(y), ld_y, rstd);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchBackward(const void* dy, int64_t ld_dy, const void* x, int64_t ld_x,
                           const void* w, const float* rstd, int64_t rows, int64_t cols, void* dx,
                           int64_t ld_dx, cudaStream_t stream) {
  if (Vectorizable<T>(cols, {{dy, ld_dy}, {x, ld_x}, {w, 0}, {dx, ld_dx}})) {
    BackwardKernelVec<T><<<Grid(rows), kThreads, 0, stream>>>(
        static_cast<const T*>(dy), ld_dy, static_cast<const T*>(x), ld_x,
        static_cast<const T*>(w), rstd, rows, cols, static_cast<T*>(dx), ld_dx);
  } else {
    BackwardKernel<T><<<Grid(rows), kThreads, 0, stream>>>(
        static_cast<const T*>(dy), ld_dy, static_cast<const T*>(x), ld_x,
        static_cast<const T*>(w), rstd, rows, cols, static_cast<T*>(dx), ld_dx);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t RmsNormForwardCuda(const void* x, int64_t ld_x, const void* w, int64_t rows,
                               int64_t cols, float eps, FloatFormat fmt, void* y, int64_t ld_y,
                               float* rstd, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  switch (fmt) {
    case FloatFormat::kFloat32:
      return LaunchForward<float>(x, ld_x, w, rows, cols, eps, y, ld_y, rstd, stream);
    case FloatFormat::kFloat16:
      return LaunchForward<__half>(x, ld_x, w, rows, cols, eps, y, ld_y, rstd, stream);
    case FloatFormat::kBFloat16:
      return LaunchForward<__nv_bfloat16>(x, ld_x, w, rows, cols, eps, y, ld_y, rstd, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t RmsNormBackwardCuda(const void* dy, int64_t ld_dy, const void* x, int64_t ld_x,
                                const void* w, const float* rstd, int64_t rows, int64_t cols,
                                FloatFormat fmt, void* dx, int64_t ld_dx, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  switch (fmt) {
    case FloatFormat::kFloat32:
      return LaunchBackward<float>(dy, ld_dy, x, ld_x, w, rstd, rows, cols, dx, ld_dx, stream);
    case FloatFormat::kFloat16:
      return LaunchBackward<__half>(dy, ld_dy, x, ld_x, w, rstd, rows, cols, dx, ld_dx, stream);
    case FloatFormat::kBFloat16:
      return LaunchBackward<__nv_bfloat16>(dy, ld_dy, x, ld_x, w, rstd, rows, cols, dx, ld_dx,
                                           stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace rigtune::kernels
