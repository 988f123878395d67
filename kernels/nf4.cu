// CUDA twins of kernels/nf4_cpu.cc. Same bits as the CPU reference: every
// float operation that matters is spelled with an explicit round-to-nearest
// intrinsic (__fmul_rn, __fadd_rn, __fdiv_rn, __fmaf_rn) so that nvcc cannot
// contract or approximate it. See Note [bitsandbytes NF4 layout] in nf4.h.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/float_format.cuh"
#include "kernels/grid.cuh"
#include "kernels/nf4.h"
#include "kernels/pack16.cuh"

namespace rigtune::kernels {
namespace {

__constant__ float c_nf4_code[16] = {
    kNf4Code[0],  kNf4Code[1],  kNf4Code[2],  kNf4Code[3],  kNf4Code[4],  kNf4Code[5],
    kNf4Code[6],  kNf4Code[7],  kNf4Code[8],  kNf4Code[9],  kNf4Code[10], kNf4Code[11],
    kNf4Code[12], kNf4Code[13], kNf4Code[14], kNf4Code[15],
};

// ---- quantize: one warp per 64-element block, two elements per lane -------

__global__ void QuantizeKernel(const void* in, FloatFormat fmt, int64_t n, int64_t num_blocks,
                               uint8_t* packed, float* absmax) {
  __shared__ float mid[15];
  if (threadIdx.x < 15) {
    mid[threadIdx.x] =
        __fdiv_rn(__fadd_rn(c_nf4_code[threadIdx.x], c_nf4_code[threadIdx.x + 1]), 2.0f);
  }
  __syncthreads();
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t{gridDim.x} * (kThreads / 32);
  for (int64_t b = blockIdx.x * int64_t{kThreads / 32} + threadIdx.x / 32; b < num_blocks;
       b += warps) {
    const int64_t begin = b * kNf4BlockSize;
    const int64_t valid = min(kNf4BlockSize, n - begin);
    const int64_t i0 = begin + 2 * lane;
    const float x0 = 2 * lane < valid ? LoadElement(in, fmt, i0) : 0.0f;
    const float x1 = 2 * lane + 1 < valid ? LoadElement(in, fmt, i0 + 1) : 0.0f;
    float amax = fmaxf(fabsf(x0), fabsf(x1));
    for (int s = 16; s > 0; s >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, s));
    const float clamped = fmaxf(amax, 1e-38f);
    const float inv = __fdiv_rn(1.0f, clamped);
    const bool full = valid == kNf4BlockSize;
    if (lane == 0) absmax[b] = full ? amax : clamped;
    uint32_t codes[2] = {kNf4ZeroCode, kNf4ZeroCode};
    const float xs[2] = {x0, x1};
    for (int k = 0; k < 2; ++k) {
      if (2 * lane + k >= valid) continue;
      const float s = full ? __fmul_rn(xs[k], inv) : __fdiv_rn(xs[k], clamped);
      uint32_t c = 0;
#pragma unroll
      for (int m = 0; m < 15; ++m) c += mid[m] < s ? 1u : 0u;
      codes[k] = c;
    }
    if (2 * lane < valid) packed[i0 / 2] = static_cast<uint8_t>(codes[0] << 4 | codes[1]);
  }
}

// ---- double quantization ---------------------------------------------------

// One warp reproduces Note [absmax mean order] (nf4_cpu.cc): lane t owns the
// t-th running sum of every 32-float row.
__global__ void AbsmaxMeanKernel(const float* x, int64_t n, float* offset) {
  constexpr int kLanes = 8, kIlp = 4, kRow = 32, kUnroll = 16;
  __shared__ float lanes_sum[kRow];
  const int t = threadIdx.x;
  const int64_t num_vecs = n / kLanes;
  const int64_t rows = num_vecs / kIlp;
  int64_t ceil_log2 = 1;
  if (rows > 2) ceil_log2 = 64 - __clzll(static_cast<unsigned long long>(rows - 1));
  const int64_t level_power = max(int64_t{4}, ceil_log2 / 4);
  const int64_t level_step = int64_t{1} << level_power;  // a multiple of kUnroll
  const int64_t level_mask = level_step - 1;
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  int64_t i = 0;
  while (i + level_step <= rows) {
    for (int64_t j = 0; j < level_step; j += kUnroll, i += kUnroll) {
      float v[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) v[u] = __ldg(x + (i + u) * kRow + t);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) acc[0] = __fadd_rn(acc[0], v[u]);
    }
#pragma unroll
    for (int level = 1; level < 4; ++level) {
      acc[level] = __fadd_rn(acc[level], acc[level - 1]);
      acc[level - 1] = 0.0f;
      if ((i & (level_mask << (level * level_power))) != 0) break;
    }
  }
  for (; i < rows; ++i) acc[0] = __fadd_rn(acc[0], x[i * kRow + t]);
  for (int level = 1; level < 4; ++level) acc[0] = __fadd_rn(acc[0], acc[level]);
  lanes_sum[t] = acc[0];
  __syncwarp();
  if (t != 0) return;
  float lanes[kLanes];
  for (int l = 0; l < kLanes; ++l) lanes[l] = lanes_sum[l];
  for (int64_t v = rows * kIlp; v < num_vecs; ++v) {
    for (int l = 0; l < kLanes; ++l) lanes[l] = __fadd_rn(lanes[l], x[v * kLanes + l]);
  }
  for (int g = 1; g < kIlp; ++g) {
    for (int l = 0; l < kLanes; ++l) lanes[l] = __fadd_rn(lanes[l], lanes_sum[g * kLanes + l]);
  }
  float sum = 0.0f;
  for (int64_t k = num_vecs * kLanes; k < n; ++k) sum = __fadd_rn(sum, x[k]);
  for (int l = 0; l < kLanes; ++l) sum = __fadd_rn(sum, lanes[l]);
  *offset = __fdiv_rn(sum, static_cast<float>(n));
}

