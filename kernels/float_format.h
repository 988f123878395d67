// Element formats shared by every kernel: float32, float16 and bfloat16,
// the 16-bit ones travelling as uint16_t bit patterns, plus the CPU
// conversions (round to nearest even, NaN stays NaN) the references use.
#ifndef RIGTUNE_KERNELS_FLOAT_FORMAT_H_
#define RIGTUNE_KERNELS_FLOAT_FORMAT_H_

#include <cstdint>

namespace rigtune::kernels {

// The element formats the kernels read and write.
enum class FloatFormat { kFloat32, kFloat16, kBFloat16 };

// Bit conversions, round-to-nearest-even; NaN stays NaN.
uint16_t FloatToBf16(float x);
float Bf16ToFloat(uint16_t bits);
uint16_t FloatToHalf(float x);
float HalfToFloat(uint16_t bits);

// Element i of a buffer in format `fmt`, as float32.
float LoadAsFloat(const void* in, FloatFormat fmt, int64_t i);
// Rounds `v` into format `fmt` and stores it as element i.
void StoreFromFloat(void* out, FloatFormat fmt, int64_t i, float v);
// `v` rounded to `fmt` and back: what a tensor of that format would hold.
float RoundToFormat(FloatFormat fmt, float v);

}  // namespace rigtune::kernels

#endif  // RIGTUNE_KERNELS_FLOAT_FORMAT_H_
