#include "worker/profile/step_profiler.h"

#include "absl/strings/str_format.h"

#ifdef RIGTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime_api.h>
#endif

namespace rigtune::profile {
namespace {

// Open leaf scopes on this thread (autograd runs backward on its own thread).
thread_local int leaf_depth = 0;

bool IsLeaf(Phase phase) { return static_cast<int>(phase) < kNumLeafPhases; }

}  // namespace

bool StepProfiler::enabled_ = false;

const char* PhaseName(Phase phase) {
  static const char* kNames[] = {"dequantize (NF4 -> bf16)",
                                 "base GEMMs (x·Wᵀ, grad·W)",
                                 "LoRA products",
                                 "attention forward",
                                 "norms, RoPE, SwiGLU, residual",
                                 "LM head + loss",
                                 "clip + AdamW",
                                 "no-grad forward pass (recompute repeats it)",
                                 "recompute + backward walk"};
  return kNames[static_cast<int>(phase)];
}

StepProfiler& StepProfiler::Get() {
  static StepProfiler* profiler = new StepProfiler();
  return *profiler;
}

void* StepProfiler::NewEvent() {
#ifdef RIGTUNE_WITH_CUDA
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_events_.empty()) {
      void* e = free_events_.back();
      free_events_.pop_back();
      return e;
    }
  }
  cudaEvent_t e = nullptr;
  if (cudaEventCreate(&e) != cudaSuccess) return nullptr;
  return e;
#else
  return nullptr;
#endif
}

void StepProfiler::Add(Pending p) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.push_back(p);
}

bool StepProfiler::Collect() {
  std::lock_guard<std::mutex> lock(mu_);
  bool ok = true;
  for (const Pending& p : pending_) {
    double ms = p.cpu_ms;
#ifdef RIGTUNE_WITH_CUDA
    if (p.start != nullptr) {
      auto start = static_cast<cudaEvent_t>(p.start), end = static_cast<cudaEvent_t>(p.end);
      float elapsed = 0;
      ok = ok && cudaEventSynchronize(end) == cudaSuccess &&
           cudaEventElapsedTime(&elapsed, start, end) == cudaSuccess;
      ms = elapsed;
      free_events_.push_back(p.start);
      free_events_.push_back(p.end);
    }
#endif
    if (ok) total_ms_[static_cast<int>(p.phase)] += ms;
  }
  pending_.clear();
  return ok;
}

void StepProfiler::Reset() {
  std::lock_guard<std::mutex> lock(mu_);
  total_ms_.fill(0.0);
}

double StepProfiler::TotalMs(Phase phase) const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_ms_[static_cast<int>(phase)];
}

std::string StepProfiler::Table(double step_ms, int64_t steps) const {
  const double n = steps > 0 ? static_cast<double>(steps) : 1.0;
  std::string out = "| phase | ms/step | share of step |\n|---|---|---|\n";
  double covered = 0;
  for (int i = 0; i < static_cast<int>(Phase::kNumPhases); ++i) {
    const auto phase = static_cast<Phase>(i);
    const double ms = TotalMs(phase) / n;
    if (i == kNumLeafPhases) {
      out += absl::StrFormat("| other (attention backward, adds, gaps) | %.1f | %.1f%% |\n",
                             step_ms - covered, 100 * (step_ms - covered) / step_ms);
      out += absl::StrFormat("| **step (wall)** | **%.1f** | 100%% |\n", step_ms);
    }
    if (IsLeaf(phase)) covered += ms;
    out += absl::StrFormat("| %s%s | %.1f | %.1f%% |\n",
                           IsLeaf(phase) ? "" : "envelope: ", PhaseName(phase), ms,
                           100 * ms / step_ms);
  }
  return out;
}

void ScopedPhase::Start(Phase phase, const at::Tensor& like) {
  leaf_ = IsLeaf(phase);
  if (leaf_ && leaf_depth++ > 0) return;  // inside another leaf: counted there
  active_ = true;
  phase_ = phase;
#ifdef RIGTUNE_WITH_CUDA
  if (like.defined() && like.is_cuda()) {
    StepProfiler& p = StepProfiler::Get();
    start_ = p.NewEvent();
    stream_ = at::cuda::getCurrentCUDAStream(like.device().index()).stream();
    if (start_ != nullptr) {
      cudaEventRecord(static_cast<cudaEvent_t>(start_), static_cast<cudaStream_t>(stream_));
      return;
    }
  }
#endif
  cpu_start_ = std::chrono::steady_clock::now();
}

void ScopedPhase::Leave() { --leaf_depth; }

void ScopedPhase::Stop() {
  StepProfiler& p = StepProfiler::Get();
#ifdef RIGTUNE_WITH_CUDA
  if (start_ != nullptr) {
    void* end = p.NewEvent();
    if (end != nullptr) {
      cudaEventRecord(static_cast<cudaEvent_t>(end), static_cast<cudaStream_t>(stream_));
      p.Add({phase_, start_, end, 0.0});
    }
    return;
  }
#endif
  const std::chrono::duration<double, std::milli> ms =
      std::chrono::steady_clock::now() - cpu_start_;
  p.Add({phase_, nullptr, nullptr, ms.count()});
}

}  // namespace rigtune::profile
