// Helpers of the kernel-vs-CPU-twin GPU tests (nf4, hqq4): byte equality of
// a device result with its CPU reference, the kernels' FloatFormat of a
// dtype, and the current CUDA stream.
#ifndef RIGTUNE_TESTS_GPU_KERNEL_BYTES_H_
#define RIGTUNE_TESTS_GPU_KERNEL_BYTES_H_

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "kernels/float_format.h"

#ifdef RIGTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace rigtune::gpu_testing {

// `gpu` (any device) holds exactly the bytes of `cpu`.
inline void ExpectSameBytes(const at::Tensor& gpu, const at::Tensor& cpu,
                            const std::string& what) {
  const at::Tensor a = gpu.to(at::kCPU).contiguous();
  ASSERT_EQ(a.nbytes(), cpu.nbytes()) << what;
  EXPECT_EQ(0, std::memcmp(a.data_ptr(), cpu.data_ptr(), a.nbytes())) << what;
}

inline kernels::FloatFormat FormatOf(at::ScalarType dtype) {
  return dtype == at::kFloat  ? kernels::FloatFormat::kFloat32
         : dtype == at::kHalf ? kernels::FloatFormat::kFloat16
                              : kernels::FloatFormat::kBFloat16;
}

#ifdef RIGTUNE_WITH_CUDA
inline cudaStream_t Stream() { return at::cuda::getCurrentCUDAStream().stream(); }
#endif

}  // namespace rigtune::gpu_testing

#endif  // RIGTUNE_TESTS_GPU_KERNEL_BYTES_H_
