// Pins the CPU reference of kernels/nf4.h: the behaviours bitsandbytes'
// format depends on (see Note [bitsandbytes NF4 layout]).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/nf4.h"

namespace rigtune::kernels {
namespace {

uint32_t Bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}

float FromBits(uint32_t b) {
  float x;
  std::memcpy(&x, &b, 4);
  return x;
}

struct Quantized {
  std::vector<uint8_t> packed;
  std::vector<float> absmax;
};

Quantized QuantizeFloats(const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  Quantized q{std::vector<uint8_t>(Nf4PackedBytes(n)), std::vector<float>(Nf4NumBlocks(n))};
  Nf4QuantizeCpu(x.data(), FloatFormat::kFloat32, n, q.packed.data(), q.absmax.data());
  return q;
}

uint8_t CodeAt(const Quantized& q, int64_t i) {
  return (i % 2 == 0) ? q.packed[i / 2] >> 4 : q.packed[i / 2] & 0x0F;
}

float Midpoint(int i) { return (kNf4Code[i] + kNf4Code[i + 1]) / 2.0f; }

TEST(Nf4Cpu, FirstElementGoesToHighNibble) {
  const Quantized q = QuantizeFloats({-1.0f, 1.0f, 1.0f, -1.0f});
  ASSERT_EQ(q.packed.size(), 2u);
  EXPECT_EQ(q.packed[0], 0x0F);
  EXPECT_EQ(q.packed[1], 0xF0);
  EXPECT_EQ(q.absmax[0], 1.0f);
}

TEST(Nf4Cpu, OddLengthPadsLastLowNibbleWithZeroCode) {
  const Quantized q = QuantizeFloats({1.0f, -1.0f, 1.0f});
  ASSERT_EQ(q.packed.size(), 2u);
  EXPECT_EQ(q.packed[1], 0xF0 | kNf4ZeroCode);
}

TEST(Nf4Cpu, ValueOnAMidpointTakesTheLowerCode) {
  for (int i = 0; i < 15; ++i) {
    const float m = Midpoint(i);
    // absmax 1.0 makes the scale exactly 1, so the scaled value is m itself.
    const Quantized q = QuantizeFloats({1.0f, m, std::nextafter(m, 2.0f)});
    EXPECT_EQ(CodeAt(q, 1), i) << "midpoint " << i;
    EXPECT_EQ(CodeAt(q, 2), i + 1) << "just above midpoint " << i;
  }
}

TEST(Nf4Cpu, AllZeroBlockGetsZeroCodeAndZeroAbsmax) {
  std::vector<float> x(128, 0.0f);
  x[64] = 0.5f;  // second block is not all zero
  const Quantized q = QuantizeFloats(x);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(q.packed[j], 0x77) << j;
  EXPECT_EQ(q.absmax[0], 0.0f);
  EXPECT_EQ(q.absmax[1], 0.5f);
  std::vector<float> out(128, -1.0f);
  Nf4DequantizeCpu(q.packed.data(), q.absmax.data(), 128, FloatFormat::kFloat32, out.data());
  for (int i = 0; i < 64; ++i) EXPECT_EQ(Bits(out[i]), 0u) << i;
}

TEST(Nf4Cpu, AllZeroPartialBlockStoresTheClampedAbsmax) {
  std::vector<float> x(64 + 10, 0.0f);
  const Quantized q = QuantizeFloats(x);
  EXPECT_EQ(q.absmax[0], 0.0f);
  EXPECT_EQ(q.absmax[1], 1e-38f);
  for (uint8_t byte : q.packed) EXPECT_EQ(byte, 0x77);
}

TEST(Nf4Cpu, PartialBlockHasItsOwnAbsmax) {
  std::vector<float> x(70, 0.25f);
  x[3] = -2.0f;
  x[66] = 0.75f;
  const Quantized q = QuantizeFloats(x);
  ASSERT_EQ(q.absmax.size(), 2u);
  EXPECT_EQ(q.absmax[0], 2.0f);
  EXPECT_EQ(q.absmax[1], 0.75f);
  EXPECT_EQ(CodeAt(q, 66), 15);
}

// Full blocks scale with x * (1 / absmax), the final partial block with
// x / absmax. Find a value where the two land on different sides of a
// midpoint and check each block uses its own rule.
TEST(Nf4Cpu, FullBlockMultipliesByReciprocalPartialBlockDivides) {
  float a = 0.0f, found = 0.0f;
  int code_mul = -1, code_div = -1;
  for (float scale : {3.0f, 7.0f, 11.0f, 0.3f}) {
    for (int i = 0; i < 15 && code_mul < 0; ++i) {
      float x = Midpoint(i) * scale;
      for (int k = 0; k < 64; ++k) x = std::nextafter(x, -10.0f);
      for (int k = 0; k < 128 && code_mul < 0; ++k, x = std::nextafter(x, 10.0f)) {
        const bool mul_above = x * (1.0f / scale) > Midpoint(i);
        const bool div_above = x / scale > Midpoint(i);
        if (mul_above != div_above) {
          a = scale;
          found = x;
          code_mul = i + (mul_above ? 1 : 0);
          code_div = i + (div_above ? 1 : 0);
        }
      }
    }
    if (code_mul >= 0) break;
  }
  ASSERT_GE(code_mul, 0) << "no value separates x*(1/a) from x/a";
  std::vector<float> x(64 + 2, 0.0f);
  x[0] = a;
  x[1] = found;
  x[64] = a;
  x[65] = found;
  const Quantized q = QuantizeFloats(x);
  EXPECT_EQ(CodeAt(q, 1), code_mul);
  EXPECT_EQ(CodeAt(q, 65), code_div);
}

TEST(Nf4Cpu, RoundTripErrorIsWithinHalfTheWidestCodeGap) {
  std::mt19937 rng(7);
  std::student_t_distribution<float> dist(3.0f);
  const int64_t n = 64 * 50 + 17;
  std::vector<float> x(n);
  for (float& v : x) v = 0.02f * dist(rng);
  const Quantized q = QuantizeFloats(x);
  std::vector<float> out(n);
  Nf4DequantizeCpu(q.packed.data(), q.absmax.data(), n, FloatFormat::kFloat32, out.data());
  float widest = 0.0f;
  for (int i = 0; i < 15; ++i) widest = std::max(widest, kNf4Code[i + 1] - kNf4Code[i]);
  for (int64_t i = 0; i < n; ++i) {
    const float bound = q.absmax[i / 64] * (widest / 2.0f) * (1.0f + 1e-6f);
    EXPECT_LE(std::fabs(out[i] - x[i]), bound) << i;
  }
}

TEST(Nf4Cpu, SixteenBitInputsQuantizeLikeTheirFloatValues) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const int64_t n = 200;
  std::vector<uint16_t> bf(n), half(n);
  std::vector<float> bf_f(n), half_f(n);
  for (int64_t i = 0; i < n; ++i) {
    bf[i] = FloatToBf16(dist(rng));
    half[i] = FloatToHalf(dist(rng));
    bf_f[i] = Bf16ToFloat(bf[i]);
    half_f[i] = HalfToFloat(half[i]);
  }
  for (auto [raw, fmt, ref] : {std::tuple{&bf, FloatFormat::kBFloat16, &bf_f},
                               std::tuple{&half, FloatFormat::kFloat16, &half_f}}) {
    Quantized q{std::vector<uint8_t>(Nf4PackedBytes(n)), std::vector<float>(Nf4NumBlocks(n))};
    Nf4QuantizeCpu(raw->data(), fmt, n, q.packed.data(), q.absmax.data());
    const Quantized expected = QuantizeFloats(*ref);
    EXPECT_EQ(q.packed, expected.packed);
    EXPECT_EQ(q.absmax, expected.absmax);
  }
}

