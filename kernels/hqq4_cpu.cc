// CPU reference of kernels/hqq4.h (Note [hqq4 layout and rounding]).
#include <cstdint>

#include "kernels/hqq4.h"

namespace rigtune::kernels {

void Hqq4DequantizeCpu(const uint8_t* packed, const float* scale, const float* zero, int64_t n,
                       FloatFormat fmt, void* out) {
  const int64_t half = Hqq4PackedBytes(n);
  const int64_t half_groups = Hqq4NumGroups(half);
  for (int64_t p = 0; p < half; ++p) {
    const int64_t g = p / kHqq4GroupSize;
    const float hi = static_cast<float>(packed[p] >> 4);
    const float lo = static_cast<float>(packed[p] & 0x0F);
    StoreFromFloat(out, fmt, p, (hi - zero[g]) * scale[g]);
    StoreFromFloat(out, fmt, half + p, (lo - zero[half_groups + g]) * scale[half_groups + g]);
  }
}

}  // namespace rigtune::kernels
