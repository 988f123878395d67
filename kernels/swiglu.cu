// CUDA twins of kernels/swiglu_cpu.cc: elementwise, x over columns, y over rows;
// 16 bytes per access where the operands allow (Note [16-byte SwiGLU accesses]).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "kernels/float_format.cuh"
#include "kernels/pack16.cuh"
#include "kernels/swiglu.h"

namespace rigtune::kernels {
namespace {

constexpr int kThreads = 256;

__device__ float Sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

// One element each way; the scalar and the vector kernels share these, so
// both give the CPU twin's numbers.
template <typename T>
__device__ T ForwardElement(T gate, T up) {
  const float g = ToFloat(gate);
  const float s = RoundTo<T>(g * Sigmoid(g));
  return FromFloat<T>(s * ToFloat(up));
}

template <typename T>
__device__ void BackwardElement(T dout, T gate, T up, T* dgate, T* dup) {
  const float d = ToFloat(dout);
  const float g = ToFloat(gate);
  const float u = ToFloat(up);
  const float sig = Sigmoid(g);
  const float s = RoundTo<T>(g * sig);
  const float ds = RoundTo<T>(d * u);
  *dgate = FromFloat<T>(ds * (sig * (1.0f + g * (1.0f - sig))));
  *dup = FromFloat<T>(d * s);
}

template <typename T>
__global__ void ForwardKernel(const T* gate, int64_t ld_gate, const T* up, int64_t ld_up,
                              int64_t rows, int64_t cols, T* out, int64_t ld_out) {
  const int64_t c = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  if (c >= cols) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    out[r * ld_out + c] = ForwardElement(gate[r * ld_gate + c], up[r * ld_up + c]);
  }
}

template <typename T>
__global__ void BackwardKernel(const T* dout, int64_t ld_out, const T* gate, int64_t ld_gate,
                               const T* up, int64_t ld_up, int64_t rows, int64_t cols, T* dgate,
                               int64_t ld_dgate, T* dup, int64_t ld_dup) {
  const int64_t c = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  if (c >= cols) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    BackwardElement(dout[r * ld_out + c], gate[r * ld_gate + c], up[r * ld_up + c],
                    &dgate[r * ld_dgate + c], &dup[r * ld_dup + c]);
  }
}

// Note [16-byte SwiGLU accesses]
// One 2-byte element per thread leaves most of each memory transaction's
// width and most of the scheduler's time to overhead; SwiGLU is pure
// traffic (at 7B, 4 × 2048 tokens: ~60 GB per step over its forward,
// recompute and backward), so when every row start is 16-byte aligned each
// thread moves 16 bytes (8 bf16/fp16 or 4 float32 elements) per access.
template <typename T>
__global__ void ForwardKernelVec(const T* gate, int64_t ld_gate, const T* up, int64_t ld_up,
                                 int64_t rows, int64_t cols, T* out, int64_t ld_out) {
  const int64_t c = (blockIdx.x * int64_t{kThreads} + threadIdx.x) * kVec<T>;
  if (c >= cols) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const Pack<T> g = LoadPack(gate + r * ld_gate + c);
    const Pack<T> u = LoadPack(up + r * ld_up + c);
    Pack<T> o;
#pragma unroll
    for (int j = 0; j < kVec<T>; ++j) o.v[j] = ForwardElement(g.v[j], u.v[j]);
    StorePack(out + r * ld_out + c, o);
  }
}

template <typename T>
__global__ void BackwardKernelVec(const T* dout, int64_t ld_out, const T* gate, int64_t ld_gate,
                                  const T* up, int64_t ld_up, int64_t rows, int64_t cols,
                                  T* dgate, int64_t ld_dgate, T* dup, int64_t ld_dup) {
  const int64_t c = (blockIdx.x * int64_t{kThreads} + threadIdx.x) * kVec<T>;
  if (c >= cols) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    // All loads before any store: dgate/dup may alias gate/up.
    const Pack<T> d = LoadPack(dout + r * ld_out + c);
    const Pack<T> g = LoadPack(gate + r * ld_gate + c);
    const Pack<T> u = LoadPack(up + r * ld_up + c);
    Pack<T> dg, du;
#pragma unroll
    for (int j = 0; j < kVec<T>; ++j) BackwardElement(d.v[j], g.v[j], u.v[j], &dg.v[j], &du.v[j]);
    StorePack(dgate + r * ld_dgate + c, dg);
    StorePack(dup + r * ld_dup + c, du);
  }
}

