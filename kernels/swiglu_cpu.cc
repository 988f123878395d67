// CPU reference for kernels/swiglu.h.
#include <cmath>

#include "kernels/swiglu.h"

namespace rigtune::kernels {
namespace {

float Sigmoid(float g) { return 1.0f / (1.0f + std::exp(-g)); }

}  // namespace

void SwigluForwardCpu(const void* gate, int64_t ld_gate, const void* up, int64_t ld_up,
                      int64_t row_begin, int64_t row_end, int64_t cols, FloatFormat fmt,
                      void* out, int64_t ld_out) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float g = LoadAsFloat(gate, fmt, r * ld_gate + c);
      const float s = RoundToFormat(fmt, g * Sigmoid(g));
      StoreFromFloat(out, fmt, r * ld_out + c, s * LoadAsFloat(up, fmt, r * ld_up + c));
    }
  }
}

void SwigluBackwardCpu(const void* dout, int64_t ld_out, const void* gate, int64_t ld_gate,
                       const void* up, int64_t ld_up, int64_t row_begin, int64_t row_end,
                       int64_t cols, FloatFormat fmt, void* dgate, int64_t ld_dgate, void* dup,
                       int64_t ld_dup) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float d = LoadAsFloat(dout, fmt, r * ld_out + c);
      const float g = LoadAsFloat(gate, fmt, r * ld_gate + c);
      const float u = LoadAsFloat(up, fmt, r * ld_up + c);
      const float sig = Sigmoid(g);
      const float s = RoundToFormat(fmt, g * sig);
      const float ds = RoundToFormat(fmt, d * u);
      StoreFromFloat(dgate, fmt, r * ld_dgate + c, ds * (sig * (1.0f + g * (1.0f - sig))));
      StoreFromFloat(dup, fmt, r * ld_dup + c, d * s);
    }
  }
}

}  // namespace rigtune::kernels
