// Scheduler: which queued jobs start now, and on which GPUs.
//
// Order: higher priority first, then first come first served. A job starts
// when its GPU count is free; a job that does not fit holds back every later
// job of its kind (GPU or CPU) so that big jobs are never starved by a stream
// of small ones. GPU jobs and CPU jobs (gpus = 0) draw from separate pools:
// the rig's GPUs, and `cpu_slots` concurrent CPU ranks.
//
// Pure bookkeeping, no processes and no I/O; not thread-safe (the
// Coordinator calls it under its own mutex).
#ifndef RIGTUNE_SERVER_SCHEDULER_H_
#define RIGTUNE_SERVER_SCHEDULER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace rigtune::server {

struct QueuedJob {
  std::string id;
  int gpus = 0;  // 0: one CPU rank
  int priority = 0;
  int64_t arrival = 0;  // smaller came first
};

struct Placement {
  std::string id;
  std::vector<int> gpus;  // GPU indices; empty for a CPU job
};

class Scheduler {
 public:
  Scheduler(std::vector<int> gpus, int cpu_slots);

  // The queue in start order.
  static std::vector<QueuedJob> Order(std::vector<QueuedJob> queue);

  // Picks the jobs of `queue` that start now and reserves their resources.
  std::vector<Placement> Schedule(const std::vector<QueuedJob>& queue);

  // Reserves specific resources for a job already running (daemon restart).
  void Reserve(const Placement& placement);
  // Frees whatever `id` holds; a no-op for an unknown id.
  void Release(const std::string& id);

  int total_gpus() const { return static_cast<int>(gpus_.size()); }
  int free_gpus() const;
  const std::vector<int>& gpus() const { return gpus_; }

 private:
  std::vector<int> gpus_;
  int cpu_slots_;
  std::map<int, std::string> gpu_owner_;         // GPU index -> job id
  std::map<std::string, std::vector<int>> held_;  // job id -> GPUs (empty: a CPU slot)
};

// The rig's GPUs: "auto" counts /proc/driver/nvidia/gpus entries, "none" is
// no GPU, "0,1,3" lists indices. INVALID_ARGUMENT names the bad entry.
absl::StatusOr<std::vector<int>> ParseGpuInventory(const std::string& spec,
                                                   const std::string& proc_dir =
                                                       "/proc/driver/nvidia/gpus");

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_SCHEDULER_H_