// One CTA of 256 threads per nested block; thread = one absmax.
__global__ void NestedQuantizeKernel(const float* absmax, int64_t num_blocks, const float* map8,
                                     const float* offset_ptr, uint8_t* q8, float* absmax2) {
  __shared__ float mid[255];
  __shared__ float warp_max[kThreads / 32];
  for (int k = threadIdx.x; k < 255; k += blockDim.x) {
    mid[k] = __fmul_rn(0.5f, __fadd_rn(map8[k], map8[k + 1]));
  }
  const float offset = *offset_ptr;
  const int64_t i = int64_t{blockIdx.x} * kNf4NestedBlockSize + threadIdx.x;
  const bool valid = i < num_blocks;
  const float v = valid ? __fsub_rn(absmax[i], offset) : 0.0f;
  float m = fabsf(v);
  for (int s = 16; s > 0; s >>= 1) m = fmaxf(m, __shfl_xor_sync(0xFFFFFFFFu, m, s));
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = m;
  __syncthreads();
  float amax = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) amax = fmaxf(amax, warp_max[w]);
  if (threadIdx.x == 0) absmax2[blockIdx.x] = amax;
  if (!valid) return;
  if (amax == 0.0f) {
    q8[i] = 0;
    return;
  }
  const float inv = __fdiv_rn(1.0f, amax);
  const float scaled = fminf(fmaxf(__fmul_rn(v, inv), -1.0f), 1.0f);
  const float u = __fmaf_rn(__fmul_rn(__fadd_rn(scaled, 1.0f), 0.5f), 65535.0f, 0.5f);
  const uint32_t lut_index = __float2uint_rz(u);
  const float grid =
      __fadd_rn(-1.0f, __fdiv_rn(__fmul_rn(2.0f, static_cast<float>(lut_index)), 65535.0f));
  int lo = 0, hi = 255;  // lower_bound: midpoints strictly below `grid`
  while (lo < hi) {
    const int mi = (lo + hi) / 2;
    if (mid[mi] < grid) {
      lo = mi + 1;
    } else {
      hi = mi;
    }
  }
  q8[i] = static_cast<uint8_t>(lo);
}