TEST(Nf4Cpu, DynamicMapMatchesBitsandbytes) {
  const auto& map = DynamicMap8();
  // Values printed by bitsandbytes 0.50.2: create_dynamic_map()[0, 1, 127, 128, 254, 255].
  EXPECT_EQ(Bits(map[0]), 0xbf7e3333u);
  EXPECT_EQ(Bits(map[1]), 0xbf7a999au);
  EXPECT_EQ(Bits(map[127]), 0u);
  EXPECT_EQ(Bits(map[128]), 0x3513a3b7u);
  EXPECT_EQ(Bits(map[254]), 0x3f7e3333u);
  EXPECT_EQ(map[255], 1.0f);
  for (int i = 1; i < 256; ++i) EXPECT_LT(map[i - 1], map[i]) << i;
}

// Expected values are LibTorch's float32 mean() of the same inputs; a plain
// left-to-right sum gives 0x3f000b90 and 0x3effbfb4 instead.
TEST(Nf4Cpu, AbsmaxMeanFollowsLibTorchSummationOrder) {
  for (auto [n, expected] : {std::pair<int64_t, uint32_t>{1000, 0x3f000b8fu},
                             std::pair<int64_t, uint32_t>{100003, 0x3effbfb2u}}) {
    std::vector<float> x(n);
    for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>((i * 7919) % 1009) / 1009.0f;
    EXPECT_EQ(Bits(Nf4AbsmaxMeanCpu(x.data(), n)), expected) << n;
  }
}

