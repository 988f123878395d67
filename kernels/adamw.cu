// CUDA twins of kernels/adamw_cpu.cc. Every tensor is cut into chunks of
// kChunk elements; block b finds its tensor by binary search in the table's
// prefix sums of chunk counts, so one launch covers any number of tensors.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/adamw.h"

namespace rigtune::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 4096;   // elements per AdamW block
constexpr int64_t kSumChunk = 16384;  // elements per sum-of-squares block

// The scratch layout: entries[count], then first_block[count + 1].
template <typename Entry>
size_t TableBytes(int64_t count) {
  return sizeof(Entry) * count + sizeof(int64_t) * (count + 1);
}

// Copies the entries and the chunk prefix sums to `scratch`; returns the
// total number of blocks.
template <typename Entry>
cudaError_t UploadTable(const Entry* entries, int64_t count, int64_t chunk, void* scratch,
                        cudaStream_t stream, int64_t* blocks) {
  std::vector<unsigned char> host(TableBytes<Entry>(count));
  std::copy_n(reinterpret_cast<const unsigned char*>(entries), sizeof(Entry) * count,
              host.data());
  auto* first = reinterpret_cast<int64_t*>(host.data() + sizeof(Entry) * count);
  first[0] = 0;
  for (int64_t k = 0; k < count; ++k) {
    first[k + 1] = first[k] + (entries[k].numel + chunk - 1) / chunk;
  }
  *blocks = first[count];
  // From pageable memory: returns once `host` is staged, so it may go.
  return cudaMemcpyAsync(scratch, host.data(), host.size(), cudaMemcpyHostToDevice, stream);
}

// The entry index whose block range holds `block`.
__device__ int64_t FindEntry(const int64_t* first, int64_t count, int64_t block) {
  int64_t lo = 0, hi = count - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (first[mid] <= block) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

__global__ void AdamWKernel(const AdamWTensor* tensors, const int64_t* first, int64_t count,
                            AdamWScalars s) {
  const int64_t block = blockIdx.x;
  const int64_t k = FindEntry(first, count, block);
  const AdamWTensor t = tensors[k];
  const int64_t begin = (block - first[k]) * kChunk;
  const int64_t end = min(begin + kChunk, t.numel);
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    // __fmul_rn/__fadd_rn are never contracted into FMAs: the same roundings
    // as the CPU twin.
    const float g = __fmul_rn(t.grad[i], s.grad_scale);
    float p = t.param[i];
    if (s.apply_decay) p = __fmul_rn(p, s.decay);
    const float m0 = t.exp_avg[i];
    const float diff = __fsub_rn(g, m0);
    const float m = s.lerp_weight < 0.5f
                        ? __fadd_rn(m0, __fmul_rn(s.lerp_weight, diff))
                        : __fsub_rn(g, __fmul_rn(diff, __fsub_rn(1.0f, s.lerp_weight)));
    const float gg = __fmul_rn(s.one_minus_beta2, g);
    const float v = __fadd_rn(__fmul_rn(t.exp_avg_sq[i], s.beta2), __fmul_rn(gg, g));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), s.bc2), s.eps);
    const float num = __fmul_rn(s.neg_step_size, m);
    t.param[i] = __fadd_rn(p, __fdiv_rn(num, denom));
    t.exp_avg[i] = m;
    t.exp_avg_sq[i] = v;
  }
}

__device__ double BlockSum(double x) {
  __shared__ double warp_sums[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_down_sync(0xffffffffu, x, offset);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = x;
  __syncthreads();
  double total = 0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  }
  return total;  // meaningful in thread 0
}

__global__ void PartialSquaresKernel(const FloatSpan* spans, const int64_t* first, int64_t count,
                                     double* partials) {
  const int64_t block = blockIdx.x;
  const int64_t k = FindEntry(first, count, block);
  const FloatSpan t = spans[k];
  const int64_t begin = (block - first[k]) * kSumChunk;
  const int64_t end = min(begin + kSumChunk, t.numel);
  double acc = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const double x = t.data[i];
    acc += x * x;
  }
  const double total = BlockSum(acc);
  if (threadIdx.x == 0) partials[block] = total;
}

// One block adds the partials in a fixed order (strided per thread, then the
// block reduction): deterministic.
__global__ void FinalSumKernel(const double* partials, int64_t n, double* result) {
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) acc += partials[i];
  const double total = BlockSum(acc);
  if (threadIdx.x == 0) *result = total;
}

int64_t SumBlocks(const FloatSpan* spans, int64_t count) {
  int64_t blocks = 0;
  for (int64_t k = 0; k < count; ++k) blocks += (spans[k].numel + kSumChunk - 1) / kSumChunk;
  return blocks;
}

}  // namespace

size_t AdamWScratchBytes(int64_t count) { return TableBytes<AdamWTensor>(count); }

size_t SumOfSquaresScratchBytes(const FloatSpan* spans, int64_t count) {
  return TableBytes<FloatSpan>(count) + sizeof(double) * SumBlocks(spans, count);
}

cudaError_t AdamWCuda(const AdamWTensor* tensors, int64_t count, const AdamWScalars& s,
                      void* scratch, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  int64_t blocks = 0;
  cudaError_t err = UploadTable(tensors, count, kChunk, scratch, stream, &blocks);
  if (err != cudaSuccess || blocks == 0) return err;
  const auto* table = static_cast<const AdamWTensor*>(scratch);
  const auto* first = reinterpret_cast<const int64_t*>(table + count);
  AdamWKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(table, first, count, s);
  return cudaGetLastError();
}

cudaError_t SumOfSquaresCuda(const FloatSpan* spans, int64_t count, void* scratch,
                             double* result, cudaStream_t stream) {
  int64_t blocks = 0;
  cudaError_t err = count == 0 ? cudaSuccess
                               : UploadTable(spans, count, kSumChunk, scratch, stream, &blocks);
  if (err != cudaSuccess) return err;
  if (blocks == 0) return cudaMemsetAsync(result, 0, sizeof(double), stream);
  const auto* table = static_cast<const FloatSpan*>(scratch);
  const auto* first = reinterpret_cast<const int64_t*>(table + count);
  auto* partials = reinterpret_cast<double*>(static_cast<unsigned char*>(scratch) +
                                             TableBytes<FloatSpan>(count));
  PartialSquaresKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(table, first,
                                                                              count, partials);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  FinalSumKernel<<<1, kThreads, 0, stream>>>(partials, blocks, result);
  return cudaGetLastError();
}

}  // namespace rigtune::kernels