// ---- dequantize -------------------------------------------------------------

struct NestedArgs {
  const uint8_t* q8;
  const float* absmax2;
  const float* map8;
  float offset;
};

template <bool kNested>
__device__ __forceinline__ float BlockAbsmax(const float* absmax, const NestedArgs& nested,
                                             const float* s_map8, int64_t block) {
  if constexpr (kNested) {
    const float scaled =
        __fmul_rn(s_map8[__ldg(nested.q8 + block)], __ldg(nested.absmax2 + block / 256));
    return __fadd_rn(scaled, nested.offset);
  } else {
    return __ldg(absmax + block);
  }
}

__device__ __forceinline__ uint32_t PackPair(float a, float b, FloatFormat fmt) {
  if (fmt == FloatFormat::kBFloat16) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  const __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// Fast path: a thread takes 4 packed bytes = 8 elements per step and writes
// them with one 16-byte store (bf16/fp16; two for fp32), so that a warp's
// loads and stores are each one contiguous run: 128 bytes read, 512 (or
// 1024) bytes written per instruction. Eight neighbouring threads share one
// absmax (a broadcast from L1). Each thread keeps kUnroll quads in flight.
constexpr int kUnroll = 4;

template <bool kNested, FloatFormat kFmt>
__global__ void __launch_bounds__(kThreads)
    DequantizeVecKernel(const uint32_t* packed, const float* absmax, NestedArgs nested,
                        int64_t quads, void* out) {
  __shared__ float s_code[16];
  __shared__ float s_map8[kNested ? 256 : 1];
  if (threadIdx.x < 16) s_code[threadIdx.x] = c_nf4_code[threadIdx.x];
  if constexpr (kNested) s_map8[threadIdx.x] = nested.map8[threadIdx.x];
  __syncthreads();
  const int64_t stride = int64_t{gridDim.x} * kThreads;
  for (int64_t q0 = int64_t{blockIdx.x} * kThreads + threadIdx.x; q0 < quads;
       q0 += kUnroll * stride) {
    uint32_t word[kUnroll];
    float amax[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const int64_t q = q0 + r * stride;
      if (q < quads) {
        word[r] = __ldg(packed + q);
        amax[r] = BlockAbsmax<kNested>(absmax, nested, s_map8, q >> 3);
      }
    }
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      const int64_t q = q0 + r * stride;
      if (q >= quads) continue;
      if constexpr (kFmt == FloatFormat::kFloat32) {
        float4* dst = static_cast<float4*>(out) + q * 2;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const uint32_t b0 = (word[r] >> (16 * h)) & 0xFFu;
          const uint32_t b1 = (word[r] >> (16 * h + 8)) & 0xFFu;
          dst[h] = make_float4(
              __fmul_rn(s_code[b0 >> 4], amax[r]), __fmul_rn(s_code[b0 & 15], amax[r]),
              __fmul_rn(s_code[b1 >> 4], amax[r]), __fmul_rn(s_code[b1 & 15], amax[r]));
        }
      } else {
        uint32_t pairs[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const uint32_t b = (word[r] >> (8 * k)) & 0xFFu;
          pairs[k] = PackPair(__fmul_rn(s_code[b >> 4], amax[r]),
                              __fmul_rn(s_code[b & 15], amax[r]), kFmt);
        }
        static_cast<uint4*>(out)[q] = make_uint4(pairs[0], pairs[1], pairs[2], pairs[3]);
      }
    }
  }
}

