// CUDA twins of kernels/swiglu_cpu.cc: elementwise, x over columns, y over rows.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/float_format.cuh"
#include "kernels/swiglu.h"

namespace rigtune::kernels {
namespace {

constexpr int kThreads = 256;

__device__ float Sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

template <typename T>
__global__ void ForwardKernel(const T* gate, int64_t ld_gate, const T* up, int64_t ld_up,
                              int64_t rows, int64_t cols, T* out, int64_t ld_out) {
  const int64_t c = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  if (c >= cols) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const float g = ToFloat(gate[r * ld_gate + c]);
    const float s = RoundTo<T>(g * Sigmoid(g));
    out[r * ld_out + c] = FromFloat<T>(s * ToFloat(up[r * ld_up + c]));
  }
}

template <typename T>
__global__ void BackwardKernel(const T* dout, int64_t ld_out, const T* gate, int64_t ld_gate,
                               const T* up, int64_t ld_up, int64_t rows, int64_t cols, T* dgate,
                               int64_t ld_dgate, T* dup, int64_t ld_dup) {
  const int64_t c = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  if (c >= cols) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const float d = ToFloat(dout[r * ld_out + c]);
    const float g = ToFloat(gate[r * ld_gate + c]);
    const float u = ToFloat(up[r * ld_up + c]);
    const float sig = Sigmoid(g);
    const float s = RoundTo<T>(g * sig);
    const float ds = RoundTo<T>(d * u);
    dgate[r * ld_dgate + c] = FromFloat<T>(ds * (sig * (1.0f + g * (1.0f - sig))));
    dup[r * ld_dup + c] = FromFloat<T>(d * s);
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
  ForwardKernel<T><<<Grid(rows, cols), kThreads, 0, stream>>>(
      static_cast<const T*>(gate), ld_gate, static_cast<const T*>(up), ld_up, rows, cols,
      static_cast<T*>(out), ld_out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchBackward(const void* dout, int64_t ld_out, const void* gate, int64_t ld_gate,
                           const void* up, int64_t ld_up, int64_t rows, int64_t cols, void* dgate,
                           int64_t ld_dgate, void* dup, int64_t ld_dup, cudaStream_t stream) {
  BackwardKernel<T><<<Grid(rows, cols), kThreads, 0, stream>>>(
      static_cast<const T*>(dout), ld_out, static_cast<const T*>(gate), ld_gate,
      static_cast<const T*>(up), ld_up, rows, cols, static_cast<T*>(dgate), ld_dgate,
      static_cast<T*>(dup), ld_dup);
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
