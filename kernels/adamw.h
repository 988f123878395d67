// Multi-tensor AdamW and sum of squares over float32 tensors: one launch
// updates every adapter tensor of the model (and one more reduction gives the
// global gradient norm for clipping), instead of a handful of elementwise
// launches per tensor.
//
// The update is torch.optim.AdamW's (non-fused, decoupled weight decay), as
// worker/train/optimizer.cc spells it with ATen ops, in float32, operation
// by operation (no fused multiply-add, so the CPU twin and the CUDA kernel
// agree bit for bit):
//
//   g  = grad · grad_scale                      (the clipping coefficient)
//   p  = p · (1 − lr·wd)                         (only when wd ≠ 0)
//   m  = lerp(m, g, 1 − β₁)                      (torch.lerp's two-sided form)
//   v  = v · β₂ + ((1 − β₂) · g) · g
//   p  = p + (−step_size · m) / (√v / bc2 + ε)   step_size = lr / (1 − β₁ᵗ),
//                                                bc2 = √(1 − β₂ᵗ)
//
// Scalars are formed in double and rounded to float once, as ATen does with
// a Python scalar argument.
//
// Example (CPU):
//   AdamWTensor t{p, g, m, v, n};
//   AdamWScalars s = MakeAdamWScalars(lr, 0.9, 0.999, 1e-8, 0.0, step, coef);
//   AdamWCpu(&t, 1, s);
#ifndef RIGTUNE_KERNELS_ADAMW_H_
#define RIGTUNE_KERNELS_ADAMW_H_

#include <cstddef>
#include <cstdint>

#ifdef RIGTUNE_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace rigtune::kernels {

// One parameter tensor and its state, all float32, contiguous, `numel` long.
struct AdamWTensor {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  int64_t numel;
};

// The per-step scalars, already rounded to float.
struct AdamWScalars {
  float decay;        // 1 − lr·wd
  bool apply_decay;   // wd ≠ 0
  float lerp_weight;  // 1 − β₁
  float beta2;
  float one_minus_beta2;
  float bc2;          // √(1 − β₂ᵗ)
  float eps;
  float neg_step_size;  // −lr / (1 − β₁ᵗ)
  float grad_scale;
};

// `step` is the 1-based count of the update being made.
AdamWScalars MakeAdamWScalars(double lr, double beta1, double beta2, double eps,
                              double weight_decay, int64_t step, double grad_scale);

// A read-only float32 span, for SumOfSquares.
struct FloatSpan {
  const float* data;
  int64_t numel;
};

void AdamWCpu(const AdamWTensor* tensors, int64_t count, const AdamWScalars& s);
// Σ x² over every span, accumulated in double.
double SumOfSquaresCpu(const FloatSpan* spans, int64_t count);

#ifdef RIGTUNE_WITH_CUDA
// Device scratch the CUDA calls need for `count` tensors (a table of
// pointers, and for SumOfSquares the per-block partial sums).
size_t AdamWScratchBytes(int64_t count);
size_t SumOfSquaresScratchBytes(const FloatSpan* spans, int64_t count);

// Same contracts, device pointers, one update kernel queued on `stream`. The
// host arrays are copied into `scratch` (device memory of AdamWScratchBytes)
// before the call returns, so they may be freed afterwards. Returns the
// first error.
cudaError_t AdamWCuda(const AdamWTensor* tensors, int64_t count, const AdamWScalars& s,
                      void* scratch, cudaStream_t stream);
// Writes Σ x² (double) to `*result` (device memory) in a fixed summation
// order: the same inputs give the same bits on every run.
cudaError_t SumOfSquaresCuda(const FloatSpan* spans, int64_t count, void* scratch,
                             double* result, cudaStream_t stream);
#endif  // RIGTUNE_WITH_CUDA

}  // namespace rigtune::kernels

#endif  // RIGTUNE_KERNELS_ADAMW_H_
