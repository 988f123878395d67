// StepProfiler: where the time of a training step goes, phase by phase.
//
// Code marks a phase with a scope:
//
//   { profile::ScopedPhase phase(profile::Phase::kBaseGemm, x); y = at::matmul(x, w.t()); }
//
// When profiling is off (the default) a scope is one predictable branch and
// records nothing. When on (train_bench --profile), a scope on a CUDA tensor
// records a pair of CUDA events on the current stream, so the GPU's own time
// is measured without synchronizing; on the CPU it reads the steady clock.
// Collect() (once per step, after the step has synchronized) adds the elapsed
// times into per-phase totals.
//
// Note [Leaf phases and envelopes]
// --------------------------------
// Leaf phases (dequantize, base GEMM, LoRA, attention, elementwise, loss,
// optimizer) partition the step: a leaf scope opened inside another leaf scope
// on the same thread is ignored, so no time is counted twice, and the step's
// wall time minus the leaves' sum is what no scope covers (attention backward,
// which runs inside autograd, launch gaps). Envelopes (the no-grad forward pass
// and the recompute + backward walk) overlap the leaves by design and are
// reported apart: the no-grad pass is what activation checkpointing repeats.
#ifndef RIGTUNE_WORKER_PROFILE_STEP_PROFILER_H_
#define RIGTUNE_WORKER_PROFILE_STEP_PROFILER_H_

#include <ATen/core/Tensor.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace rigtune::profile {

enum class Phase : int {
  // Leaves.
  kDequantize = 0,  // NF4 -> compute dtype, forward and backward
  kBaseGemm,        // x · Wᵀ and grad · W
  kLora,            // the adapter's products, forward and backward
  kAttention,       // scaled-dot-product / flash attention forward
  kElementwise,     // RMSNorm, RoPE, SwiGLU (both ways) and residual adds
  kLoss,            // final norm, LM head and cross-entropy, forward and backward
  kOptimizer,       // gradient clipping and AdamW
  // Envelopes.
  kNoGradForward,      // every layer's first (no-grad) forward
  kRecomputeBackward,  // every layer's recompute and backward
  kNumPhases,
};
inline constexpr int kNumLeafPhases = static_cast<int>(Phase::kNoGradForward);
const char* PhaseName(Phase phase);

class StepProfiler {
 public:
  static StepProfiler& Get();
  static bool enabled() { return enabled_; }
  // Turns recording on or off (off by default). Not to be toggled mid-step.
  static void SetEnabled(bool on) { enabled_ = on; }

  // Waits for every recorded phase of the step to finish and adds its time
  // to the totals. Returns false (and keeps nothing) on a CUDA error.
  bool Collect();
  // Forgets the totals (e.g. after a warm-up step).
  void Reset();
  // Milliseconds in `phase` since the last Reset(), over all collected steps.
  double TotalMs(Phase phase) const;
  // A markdown table: each phase's milliseconds per step and share of
  // `step_ms`, the unattributed rest, then the envelopes.
  std::string Table(double step_ms, int64_t steps) const;

 private:
  friend class ScopedPhase;
  struct Pending {
    Phase phase;
    void* start;  // cudaEvent_t, or null for a CPU interval
    void* end;
    double cpu_ms;
  };
  void* NewEvent();  // from the pool, or a fresh one
  void Add(Pending p);

  static bool enabled_;
  mutable std::mutex mu_;
  std::vector<Pending> pending_;                                        // guarded by mu_
  std::vector<void*> free_events_;                                      // guarded by mu_
  std::array<double, static_cast<int>(Phase::kNumPhases)> total_ms_{};  // guarded by mu_
};

// Times its lifetime as `phase` on `like`'s device (see the header comment).
class ScopedPhase {
 public:
  ScopedPhase(Phase phase, const at::Tensor& like) {
    if (StepProfiler::enabled()) Start(phase, like);
  }
  ~ScopedPhase() {
    if (leaf_) Leave();
    if (active_) Stop();
  }
  ScopedPhase(const ScopedPhase&) = delete;
  ScopedPhase& operator=(const ScopedPhase&) = delete;

 private:
  void Start(Phase phase, const at::Tensor& like);
  void Stop();
  void Leave();  // closes this leaf on the thread's nesting count

  bool active_ = false;
  bool leaf_ = false;
  Phase phase_ = Phase::kDequantize;
  void* start_ = nullptr;  // cudaEvent_t when timing a CUDA stream
  void* stream_ = nullptr;
  std::chrono::steady_clock::time_point cpu_start_;
};

}  // namespace rigtune::profile

#endif  // RIGTUNE_WORKER_PROFILE_STEP_PROFILER_H_