dim3 Grid(int64_t rows, int64_t cols) {
  return dim3(static_cast<unsigned>((cols + kThreads - 1) / kThreads),
              static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
}

template <typename T>
cudaError_t LaunchForward(const void* gate, int64_t ld_gate, const void* up, int64_t ld_up,
                          int64_t rows, int64_t cols, void* out, int64_t ld_out,
                          cudaStream_t stream) {
  const auto* g = static_cast<const T*>(gate);
  const auto* u = static_cast<const T*>(up);
  auto* o = static_cast<T*>(out);
  if (Vectorizable<T>(cols, {{gate, ld_gate}, {up, ld_up}, {out, ld_out}})) {
    ForwardKernelVec<T><<<Grid(rows, cols / kVec<T>), kThreads, 0, stream>>>(
        g, ld_gate, u, ld_up, rows, cols, o, ld_out);
  } else {
    ForwardKernel<T><<<Grid(rows, cols), kThreads, 0, stream>>>(g, ld_gate, u, ld_up, rows, cols,
                                                                 o, ld_out);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchBackward(const void* dout, int64_t ld_out, const void* gate, int64_t ld_gate,
                           const void* up, int64_t ld_up, int64_t rows, int64_t cols, void* dgate,
                           int64_t ld_dgate, void* dup, int64_t ld_dup, cudaStream_t stream) {
  const auto* d = static_cast<const T*>(dout);
  const auto* g = static_cast<const T*>(gate);
  const auto* u = static_cast<const T*>(up);
  auto* dg = static_cast<T*>(dgate);
  auto* du = static_cast<T*>(dup);
  if (Vectorizable<T>(cols, {{dout, ld_out}, {gate, ld_gate}, {up, ld_up}, {dgate, ld_dgate},
                             {dup, ld_dup}})) {
    BackwardKernelVec<T><<<Grid(rows, cols / kVec<T>), kThreads, 0, stream>>>(
        d, ld_out, g, ld_gate, u, ld_up, rows, cols, dg, ld_dgate, du, ld_dup);
  } else {
    BackwardKernel<T><<<Grid(rows, cols), kThreads, 0, stream>>>(d, ld_out, g, ld_gate, u, ld_up,
                                                                  rows, cols, dg, ld_dgate, du,
                                                                  ld_dup);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t SwigluForwardCuda(const void* gate, int64_t ld_gate, const void* up, int64_t ld_up,
                              int64_t rows, int64_t cols, FloatFormat fmt, void* out,
                              int64_t ld_out, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  switch (fmt) {
    case FloatFormat::kFloat32:
      return LaunchForward<float>(gate, ld_gate, up, ld_up, rows, cols, out, ld_out, stream);
    case FloatFormat::kFloat16:
      return LaunchForward<__half>(gate, ld_gate, up, ld_up, rows, cols, out, ld_out, stream);
    case FloatFormat::kBFloat16:
      return LaunchForward<__nv_bfloat16>(gate, ld_gate, up, ld_up, rows, cols, out, ld_out,
                                          stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t SwigluBackwardCuda(const void* dout, int64_t ld_out, const void* gate,
                               int64_t ld_gate, const void* up, int64_t ld_up, int64_t rows,
                               int64_t cols, FloatFormat fmt, void* dgate, int64_t ld_dgate,
                               void* dup, int64_t ld_dup, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  switch (fmt) {
    case FloatFormat::kFloat32:
      return LaunchBackward<float>(dout, ld_out, gate, ld_gate, up, ld_up, rows, cols, dgate,
                                   ld_dgate, dup, ld_dup, stream);
    case FloatFormat::kFloat16:
      return LaunchBackward<__half>(dout, ld_out, gate, ld_gate, up, ld_up, rows, cols, dgate,
                                    ld_dgate, dup, ld_dup, stream);
    case FloatFormat::kBFloat16:
      return LaunchBackward<__nv_bfloat16>(dout, ld_out, gate, ld_gate, up, ld_up, rows, cols,
                                           dgate, ld_dgate, dup, ld_dup, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace rigtune::kernels
