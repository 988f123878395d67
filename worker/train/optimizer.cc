#include "worker/train/optimizer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/train/fused_adamw.h"

namespace rigtune::train {
namespace {
enum ScheduleKind { kConstant = 0, kLinear = 1, kCosine = 2 };

// Σ g² through ATen, per tensor in float64 (any device, any dtype).
double ReferenceSquaredNorm(const std::vector<at::Tensor>& grads) {
  std::vector<at::Tensor> norms;
  for (const at::Tensor& g : grads) {
    // In float64: the norm then does not depend, to float32 precision, on how
    // the gradients are split into tensors (one per adapter matrix, or one
    // flat buffer per layer under FSDP and weight streaming), so every layer
    // source clips by the same coefficient.
    if (g.defined()) {
      norms.push_back(at::linalg_vector_norm(g, 2, std::nullopt, false, at::kDouble).reshape({1}));
    }
  }
  if (norms.empty()) return 0;
  const double n = at::linalg_vector_norm(at::cat(norms), 2).item<double>();
  return n * n;
}
}  // namespace

AdamW::AdamW(std::vector<at::Tensor> params, AdamWOptions options)
    : params_(std::move(params)), options_(options) {
  for (const at::Tensor& p : params_) {
    exp_avg_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
    exp_avg_sq_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
  }
}

void AdamW::Step(const std::vector<at::Tensor>& grads, double lr, double grad_scale) {
  BeginStep();
  if (CanFuseAdamW(params_, grads, exp_avg_, exp_avg_sq_)) {
    FusedAdamWStep(params_, grads, exp_avg_, exp_avg_sq_, Scalars(lr, grad_scale));
    // The kernel writes through raw pointers: bump the version counters as
    // an ATen in-place op would, so that what was computed from the old
    // values notices (Note [DoRA norm cache] in worker/lora/dora.h).
    for (at::Tensor& p : params_) p.unsafeGetTensorImpl()->bump_version();
    return;
  }
  c10::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    // g·scale rounded to float first, as the kernel does (and as clipping the
    // gradients in place before the step did).
    const bool scaled = grad_scale != 1.0 && grads[i].defined();
    Update(i, scaled ? grads[i] * grad_scale : grads[i], lr);
  }
}

kernels::AdamWScalars AdamW::Scalars(double lr, double grad_scale) const {
  return kernels::MakeAdamWScalars(lr, options_.beta1, options_.beta2, options_.eps,
                                   options_.weight_decay, step_, grad_scale);
}

void AdamW::Update(size_t i, const at::Tensor& g, double lr) {
  c10::NoGradGuard no_grad;
  if (!g.defined()) return;
  const double bc1 = 1.0 - std::pow(options_.beta1, static_cast<double>(step_));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(options_.beta2, static_cast<double>(step_)));
  const double step_size = lr / bc1;
  at::Tensor& p = params_[i];
  if (options_.weight_decay != 0) p.mul_(1.0 - lr * options_.weight_decay);
  exp_avg_[i].lerp_(g, 1.0 - options_.beta1);
  exp_avg_sq_[i].mul_(options_.beta2).addcmul_(g, g, 1.0 - options_.beta2);
  at::Tensor denom = (exp_avg_sq_[i].sqrt() / bc2_sqrt).add_(options_.eps);
  p.addcdiv_(exp_avg_[i], denom, -step_size);
}

absl::StatusOr<LrSchedule> LrSchedule::Create(const std::string& kind, double base_lr,
                                              int64_t warmup_steps, int64_t total_steps) {
  int k;
  if (kind == "constant") k = kConstant;
  else if (kind == "linear") k = kLinear;
  else if (kind == "cosine") k = kCosine;
  else {
    return absl::InvalidArgumentError(absl::StrCat(
        "optim.schedule: unknown schedule '", kind, "' (use constant, linear or cosine)"));
  }
  return LrSchedule(k, base_lr, warmup_steps, total_steps);
}

double LrSchedule::LearningRate(int64_t s) const {
  if (warmup_ > 0 && s < warmup_) return base_lr_ * static_cast<double>(s) / warmup_;
  if (kind_ == kConstant) return base_lr_;
  const double span = std::max<int64_t>(1, total_ - warmup_);
  const double progress = static_cast<double>(s - warmup_) / span;
  if (kind_ == kLinear) return base_lr_ * std::max(0.0, 1.0 - progress);
  return base_lr_ * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
}

double GlobalGradNorm(const std::vector<at::Tensor>& grads,
                      const std::function<double(double)>& squared_norm_reducer) {
  c10::NoGradGuard no_grad;
  double squared = 0;
  if (std::optional<double> fused = FusedSumOfSquares(grads)) {
    squared = *fused;
  } else {
    squared = ReferenceSquaredNorm(grads);
  }
  if (squared_norm_reducer) squared = squared_norm_reducer(squared);
  return std::sqrt(squared);
}

double ClipCoefficient(double total_norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  return std::min(1.0, max_norm / (total_norm + 1e-6));
}

double ClipGradNorm(const std::vector<at::Tensor>& grads, double max_norm,
                    const std::function<double(double)>& squared_norm_reducer) {
  c10::NoGradGuard no_grad;
  const double total_norm = GlobalGradNorm(grads, squared_norm_reducer);
  const double coef = ClipCoefficient(total_norm, max_norm);
  if (coef < 1.0) {
    for (const at::Tensor& g : grads) {
      if (g.defined()) const_cast<at::Tensor&>(g).mul_(coef);
    }
  }
  return total_norm;
}


}  // namespace rigtune::train
