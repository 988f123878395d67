// CPU reference for kernels/rope.h.
#include "kernels/rope.h"

namespace rigtune::kernels {

void RopeCpu(void* x, int64_t ld_x, const void* cos, const void* sin, int64_t token_begin,
             int64_t token_end, int64_t heads, int64_t head_dim, FloatFormat fmt, bool backward) {
  const int64_t half = head_dim / 2;
  for (int64_t t = token_begin; t < token_end; ++t) {
    const int64_t table = t * head_dim;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t base = t * ld_x + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float a = LoadAsFloat(x, fmt, base + i);
        const float b = LoadAsFloat(x, fmt, base + i + half);
        const float c1 = LoadAsFloat(cos, fmt, table + i);
        const float c2 = LoadAsFloat(cos, fmt, table + i + half);
        const float s1 = LoadAsFloat(sin, fmt, table + i);
        const float s2 = LoadAsFloat(sin, fmt, table + i + half);
        float ya, yb;
        if (backward) {
          ya = a * c1 + b * s2;
          yb = b * c2 - a * s1;
        } else {
          ya = RoundToFormat(fmt, a * c1) + RoundToFormat(fmt, -b * s1);
          yb = RoundToFormat(fmt, b * c2) + RoundToFormat(fmt, a * s2);
        }
        StoreFromFloat(x, fmt, base + i, ya);
        StoreFromFloat(x, fmt, base + i + half, yb);
      }
    }
  }
}

}  // namespace rigtune::kernels
