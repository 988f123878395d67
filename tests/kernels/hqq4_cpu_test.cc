// Pins the CPU reference of kernels/hqq4.h: hqq's packing and the rounding
// of Note [hqq4 layout and rounding]. Equality with Hqq4Tensor (and so with
// the hqq package) is tests/worker/quant/hqq4_tensor_test.cc.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "kernels/hqq4.h"

namespace rigtune::kernels {
namespace {

TEST(Hqq4Cpu, HighNibbleIsTheFirstHalfLowNibbleTheSecond) {
  // Two groups: group 0 from the high nibbles, group 1 from the low ones.
  std::vector<uint8_t> packed(64);
  for (int p = 0; p < 64; ++p) packed[p] = static_cast<uint8_t>((p % 16) << 4 | (15 - p % 16));
  const std::vector<float> scale = {1.0f, 2.0f}, zero = {0.0f, 0.5f};
  std::vector<float> out(128);
  Hqq4DequantizeCpu(packed.data(), scale.data(), zero.data(), 128, FloatFormat::kFloat32,
                    out.data());
  for (int p = 0; p < 64; ++p) {
    EXPECT_EQ(out[p], static_cast<float>(p % 16)) << p;
    EXPECT_EQ(out[64 + p], (static_cast<float>(15 - p % 16) - 0.5f) * 2.0f) << p;
  }
}

TEST(Hqq4Cpu, GroupsFollowTheirOwnScaleAndZero) {
  // Six groups (three per half): byte p serves groups p / 64 and p / 64 + 3.
  const int64_t n = 6 * 64;
  std::vector<uint8_t> packed(n / 2, 0x71);  // high 7, low 1
  std::vector<float> scale(6), zero(6);
  for (int g = 0; g < 6; ++g) {
    scale[g] = 0.25f * static_cast<float>(g + 1);
    zero[g] = static_cast<float>(g);
  }
  std::vector<float> out(n);
  Hqq4DequantizeCpu(packed.data(), scale.data(), zero.data(), n, FloatFormat::kFloat32, out.data());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t g = i / 64;
    const float q = g < 3 ? 7.0f : 1.0f;
    EXPECT_EQ(out[i], (q - zero[g]) * scale[g]) << i;
  }
}

TEST(Hqq4Cpu, SubtractsThenMultipliesInFloat32AndRoundsOnce) {
  // (q − zero) · scale with two float32 roundings: here q·scale − zero·scale
  // or a fused multiply-add would give other bits.
  const float zero = 0.1f, scale = 1.0f / 3.0f;
  std::vector<uint8_t> packed(64, 0x30);  // high 3 (group 0), low 0 (group 1)
  const std::vector<float> scales = {scale, scale}, zeros = {zero, zero};
  std::vector<float> f32(128);
  Hqq4DequantizeCpu(packed.data(), scales.data(), zeros.data(), 128, FloatFormat::kFloat32,
                    f32.data());
  volatile float diff = 3.0f - zero;  // volatile: no contraction in the test either
  const float expected = diff * scale;
  EXPECT_EQ(f32[0], expected);
  EXPECT_NE(f32[0], 3.0f * scale - zero * scale);
  // bf16 and fp16: the float32 result rounded once, not each step in 16 bits.
  std::vector<uint16_t> bf16(128), fp16(128);
  Hqq4DequantizeCpu(packed.data(), scales.data(), zeros.data(), 128, FloatFormat::kBFloat16,
                    bf16.data());
  Hqq4DequantizeCpu(packed.data(), scales.data(), zeros.data(), 128, FloatFormat::kFloat16,
                    fp16.data());
  EXPECT_EQ(bf16[0], FloatToBf16(expected));
  EXPECT_EQ(fp16[0], FloatToHalf(expected));
  EXPECT_EQ(bf16[64], FloatToBf16(-zero * scale));
}

}  // namespace
}  // namespace rigtune::kernels
