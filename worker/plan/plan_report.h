// A MemoryPlan in words and JSON: the job's first log line, the one-line
// shortfall message (fit_advice.h), and `rigtune plan`'s table and --json.
#ifndef RIGTUNE_WORKER_PLAN_PLAN_REPORT_H_
#define RIGTUNE_WORKER_PLAN_PLAN_REPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "worker/plan/fit_advice.h"
#include "worker/plan/memory_plan.h"

namespace rigtune::plan {

double Gib(int64_t bytes);

// "frozen weights 3.60 + adapter 0.60 + ... + slack 0.28 GiB"
std::string DeviceBreakdown(const DeviceBytes& device);

// One line: "memory plan per GPU: 9.46 GiB of 22.00 GiB (dist.max_gpu_memory_gib)
// = frozen weights ... ; host 1.00 GiB (...)".
std::string PlanLine(const MemoryPlan& plan);

// A few lines for a person: the parts, one per line, then fit or shortfall.
std::string PlanText(const MemoryPlan& plan, const std::vector<FitOption>& options);

// {"fits": bool, "device_bytes": {"total": n, "frozen_weights": n, ...},
//  "host_bytes": {...}, "capacity_bytes": n, "capacity_source": "...",
//  "world_size": n, "trainable_parameters": n,
//  "would_fit": [{"setting": "...", "device_bytes": n}, ...]}
nlohmann::json PlanJson(const MemoryPlan& plan, const std::vector<FitOption>& options);

}  // namespace rigtune::plan

#endif  // RIGTUNE_WORKER_PLAN_PLAN_REPORT_H_
