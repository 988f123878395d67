// nf4_dequant_bench: effective bandwidth of the CUDA 4-bit dequantize
// kernels into bf16 (kernels/nf4.h, kernels/hqq4.h), for the weight shapes
// of a 7B MLP (4096 x 11008) and a 70B model.
//
//   build/cuda/tests/bench/nf4_dequant_bench [--iters N] [--peak-gbs 4300]
//
// Effective bytes = bytes read (packed codes + constants) + bytes written
// (bf16 output). The device's copy ceiling is measured with a
// device-to-device cudaMemcpy of the output size (read + write counted) and
// printed beside the nominal peak. One markdown table row per shape and
// variant ("plain": NF4 with float32 absmax; "nested": NF4 with 8-bit absmax
// decoded on the fly; "hqq4": HQQ 4-bit, float32 scale and zero per group).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/hqq4.h"
#include "kernels/nf4.h"

namespace {

using rigtune::kernels::FloatFormat;

#define CHECK_CUDA(expr)                                                                           \
  do {                                                                                             \
    cudaError_t err_ = (expr);                                                                     \
    if (err_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(err_)); \
      std::exit(1);                                                                                \
    }                                                                                              \
  } while (0)

template <typename Fn>
float TimeMs(Fn fn, int iters, cudaStream_t stream) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i) fn();  // warm-up
  CHECK_CUDA(cudaEventRecord(start, stream));
  for (int i = 0; i < iters; ++i) fn();
  CHECK_CUDA(cudaEventRecord(stop, stream));
  CHECK_CUDA(cudaEventSynchronize(stop));
  float ms = 0.0f;
  CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  return ms / static_cast<float>(iters);
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 50;
  double peak_gbs = 4300.0;  // H200 copy ceiling quoted in the issue
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--iters") == 0) iters = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--peak-gbs") == 0) peak_gbs = std::atof(argv[i + 1]);
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));

  const int64_t shapes[][2] = {{4096, 11008}, {4096, 4096}, {8192, 28672}, {28672, 8192}};
  std::printf("device: %s\n\n", prop.name);
  std::printf(
      "| shape | variant | time (us) | effective GB/s | %% of %.0f GB/s | %% of measured copy |\n",
      peak_gbs);
  std::printf("|---|---|---|---|---|---|\n");
  for (const auto& shape : shapes) {
    const int64_t n = shape[0] * shape[1];
    const int64_t nb = rigtune::kernels::Nf4NumBlocks(n);
    const int64_t nn = rigtune::kernels::Nf4NumNestedBlocks(nb);
    const int64_t packed_bytes = rigtune::kernels::Nf4PackedBytes(n);
    uint8_t *packed, *q8;
    float *absmax, *absmax2, *map8;
    void* out;
    CHECK_CUDA(cudaMalloc(&packed, packed_bytes));
    CHECK_CUDA(cudaMalloc(&q8, nb));
    CHECK_CUDA(cudaMalloc(&absmax, nb * 4));
    CHECK_CUDA(cudaMalloc(&absmax2, nn * 4));
    CHECK_CUDA(cudaMalloc(&map8, 256 * 4));
    const int64_t groups = rigtune::kernels::Hqq4NumGroups(n);
    float *hqq_scale, *hqq_zero;
    CHECK_CUDA(cudaMalloc(&hqq_scale, groups * 4));
    CHECK_CUDA(cudaMalloc(&hqq_zero, groups * 4));
    CHECK_CUDA(cudaMalloc(&out, n * 2));
    CHECK_CUDA(cudaMemset(packed, 0x5A, packed_bytes));
    CHECK_CUDA(cudaMemset(q8, 0x80, nb));
    std::vector<float> host_absmax(nb, 0.03f), host_absmax2(nn, 0.01f);
    CHECK_CUDA(cudaMemcpy(absmax, host_absmax.data(), nb * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(absmax2, host_absmax2.data(), nn * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(
        cudaMemcpy(map8, rigtune::kernels::DynamicMap8().data(), 256 * 4, cudaMemcpyHostToDevice));
    std::vector<float> host_scale(groups, 0.004f), host_zero(groups, 7.5f);
    CHECK_CUDA(cudaMemcpy(hqq_scale, host_scale.data(), groups * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(hqq_zero, host_zero.data(), groups * 4, cudaMemcpyHostToDevice));

    const float copy_ms = TimeMs(
        [&] {
          CHECK_CUDA(cudaMemcpyAsync(out, static_cast<char*>(out) + n, n, cudaMemcpyDeviceToDevice,
                                     stream));
        },
        iters, stream);
    const double copy_gbs = 2.0 * n / (copy_ms * 1e6);  // n bytes read + n written

    for (bool nested : {false, true}) {
      const float ms = TimeMs(
          [&] {
            cudaError_t err = nested ? rigtune::kernels::Nf4DequantizeNestedCuda(
                                           packed, q8, absmax2, map8, 0.02f, n,
                                           FloatFormat::kBFloat16, out, stream)
                                     : rigtune::kernels::Nf4DequantizeCuda(
                                           packed, absmax, n, FloatFormat::kBFloat16, out, stream);
            CHECK_CUDA(err);
          },
          iters, stream);
      const double bytes = static_cast<double>(packed_bytes) + 2.0 * n +
                           (nested ? static_cast<double>(nb) + nn * 4.0 : nb * 4.0);
      const double gbs = bytes / (ms * 1e6);
      std::printf("| %lld x %lld | %s | %.1f | %.0f | %.1f%% | %.1f%% |\n",
                  static_cast<long long>(shape[0]), static_cast<long long>(shape[1]),
                  nested ? "nested" : "plain", ms * 1e3, gbs, 100.0 * gbs / peak_gbs,
                  100.0 * gbs / copy_gbs);
    }
    // hqq4 reads the same n/2 code bytes (n is a multiple of 128 here).
    const float hqq_ms = TimeMs(
        [&] {
          CHECK_CUDA(rigtune::kernels::Hqq4DequantizeCuda(packed, hqq_scale, hqq_zero, n,
                                                          FloatFormat::kBFloat16, out, stream));
        },
        iters, stream);
    const double hqq_gbs =
        (static_cast<double>(packed_bytes) + 2.0 * n + 8.0 * groups) / (hqq_ms * 1e6);
    std::printf("| %lld x %lld | hqq4 | %.1f | %.0f | %.1f%% | %.1f%% |\n",
                static_cast<long long>(shape[0]), static_cast<long long>(shape[1]), hqq_ms * 1e3,
                hqq_gbs, 100.0 * hqq_gbs / peak_gbs, 100.0 * hqq_gbs / copy_gbs);
    std::printf("| %lld x %lld | device copy (%lld MB) | %.1f | %.0f | %.1f%% | 100%% |\n",
                static_cast<long long>(shape[0]), static_cast<long long>(shape[1]),
                static_cast<long long>(n >> 20), copy_ms * 1e3, copy_gbs,
                100.0 * copy_gbs / peak_gbs);
    CHECK_CUDA(cudaFree(packed));
    CHECK_CUDA(cudaFree(q8));
    CHECK_CUDA(cudaFree(absmax));
    CHECK_CUDA(cudaFree(absmax2));
    CHECK_CUDA(cudaFree(map8));
    CHECK_CUDA(cudaFree(hqq_scale));
    CHECK_CUDA(cudaFree(hqq_zero));
    CHECK_CUDA(cudaFree(out));
  }
  CHECK_CUDA(cudaStreamDestroy(stream));
  return 0;
}
