// CPU reference for kernels/adamw.h: the same float32 operations in the same
// order as the CUDA kernel, one element at a time.
#include <cmath>

#include "kernels/adamw.h"

namespace rigtune::kernels {

AdamWScalars MakeAdamWScalars(double lr, double beta1, double beta2, double eps,
                              double weight_decay, int64_t step, double grad_scale) {
  const double t = static_cast<double>(step);
  AdamWScalars s;
  s.decay = static_cast<float>(1.0 - lr * weight_decay);
  s.apply_decay = weight_decay != 0;
  s.lerp_weight = static_cast<float>(1.0 - beta1);
  s.beta2 = static_cast<float>(beta2);
  s.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  s.bc2 = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, t)));
  s.eps = static_cast<float>(eps);
  s.neg_step_size = static_cast<float>(-(lr / (1.0 - std::pow(beta1, t))));
  s.grad_scale = static_cast<float>(grad_scale);
  return s;
}

void AdamWCpu(const AdamWTensor* tensors, int64_t count, const AdamWScalars& s) {
  // Each operation is its own statement and the file is built without
  // -mfma, so every intermediate is rounded to float as in the kernel.
  for (int64_t k = 0; k < count; ++k) {
    const AdamWTensor& t = tensors[k];
    for (int64_t i = 0; i < t.numel; ++i) {
      const float g = t.grad[i] * s.grad_scale;
      float p = t.param[i];
      if (s.apply_decay) p = p * s.decay;
      const float m0 = t.exp_avg[i];
      const float diff = g - m0;
      const float m = s.lerp_weight < 0.5f ? m0 + s.lerp_weight * diff
                                           : g - diff * (1.0f - s.lerp_weight);
      const float gg = s.one_minus_beta2 * g;
      const float v = t.exp_avg_sq[i] * s.beta2 + gg * g;
      const float denom = std::sqrt(v) / s.bc2 + s.eps;
      const float num = s.neg_step_size * m;
      t.param[i] = p + num / denom;
      t.exp_avg[i] = m;
      t.exp_avg_sq[i] = v;
    }
  }
}

double SumOfSquaresCpu(const FloatSpan* spans, int64_t count) {
  double sum = 0;
  for (int64_t k = 0; k < count; ++k) {
    for (int64_t i = 0; i < spans[k].numel; ++i) {
      const double x = spans[k].data[i];
      sum += x * x;
    }
  }
  return sum;
}

}  // namespace rigtune::kernels
