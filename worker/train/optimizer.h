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
  // learning rate `lr`. Parameters are updated in place, without autograd.
  void Step(const std::vector<at::Tensor>& grads, double lr);
  // The same step in parts (a host thread updating layer by layer):
  // BeginStep() once, then Update(i, ...) for every parameter, in any order.
  void BeginStep() { ++step_; }
  void Update(size_t i, const at::Tensor& grad, double lr);

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

// Scales `grads` in place so that their global L2 norm is at most max_norm
// (torch.nn.utils.clip_grad_norm_); returns the norm before clipping.
// `squared_norm_reducer`, when given, sums the local squared norm across
// ranks (FSDP: each rank holds a slice of the gradients).
double ClipGradNorm(const std::vector<at::Tensor>& grads, double max_norm,
                    const std::function<double(double)>& squared_norm_reducer = {});

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_OPTIMIZER_H_
