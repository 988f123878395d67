// CPU reference for kernels/nf4.h. Plain loops, written for clarity: the CUDA
// kernels in nf4.cu must reproduce these bits exactly.
#include <algorithm>
#include <cmath>

#include "kernels/float_format.h"
#include "kernels/nf4.h"

namespace rigtune::kernels {
namespace {

// Midpoints between neighbouring NF4 codes, float32 as bitsandbytes computes them.
std::array<float, 15> Nf4Midpoints() {
  std::array<float, 15> mid{};
  for (int i = 0; i < 15; ++i) mid[i] = (kNf4Code[i] + kNf4Code[i + 1]) / 2.0f;
  return mid;
}

uint8_t Nf4Encode(float scaled, const std::array<float, 15>& mid) {
  // Number of midpoints strictly below `scaled`; clamping to [-1, 1] first
  // would not change it.
  return static_cast<uint8_t>(std::lower_bound(mid.begin(), mid.end(), scaled) - mid.begin());
}

// torch.linspace(0.1, 1, steps) in float32 as LibTorch's vectorized CPU
// builds compute it: a fused multiply-add from the nearer end.
float LinspaceAt(int64_t i, int64_t steps) {
  const float start = 0.1f;
  const float end = 1.0f;
  const float step = (end - start) / static_cast<float>(steps - 1);
  if (i < steps / 2) return std::fma(step, static_cast<float>(i), start);
  return std::fma(-step, static_cast<float>(steps - i - 1), end);
}

std::array<float, 256> BuildDynamicMap8() {
  // For exponent e = 0..6: the 2^e midpoints of linspace(0.1, 1, 2^e + 1),
  // scaled by 10^(e-6), with both signs; plus 0 and 1.
  static constexpr double kPowersOfTen[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
  std::array<float, 256> map{};
  int k = 0;
  for (int e = 0; e < 7; ++e) {
    const int64_t steps = (int64_t{1} << e) + 1;
    const float scale = static_cast<float>(kPowersOfTen[e]);
    for (int64_t i = 0; i + 1 < steps; ++i) {
      const float mean = (LinspaceAt(i, steps) + LinspaceAt(i + 1, steps)) / 2.0f;
      map[k++] = scale * mean;
      map[k++] = -scale * mean;
    }
  }
  map[k++] = 0.0f;
  map[k++] = 1.0f;
  std::sort(map.begin(), map.end());
  return map;
}

// Note [absmax mean order]
// ------------------------
// Float addition is not associative, so "the mean" is only bit-exact for a
// fixed summation order. bitsandbytes takes absmax.mean() in LibTorch, which
// on CPU sums float32 with 8-lane vectors, 4 vectors interleaved (32 running
// lanes over rows of 32 floats), each lane a 4-level cascade whose levels
// flush every 2^p rows (p = max(4, ceil(log2(rows)) / 4)). Then the leftover
// whole vectors join lane group 0, the 4 groups fold into it, the leftover
// scalars are summed, the 8 lanes are added in order, and the sum is divided
// by the count. We reproduce that single-threaded order here and in the CUDA
// kernel. (LibTorch splits sums over 32768 elements across threads, so on a
// multi-core machine its own result for a huge tensor can differ in the last
// bit from run to run of different thread counts; the golden test pins one
// thread.)
int64_t CeilLog2(int64_t x) {
  if (x <= 2) return 1;
  int64_t bits = 0;
  for (uint64_t v = static_cast<uint64_t>(x) - 1; v != 0; v >>= 1) ++bits;
  return bits;
}

}  // namespace

const std::array<float, 256>& DynamicMap8() {
  static const std::array<float, 256> map = BuildDynamicMap8();
  return map;
}

void Nf4QuantizeCpu(const void* in, FloatFormat fmt, int64_t n, uint8_t* packed, float* absmax) {
  static const std::array<float, 15> mid = Nf4Midpoints();
  const int64_t num_blocks = Nf4NumBlocks(n);
  for (int64_t b = 0; b < num_blocks; ++b) {
    const int64_t begin = b * kNf4BlockSize;
    const int64_t end = std::min(begin + kNf4BlockSize, n);
    float amax = 0.0f;
    for (int64_t i = begin; i < end; ++i) amax = std::max(amax, std::fabs(LoadAsFloat(in, fmt, i)));
    const float clamped = std::max(amax, 1e-38f);
    const bool full = end - begin == kNf4BlockSize;
    absmax[b] = full ? amax : clamped;
    const float inv = 1.0f / clamped;
    for (int64_t i = begin; i < end; i += 2) {
      uint8_t codes[2] = {kNf4ZeroCode, kNf4ZeroCode};
      for (int64_t k = 0; k < 2 && i + k < end; ++k) {
        const float x = LoadAsFloat(in, fmt, i + k);
        codes[k] = Nf4Encode(full ? x * inv : x / clamped, mid);
      }
      packed[i / 2] = static_cast<uint8_t>(codes[0] << 4 | codes[1]);
    }
  }
}

float Nf4AbsmaxMeanCpu(const float* x, int64_t n) {
  // See Note [absmax mean order].
  constexpr int kLanes = 8, kIlp = 4, kRow = kLanes * kIlp, kLevels = 4;
  const int64_t num_vecs = n / kLanes;
  const int64_t rows = num_vecs / kIlp;
  const int64_t level_power = std::max<int64_t>(4, CeilLog2(rows) / kLevels);
  const int64_t level_step = int64_t{1} << level_power;
  const int64_t level_mask = level_step - 1;
  float acc[kLevels][kRow] = {};
  int64_t i = 0;
  while (i + level_step <= rows) {
    for (int64_t j = 0; j < level_step; ++j, ++i) {
      for (int t = 0; t < kRow; ++t) acc[0][t] += x[i * kRow + t];
    }
    for (int level = 1; level < kLevels; ++level) {
      for (int t = 0; t < kRow; ++t) {
        acc[level][t] += acc[level - 1][t];
        acc[level - 1][t] = 0.0f;
      }
      if ((i & (level_mask << (level * level_power))) != 0) break;
    }
  }
  for (; i < rows; ++i) {
    for (int t = 0; t < kRow; ++t) acc[0][t] += x[i * kRow + t];
  }
  for (int level = 1; level < kLevels; ++level) {
    for (int t = 0; t < kRow; ++t) acc[0][t] += acc[level][t];
  }
  float* lanes = acc[0];  // lane group 0 = acc[0][0..7]
  for (int64_t v = rows * kIlp; v < num_vecs; ++v) {
    for (int l = 0; l < kLanes; ++l) lanes[l] += x[v * kLanes + l];
  }
  for (int g = 1; g < kIlp; ++g) {
    for (int l = 0; l < kLanes; ++l) lanes[l] += acc[0][g * kLanes + l];
  }
  float sum = 0.0f;
  for (int64_t k = num_vecs * kLanes; k < n; ++k) sum += x[k];
  for (int l = 0; l < kLanes; ++l) sum += lanes[l];
  return sum / static_cast<float>(n);
}

float Nf4DoubleQuantCpu(const float* absmax, int64_t num_blocks, const float* map8, uint8_t* q8,
                        float* absmax2) {
  const float offset = Nf4AbsmaxMeanCpu(absmax, num_blocks);
  float mid[255];
  for (int i = 0; i < 255; ++i) mid[i] = 0.5f * (map8[i] + map8[i + 1]);
  const int64_t num_nested = Nf4NumNestedBlocks(num_blocks);
  for (int64_t b = 0; b < num_nested; ++b) {
    const int64_t begin = b * kNf4NestedBlockSize;
    const int64_t end = std::min(begin + kNf4NestedBlockSize, num_blocks);
    float amax = 0.0f;
    for (int64_t i = begin; i < end; ++i) amax = std::max(amax, std::fabs(absmax[i] - offset));
    absmax2[b] = amax;
    if (amax == 0.0f) {
      std::fill(q8 + begin, q8 + end, uint8_t{0});
      continue;
    }
    const float inv = 1.0f / amax;
    for (int64_t i = begin; i < end; ++i) {
      const float v = std::clamp((absmax[i] - offset) * inv, -1.0f, 1.0f);
      const float u = std::fma((v + 1.0f) * 0.5f, 65535.0f, 0.5f);
      const uint32_t lut_index = static_cast<uint32_t>(u);
      const float grid = -1.0f + (2.0f * static_cast<float>(lut_index)) / 65535.0f;
      q8[i] = static_cast<uint8_t>(std::lower_bound(mid, mid + 255, grid) - mid);
    }
  }
  return offset;
}

void Nf4DequantizeCpu(const uint8_t* packed, const float* absmax, int64_t n, FloatFormat fmt,
                      void* out) {
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t byte = packed[i / 2];
    const uint8_t code = (i & 1) ? (byte & 0x0F) : (byte >> 4);
    StoreFromFloat(out, fmt, i, kNf4Code[code] * absmax[i / kNf4BlockSize]);
  }
}

void Nf4DequantizeNestedCpu(const uint8_t* packed, const uint8_t* q8, const float* absmax2,
                            const float* map8, float offset, int64_t n, FloatFormat fmt,
                            void* out) {
  const int64_t num_blocks = Nf4NumBlocks(n);
  for (int64_t b = 0; b < num_blocks; ++b) {
    const float scaled = map8[q8[b]] * absmax2[b / kNf4NestedBlockSize];
    const float amax = scaled + offset;
    const int64_t end = std::min((b + 1) * kNf4BlockSize, n);
    for (int64_t i = b * kNf4BlockSize; i < end; ++i) {
      const uint8_t byte = packed[i / 2];
      const uint8_t code = (i & 1) ? (byte & 0x0F) : (byte >> 4);
      StoreFromFloat(out, fmt, i, kNf4Code[code] * amax);
    }
  }
}

}  // namespace rigtune::kernels
