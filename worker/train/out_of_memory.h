// Out of memory is an error, not a crash: a CUDA out-of-memory error
// anywhere in a job (loading, forward, backward, optimizer, checkpoint)
// becomes one line naming what was being allocated, the cap, the peak and
// the memory planner's suggestion. RunJob catches c10::OutOfMemoryError
// once, around the whole run, and hands its text without the C++ backtrace
// (what_without_backtrace()) to OutOfMemoryStatus.
//
//   RESOURCE_EXHAUSTED: rank 0: out of memory on cuda:0 during step 3: tried
//   to allocate 224.00 MiB with 21.76 GiB allocated at the peak, cap 22.00 GiB
//   (dist.max_gpu_memory_gib); planned 23.10 GiB; would fit: train.batch_size=1 (...)
#ifndef RIGTUNE_WORKER_TRAIN_OUT_OF_MEMORY_H_
#define RIGTUNE_WORKER_TRAIN_OUT_OF_MEMORY_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "worker/plan/memory_plan.h"

namespace rigtune::train {

struct OutOfMemoryContext {
  int rank = 0;
  std::string device;            // "cuda:0"
  std::string phase;             // "loading the model", "step 3", ...
  int64_t peak_allocated = 0;    // the allocator's peak when it failed
  const model::ModelConfig* model = nullptr;  // null when loading failed before the config
  const JobConfig* job = nullptr;
  plan::PlanDevice device_plan;  // the capacity the job was planned against
};

// The bytes in LibTorch's "Tried to allocate 224.00 MiB" (B, KiB, MiB, GiB);
// nullopt when the text has none.
std::optional<int64_t> RequestedBytes(const std::string& error_text);

// RESOURCE_EXHAUSTED with one line (no backtrace, no newline) from the
// error's text and what the run knew when it happened.
absl::Status OutOfMemoryStatus(const std::string& error_text, const OutOfMemoryContext& context);

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_OUT_OF_MEMORY_H_