// General path: one element per thread, any alignment; also the tail.
template <bool kNested>
__global__ void DequantizeElementsKernel(const uint8_t* packed, const float* absmax,
                                         NestedArgs nested, int64_t begin, int64_t n,
                                         FloatFormat fmt, void* out) {
  __shared__ float s_map8[kNested ? 256 : 1];
  if constexpr (kNested) {
    for (int k = threadIdx.x; k < 256; k += blockDim.x) s_map8[k] = nested.map8[k];
  }
  __syncthreads();
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = begin + int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    const uint8_t byte = packed[i / 2];
    const uint32_t code = (i & 1) ? (byte & 0x0Fu) : (byte >> 4);
    const float amax = BlockAbsmax<kNested>(absmax, nested, s_map8, i / kNf4BlockSize);
    StoreElement(out, fmt, i, __fmul_rn(c_nf4_code[code], amax));
  }
}

template <bool kNested, FloatFormat kFmt>
void LaunchVec(const uint8_t* packed, const float* absmax, const NestedArgs& nested, int64_t chunks,
               void* out, cudaStream_t stream) {
  DequantizeVecKernel<kNested, kFmt><<<GridFor(CeilDiv(chunks, kUnroll)), kThreads, 0, stream>>>(
      reinterpret_cast<const uint32_t*>(packed), absmax, nested, chunks, out);
}

template <bool kNested>
cudaError_t Dequantize(const uint8_t* packed, const float* absmax, const NestedArgs& nested,
                       int64_t n, FloatFormat fmt, void* out, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  int64_t begin = 0;
  if (Aligned16(packed) && Aligned16(out)) {
    const int64_t chunks = n / 8;  // quads of packed bytes
    if (chunks > 0) {
      switch (fmt) {
        case FloatFormat::kFloat32:
          LaunchVec<kNested, FloatFormat::kFloat32>(packed, absmax, nested, chunks, out, stream);
          break;
        case FloatFormat::kFloat16:
          LaunchVec<kNested, FloatFormat::kFloat16>(packed, absmax, nested, chunks, out, stream);
          break;
        case FloatFormat::kBFloat16:
          LaunchVec<kNested, FloatFormat::kBFloat16>(packed, absmax, nested, chunks, out, stream);
          break;
      }
    }
    begin = chunks * 8;
  }
  if (begin < n) {
    DequantizeElementsKernel<kNested>
        <<<GridFor(n - begin), kThreads, 0, stream>>>(packed, absmax, nested, begin, n, fmt, out);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t Nf4QuantizeCuda(const void* in, FloatFormat fmt, int64_t n, uint8_t* packed,
                            float* absmax, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  const int64_t num_blocks = Nf4NumBlocks(n);  // one warp each
  QuantizeKernel<<<GridFor(num_blocks * 32), kThreads, 0, stream>>>(in, fmt, n, num_blocks, packed,
                                                                    absmax);
  return cudaGetLastError();
}

cudaError_t Nf4DoubleQuantCuda(const float* absmax, int64_t num_blocks, const float* map8,
                               uint8_t* q8, float* absmax2, float* offset, cudaStream_t stream) {
  if (num_blocks <= 0) return cudaSuccess;
  AbsmaxMeanKernel<<<1, 32, 0, stream>>>(absmax, num_blocks, offset);
  const int64_t nested_blocks = Nf4NumNestedBlocks(num_blocks);
  NestedQuantizeKernel<<<static_cast<unsigned>(nested_blocks), kThreads, 0, stream>>>(
      absmax, num_blocks, map8, offset, q8, absmax2);
  return cudaGetLastError();
}

cudaError_t Nf4DequantizeCuda(const uint8_t* packed, const float* absmax, int64_t n,
                              FloatFormat fmt, void* out, cudaStream_t stream) {
  return Dequantize<false>(packed, absmax, NestedArgs{}, n, fmt, out, stream);
}

cudaError_t Nf4DequantizeNestedCuda(const uint8_t* packed, const uint8_t* q8, const float* absmax2,
                                    const float* map8, float offset, int64_t n, FloatFormat fmt,
                                    void* out, cudaStream_t stream) {
  return Dequantize<true>(packed, nullptr, NestedArgs{q8, absmax2, map8, offset}, n, fmt, out,
                          stream);
}

}  // namespace rigtune::kernels
