// AdamW with decoupled weight decay and the learning-rate schedules users know
// from transformers (constant, linear, cosine; each with linear warmup).
//
// The update is PyTorch's torch.optim.AdamW (non-fused) step for step, so a
// trajectory matches a Python run with the same hyperparameters. State is
// float32 and lives beside each parameter (on each rank: beside its shard).
#ifndef RIGTUNE_WORKER_TRAIN_OPTIMIZER_H_
#define RIGTUNE_WORKER_TRAIN_OPTIMIZER_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/adamw.h"

namespace rigtune::train {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

class AdamW {
 public:
  AdamW(std::vector<at::Tensor> params, AdamWOptions options);

  // One update of every parameter from `grads` (same order and shapes) at
  // learning rate `lr`, each gradient taken times `grad_scale` (the clipping
  // coefficient; `grads` themselves are left as they are). Parameters are
  // updated in place, without autograd. On one CUDA device, with float32
  // contiguous tensors, the whole step is one multi-tensor kernel
  // (worker/train/fused_adamw.h); elsewhere Update() below, per tensor.
  void Step(const std::vector<at::Tensor>& grads, double lr, double grad_scale = 1.0);
  // The same step in parts (a host thread updating layer by layer):
  // BeginStep() once, then Update(i, ...) for every parameter, in any order.
  void BeginStep() { ++step_; }
  void Update(size_t i, const at::Tensor& grad, double lr);
  // The kernels' scalars for the step under way (after BeginStep()).
  kernels::AdamWScalars Scalars(double lr, double grad_scale) const;

  int64_t step() const { return step_; }
  const std::vector<at::Tensor>& params() const { return params_; }
  // Moments, in parameter order (for checkpoints).
  std::vector<at::Tensor>& exp_avg() { return exp_avg_; }
  std::vector<at::Tensor>& exp_avg_sq() { return exp_avg_sq_; }
  void set_step(int64_t step) { step_ = step; }

 private:
  std::vector<at::Tensor> params_;
  AdamWOptions options_;
  std::vector<at::Tensor> exp_avg_;
  std::vector<at::Tensor> exp_avg_sq_;
  int64_t step_ = 0;
};

// transformers' get_{constant,linear,cosine}_schedule_with_warmup: the
// multiplier for the step about to run, given the optimizer steps already done.
class LrSchedule {
 public:
  // Fails on an unknown kind (names the field optim.schedule).
  static absl::StatusOr<LrSchedule> Create(const std::string& kind, double base_lr,
                                           int64_t warmup_steps, int64_t total_steps);
  double LearningRate(int64_t steps_done) const;

 private:
  LrSchedule(int kind, double base_lr, int64_t warmup, int64_t total)
      : kind_(kind), base_lr_(base_lr), warmup_(warmup), total_(total) {}
  int kind_;
  double base_lr_;
  int64_t warmup_;
  int64_t total_;
};

// The global L2 norm of `grads` (undefined entries skipped), accumulated in
// float64. `squared_norm_reducer`, when given, sums the local squared norm
// across ranks (FSDP: each rank holds a slice of the gradients). On one CUDA
// device with float32 contiguous gradients this is one multi-tensor
// reduction.
double GlobalGradNorm(const std::vector<at::Tensor>& grads,
                      const std::function<double(double)>& squared_norm_reducer = {});

// torch.nn.utils.clip_grad_norm_'s factor: min(1, max_norm / (norm + 1e-6)),
// or 1 when max_norm <= 0 (no clipping).
double ClipCoefficient(double total_norm, double max_norm);

// Scales `grads` in place so that their global L2 norm is at most max_norm
// (torch.nn.utils.clip_grad_norm_); returns the norm before clipping. The
// trainer instead hands ClipCoefficient to AdamW::Step, which folds it into
// the update without a pass over the gradients.
double ClipGradNorm(const std::vector<at::Tensor>& grads, double max_norm,
                    const std::function<double(double)>& squared_norm_reducer = {});

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_OPTIMIZER_H_
