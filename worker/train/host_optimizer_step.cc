#include "worker/train/host_optimizer_step.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <utility>

namespace rigtune::train {

// Note [Host AdamW overlaps the next forward]
// With dist.offload_optimizer the float32 masters and AdamW moments live in
// host memory and the host runs AdamW. Overlapping the update of layer i
// with the backward of layer i-1 would be wrong whenever clipping is on:
// the clip coefficient needs the global gradient norm, which is known only
// after the last layer's backward (and, under FSDP, after a sum over ranks).
// So the gradients are copied down layer by layer while backward runs (that
// part overlaps), the norm is taken once they are all down, and the update
// runs in forward order on this thread while the next step's forward is
// already running: layer i of the next forward waits only for layer i's
// update. The arithmetic is AdamW::Update, the same as the on-device step.

HostOptimizerStep::~HostOptimizerStep() {
  if (thread_.joinable()) thread_.join();
}

void HostOptimizerStep::Start(AdamW& optimizer, std::vector<at::Tensor> grads, double lr) {
  WaitAll();
  optimizer.BeginStep();
  ++started_;
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = 0;
    count_ = grads.size();
  }
  thread_ = std::thread([this, &optimizer, grads = std::move(grads), lr] {
    c10::NoGradGuard no_grad;
    for (size_t i = 0; i < grads.size(); ++i) {
      try {
        optimizer.Update(i, grads[i], lr);
        if (grads[i].defined()) const_cast<at::Tensor&>(grads[i]).zero_();
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        error_ = std::current_exception();
        done_ = count_;
        cv_.notify_all();
        return;
      }
      std::lock_guard<std::mutex> lock(mu_);
      done_ = i + 1;
      cv_.notify_all();
    }
  });
}

void HostOptimizerStep::WaitFor(size_t i) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !thread_.joinable() || done_ > i || done_ >= count_; });
  if (error_) {
    std::exception_ptr e = std::exchange(error_, nullptr);
    std::rethrow_exception(e);
  }
}

void HostOptimizerStep::WaitAll() {
  if (!thread_.joinable()) return;
  thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  if (error_) {
    std::exception_ptr e = std::exchange(error_, nullptr);
    std::rethrow_exception(e);
  }
}

}  // namespace rigtune::train
