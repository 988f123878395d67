// CPU conversions between float32 and the 16-bit formats (kernels/float_format.h).
#include "kernels/float_format.h"

#include <cstring>

namespace rigtune::kernels {
namespace {

uint32_t FloatBits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}

float BitsFloat(uint32_t b) {
  float x;
  std::memcpy(&x, &b, sizeof(x));
  return x;
}

}  // namespace

uint16_t FloatToBf16(float x) {
  const uint32_t b = FloatBits(x);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((b >> 16) | 0x40u);
  return static_cast<uint16_t>((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

float Bf16ToFloat(uint16_t bits) { return BitsFloat(static_cast<uint32_t>(bits) << 16); }

uint16_t FloatToHalf(float x) {
  const uint32_t b = FloatBits(x);
  const uint32_t sign = (b >> 16) & 0x8000u;
  const uint32_t a = b & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
  if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65520: inf
  if (a >= 0x38800000u) {                                              // normal half
    uint32_t h = (a - 0x38000000u) >> 13;
    const uint32_t rem = a & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  if (a <= 0x33000000u) return static_cast<uint16_t>(sign);  // <= 2^-25: zero
  const uint32_t mant = (a & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126u - (a >> 23);  // 14..24
  uint32_t h = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float HalfToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exp = (bits >> 10) & 0x1Fu;
  uint32_t mant = bits & 0x3FFu;
  if (exp == 0x1F) return BitsFloat(sign | 0x7F800000u | (mant << 13));
  if (exp != 0) return BitsFloat(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return BitsFloat(sign);
  int e = 113;  // subnormal: normalize
  while ((mant & 0x400u) == 0) {
    mant <<= 1;
    --e;
  }
  return BitsFloat(sign | (static_cast<uint32_t>(e) << 23) | ((mant & 0x3FFu) << 13));
}

float LoadAsFloat(const void* in, FloatFormat fmt, int64_t i) {
  switch (fmt) {
    case FloatFormat::kFloat32:
      return static_cast<const float*>(in)[i];
    case FloatFormat::kFloat16:
      return HalfToFloat(static_cast<const uint16_t*>(in)[i]);
    case FloatFormat::kBFloat16:
      return Bf16ToFloat(static_cast<const uint16_t*>(in)[i]);
  }
  return 0.0f;
}

void StoreFromFloat(void* out, FloatFormat fmt, int64_t i, float v) {
  switch (fmt) {
    case FloatFormat::kFloat32:
      static_cast<float*>(out)[i] = v;
      return;
    case FloatFormat::kFloat16:
      static_cast<uint16_t*>(out)[i] = FloatToHalf(v);
      return;
    case FloatFormat::kBFloat16:
      static_cast<uint16_t*>(out)[i] = FloatToBf16(v);
      return;
  }
}

float RoundToFormat(FloatFormat fmt, float v) {
  switch (fmt) {
    case FloatFormat::kFloat32:
      return v;
    case FloatFormat::kFloat16:
      return HalfToFloat(FloatToHalf(v));
    case FloatFormat::kBFloat16:
      return Bf16ToFloat(FloatToBf16(v));
  }
  return v;
}

}  // namespace rigtune::kernels
