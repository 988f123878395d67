// SKIP_WITHOUT_CUDA(): skips a GPU test in a CPU build or on a machine
// without a CUDA device, so tests/gpu compiles and runs everywhere.
#ifndef RIGTUNE_TESTS_GPU_SKIP_WITHOUT_CUDA_H_
#define RIGTUNE_TESTS_GPU_SKIP_WITHOUT_CUDA_H_

#include <gtest/gtest.h>

#ifdef RIGTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace rigtune::gpu_testing {

inline bool HaveCuda() {
#ifdef RIGTUNE_WITH_CUDA
  return at::cuda::is_available();
#else
  return false;
#endif
}

}  // namespace rigtune::gpu_testing

#define SKIP_WITHOUT_CUDA()                                   \
  do {                                                        \
    if (!::rigtune::gpu_testing::HaveCuda()) {                \
      GTEST_SKIP() << "needs a CUDA device and a CUDA build"; \
    }                                                         \
  } while (0)

#endif  // RIGTUNE_TESTS_GPU_SKIP_WITHOUT_CUDA_H_
