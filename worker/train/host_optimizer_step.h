// HostOptimizerStep: one AdamW step over host-resident parameters, run on a
// thread of its own, one parameter (one layer's adapter shard) at a time in
// order, so that the next step's forward can use layer 0 as soon as it is
// updated while the thread is still updating the layers after it.
//
// See Note [Host AdamW overlaps the next forward] in host_optimizer_step.cc
// for why the update overlaps the next forward rather than this backward.
//
// Threading: Start() and the Wait*() calls come from the training thread;
// the worker thread touches only the optimizer's parameters and moments and
// the gradients handed to Start(), and the training thread must not touch
// parameter i (or its gradient) before WaitFor(i) returns.
#ifndef RIGTUNE_WORKER_TRAIN_HOST_OPTIMIZER_STEP_H_
#define RIGTUNE_WORKER_TRAIN_HOST_OPTIMIZER_STEP_H_

#include <ATen/core/Tensor.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "worker/train/optimizer.h"

namespace rigtune::train {

class HostOptimizerStep {
 public:
  HostOptimizerStep() = default;
  HostOptimizerStep(const HostOptimizerStep&) = delete;
  HostOptimizerStep& operator=(const HostOptimizerStep&) = delete;
  ~HostOptimizerStep();  // waits for a running step (errors are dropped)

  // Waits for the previous step, counts the new one (optimizer.step() moves
  // on now) and starts updating: for i in order, optimizer.Update(i,
  // grads[i], lr), then grads[i] is zeroed for the next accumulation.
  // `optimizer` and `grads` must outlive the step (WaitAll()).
  void Start(AdamW& optimizer, std::vector<at::Tensor> grads, double lr);
  // Blocks until parameter i of the running step is updated and its
  // gradient zeroed; at once when no step runs. Rethrows the thread's error.
  void WaitFor(size_t i);
  void WaitAll();
  // A step was started and not yet waited for by WaitAll(): its gradients
  // are being zeroed by the thread.
  bool active() const { return thread_.joinable(); }
  // Steps started so far.
  int64_t started() const { return started_; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  size_t done_ = 0;          // guarded by mu_: parameters updated so far
  size_t count_ = 0;         // parameters in the running step
  std::exception_ptr error_;  // guarded by mu_
  std::thread thread_;
  int64_t started_ = 0;
};

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_HOST_OPTIMIZER_STEP_H_