TEST(Nf4Cpu, DoubleQuantMapsExtremesToMapEnds) {
  std::vector<float> absmax(300);
  for (int i = 0; i < 300; ++i) absmax[i] = 0.5f + 0.001f * static_cast<float>(i % 17);
  absmax[5] = 2.0f;   // far above the mean: scaled to +1
  absmax[9] = 0.01f;  // below the mean
  std::vector<uint8_t> q8(300);
  std::vector<float> absmax2(Nf4NumNestedBlocks(300));
  const float offset =
      Nf4DoubleQuantCpu(absmax.data(), 300, DynamicMap8().data(), q8.data(), absmax2.data());
  EXPECT_EQ(offset, Nf4AbsmaxMeanCpu(absmax.data(), 300));
  EXPECT_EQ(absmax2[0], std::fabs(2.0f - offset));
  EXPECT_EQ(q8[5], 255);  // +1 -> the map's 1.0
  EXPECT_LT(q8[9], 127);  // negative side of the map
}

TEST(Nf4Cpu, DoubleQuantOfConstantAbsmaxIsExact) {
  std::vector<float> absmax(260, 0.375f);
  std::vector<uint8_t> q8(260, 99);
  std::vector<float> absmax2(2, -1.0f);
  const float offset =
      Nf4DoubleQuantCpu(absmax.data(), 260, DynamicMap8().data(), q8.data(), absmax2.data());
  EXPECT_EQ(offset, 0.375f);
  EXPECT_EQ(absmax2[0], 0.0f);
  EXPECT_EQ(absmax2[1], 0.0f);
  for (uint8_t c : q8) EXPECT_EQ(c, 0);
}

TEST(Nf4Cpu, NestedDequantizeEqualsDequantizeWithReconstructedAbsmax) {
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  const int64_t n = 64 * 600 + 5;
  std::vector<float> x(n);
  for (float& v : x) v = dist(rng);
  const Quantized q = QuantizeFloats(x);
  const int64_t nb = Nf4NumBlocks(n);
  std::vector<uint8_t> q8(nb);
  std::vector<float> absmax2(Nf4NumNestedBlocks(nb));
  const float* map8 = DynamicMap8().data();
  const float offset = Nf4DoubleQuantCpu(q.absmax.data(), nb, map8, q8.data(), absmax2.data());
  std::vector<float> rebuilt(nb);
  for (int64_t b = 0; b < nb; ++b) rebuilt[b] = map8[q8[b]] * absmax2[b / 256] + offset;
  for (FloatFormat fmt : {FloatFormat::kFloat32, FloatFormat::kBFloat16, FloatFormat::kFloat16}) {
    std::vector<float> a(n), b(n);  // large enough for every format
    Nf4DequantizeNestedCpu(q.packed.data(), q8.data(), absmax2.data(), map8, offset, n, fmt,
                           a.data());
    Nf4DequantizeCpu(q.packed.data(), rebuilt.data(), n, fmt, b.data());
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), n * (fmt == FloatFormat::kFloat32 ? 4 : 2)));
  }
}

TEST(Nf4Cpu, Bf16ConversionRoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBf16(FromBits(0x3F808000u)), 0x3F80);  // tie, even stays
  EXPECT_EQ(FloatToBf16(FromBits(0x3F818000u)), 0x3F82);  // tie, odd rounds up
  EXPECT_EQ(FloatToBf16(FromBits(0x3F808001u)), 0x3F81);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::nanf("")))));
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = Bf16ToFloat(static_cast<uint16_t>(h));
    if (!std::isnan(f)) {
      ASSERT_EQ(FloatToBf16(f), h);
    }
  }
}

TEST(Nf4Cpu, HalfConversionRoundsToNearestEven) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3C00);
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7C00);               // tie above the max rounds to inf
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);  // tie to even: zero
  EXPECT_EQ(FloatToHalf(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(FloatToHalf(-std::ldexp(3.0f, -25)), 0x8002);  // 1.5 units: tie to even 2
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (!std::isnan(f)) {
      ASSERT_EQ(FloatToHalf(f), h) << std::hex << h;
    }
  }
}

}  // namespace
}  // namespace rigtune::kernels
