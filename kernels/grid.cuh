// Launch geometry shared by the 4-bit dequantize kernels (nf4.cu, hqq4.cu):
// 256-thread blocks, and a grid of enough resident blocks to cover the
// device, over which the kernels loop (grid-stride) for the rest.
#ifndef RIGTUNE_KERNELS_GRID_CUH_
#define RIGTUNE_KERNELS_GRID_CUH_

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace rigtune::kernels {

inline constexpr int kThreads = 256;

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for `work_items` threads' worth of work, at most 8 per SM.
inline int GridFor(int64_t work_items) {
  int device = 0;
  int sms = 132;
  if (cudaGetDevice(&device) == cudaSuccess) {
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  }
  const int64_t wanted = CeilDiv(work_items, kThreads);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, int64_t{sms} * 8)));
}

}  // namespace rigtune::kernels

#endif  // RIGTUNE_KERNELS_GRID_CUH_
