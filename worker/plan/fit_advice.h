// What would make a job fit its GPUs when PlanMemory says it does not: the
// largest batch, the fewest offload flags, the largest LoRA rank and, at
// batch 1, the longest context, each the job with one kind of change.
//
//   if (absl::Status s = CheckFits(model, job, device); !s.ok()) return s;
//   // INVALID_ARGUMENT: "does not fit: needs 25.31 GiB per GPU, 22.00 GiB
//   // available (dist.max_gpu_memory_gib): frozen weights 16.93 + ...;
//   // would fit: train.batch_size=1 (21.02 GiB), lora.r=16 (20.10 GiB)"
#ifndef RIGTUNE_WORKER_PLAN_FIT_ADVICE_H_
#define RIGTUNE_WORKER_PLAN_FIT_ADVICE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/plan/memory_plan.h"

namespace rigtune::plan {

// What the messages say when no single change makes the job fit.
inline constexpr const char* kNothingFits =
    "nothing fits at batch 1 with every offload and a smaller lora.r: use more GPUs (gpus) or a "
    "larger card";

struct FitOption {
  std::string setting;       // job fields as key=value, e.g. "dist.cpu_offload=true"
  int64_t device_bytes = 0;  // the plan's total with that setting
};

// Empty when the job fits (or the capacity is unknown) or when nothing helps.
std::vector<FitOption> SuggestFits(const model::ModelConfig& model, const train::JobConfig& job,
                                   const PlanDevice& device);

// OK when the job fits; else INVALID_ARGUMENT with ShortfallMessage.
absl::Status CheckFits(const model::ModelConfig& model, const train::JobConfig& job,
                       const PlanDevice& device);

// One line: the need, the capacity and its source, the parts, and the
// settings that would fit (or what to do when none would).
std::string ShortfallMessage(const MemoryPlan& plan, const std::vector<FitOption>& options);

}  // namespace rigtune::plan

#endif  // RIGTUNE_WORKER_PLAN_FIT_ADVICE_H_
