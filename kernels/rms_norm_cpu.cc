// CPU reference for kernels/rms_norm.h: one row at a time, float32 throughout.
#include <cmath>

#include "kernels/rms_norm.h"

namespace rigtune::kernels {

void RmsNormForwardCpu(const void* x, int64_t ld_x, const void* w, int64_t row_begin,
                       int64_t row_end, int64_t cols, float eps, FloatFormat fmt, void* y,
                       int64_t ld_y, float* rstd) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    float sum = 0.0f;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = LoadAsFloat(x, fmt, r * ld_x + c);
      sum += v * v;
    }
    const float inv = 1.0f / std::sqrt(sum / static_cast<float>(cols) + eps);
    rstd[r] = inv;
    for (int64_t c = 0; c < cols; ++c) {
      const float n = RoundToFormat(fmt, LoadAsFloat(x, fmt, r * ld_x + c) * inv);
      StoreFromFloat(y, fmt, r * ld_y + c, LoadAsFloat(w, fmt, c) * n);
    }
  }
}

void RmsNormBackwardCpu(const void* dy, int64_t ld_dy, const void* x, int64_t ld_x,
                        const void* w, const float* rstd, int64_t row_begin, int64_t row_end,
                        int64_t cols, FloatFormat fmt, void* dx, int64_t ld_dx) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    float dot = 0.0f;
    for (int64_t c = 0; c < cols; ++c) {
      const float dn = RoundToFormat(fmt, LoadAsFloat(dy, fmt, r * ld_dy + c) * LoadAsFloat(w, fmt, c));
      dot += dn * LoadAsFloat(x, fmt, r * ld_x + c);
    }
    const float inv = rstd[r];
    const float k = inv * inv * dot / static_cast<float>(cols);
    for (int64_t c = 0; c < cols; ++c) {
      const float dn = RoundToFormat(fmt, LoadAsFloat(dy, fmt, r * ld_dy + c) * LoadAsFloat(w, fmt, c));
      StoreFromFloat(dx, fmt, r * ld_dx + c, inv * (dn - LoadAsFloat(x, fmt, r * ld_x + c) * k));
    }
  }
}

}  // namespace rigtune::kernels
