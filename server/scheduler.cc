#include "server/scheduler.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace rigtune::server {

Scheduler::Scheduler(std::vector<int> gpus, int cpu_slots)
    : gpus_(std::move(gpus)), cpu_slots_(cpu_slots) {}

std::vector<QueuedJob> Scheduler::Order(std::vector<QueuedJob> queue) {
  std::stable_sort(queue.begin(), queue.end(), [](const QueuedJob& a, const QueuedJob& b) {
    if (a.priority != b.priority) return a.priority > b.priority;
    return a.arrival < b.arrival;
  });
  return queue;
}

int Scheduler::free_gpus() const {
  return static_cast<int>(gpus_.size() - gpu_owner_.size());
}

std::vector<Placement> Scheduler::Schedule(const std::vector<QueuedJob>& queue) {
  std::vector<Placement> placements;
  bool gpu_blocked = false;
  bool cpu_blocked = false;
  for (const QueuedJob& job : Order(queue)) {
    if (held_.count(job.id)) continue;
    if (job.gpus == 0) {
      int used = 0;
      for (const auto& [id, held] : held_) used += held.empty() ? 1 : 0;
      if (cpu_blocked || used >= cpu_slots_) {
        cpu_blocked = true;
        continue;
      }
      held_[job.id] = {};
      placements.push_back({job.id, {}});
      continue;
    }
    if (gpu_blocked || job.gpus > free_gpus()) {
      gpu_blocked = true;
      continue;
    }
    std::vector<int> picked;
    for (int gpu : gpus_) {
      if (static_cast<int>(picked.size()) == job.gpus) break;
      if (!gpu_owner_.count(gpu)) picked.push_back(gpu);
    }
    for (int gpu : picked) gpu_owner_[gpu] = job.id;
    held_[job.id] = picked;
    placements.push_back({job.id, picked});
  }
  return placements;
}

void Scheduler::Reserve(const Placement& placement) {
  for (int gpu : placement.gpus) gpu_owner_[gpu] = placement.id;
  held_[placement.id] = placement.gpus;
}

void Scheduler::Release(const std::string& id) {
  auto it = held_.find(id);
  if (it == held_.end()) return;
  for (int gpu : it->second) gpu_owner_.erase(gpu);
  held_.erase(it);
}

absl::StatusOr<std::vector<int>> ParseGpuInventory(const std::string& spec,
                                                   const std::string& proc_dir) {
  std::vector<int> gpus;
  if (spec == "none" || spec.empty()) return gpus;
  if (spec == "auto") {
    std::error_code error;
    int count = 0;
    for (const auto& entry : std::filesystem::directory_iterator(proc_dir, error)) {
      if (entry.is_directory(error)) ++count;
    }
    for (int i = 0; i < count; ++i) gpus.push_back(i);
    return gpus;
  }
  std::set<int> seen;
  for (absl::string_view part : absl::StrSplit(spec, ',')) {
    int index = -1;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &index) || index < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("gpus: '", part, "' is not a GPU index (use auto, none or e.g. 0,1)"));
    }
    if (!seen.insert(index).second) {
      return absl::InvalidArgumentError(absl::StrCat("gpus: GPU ", index, " listed twice"));
    }
    gpus.push_back(index);
  }
  return gpus;
}

}  // namespace rigtune::server
