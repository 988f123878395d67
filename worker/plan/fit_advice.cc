#include "worker/plan/fit_advice.h"

#include <functional>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "worker/plan/plan_report.h"

namespace rigtune::plan {
namespace {

using JobEdit = std::function<void(train::JobConfig&)>;

std::optional<int64_t> BytesIfFits(const model::ModelConfig& model, train::JobConfig job,
                                   const PlanDevice& device, const JobEdit& edit) {
  edit(job);
  // The least the setting needs: with it the job fits, and recompute auto
  // then fills what is left of the card (Note [Where the kept products live]).
  const MemoryPlan plan = PlanMemory(model, job, device, /*use_free_room=*/false);
  if (!plan.fits()) return std::nullopt;
  return plan.device.Total();
}

// The largest value in [low, high] for which `edit(value)` fits, searching
// by halves (the plan grows with each of these settings).
std::optional<std::pair<int64_t, int64_t>> Largest(
    const model::ModelConfig& model, const train::JobConfig& job, const PlanDevice& device,
    int64_t low, int64_t high, const std::function<void(train::JobConfig&, int64_t)>& edit) {
  std::optional<std::pair<int64_t, int64_t>> best;
  while (low <= high) {
    const int64_t mid = low + (high - low) / 2;
    auto bytes = BytesIfFits(model, job, device, [&](train::JobConfig& j) { edit(j, mid); });
    if (bytes) {
      best = std::make_pair(mid, *bytes);
      low = mid + 1;
    } else {
      high = mid - 1;
    }
  }
  return best;
}

struct OffloadFlags {
  bool activations, weights, optimizer;
};

std::string FlagSetting(const OffloadFlags& f, const train::DistConfig& have) {
  std::vector<std::string> parts;
  if (f.activations && !have.activation_offload) parts.push_back("dist.activation_offload=true");
  if (f.weights && !have.cpu_offload) parts.push_back("dist.cpu_offload=true");
  if (f.optimizer && !have.offload_optimizer) parts.push_back("dist.offload_optimizer=true");
  return absl::StrJoin(parts, " ");
}

}  // namespace

std::vector<FitOption> SuggestFits(const model::ModelConfig& model, const train::JobConfig& job,
                                   const PlanDevice& device) {
  std::vector<FitOption> options;
  if (PlanMemory(model, job, device).fits()) return options;
  auto batch = Largest(model, job, device, 1, job.train.batch_size - 1,
                       [](train::JobConfig& j, int64_t v) { j.train.batch_size = v; });
  if (batch) options.push_back({absl::StrCat("train.batch_size=", batch->first), batch->second});

  // The fewest flags first; activation offload costs least, then weights,
  // then the optimizer. With every flag, the largest batch that fits.
  const train::DistConfig& have = job.dist;
  // Full fine-tuning and block expansion have no LoRA rank.
  const bool trains_weights = job.train.method == "full" || job.train.method == "llama_pro";
  const OffloadFlags kFlagSets[] = {{true, false, false}, {false, true, false},
                                    {true, true, false},  {false, false, true},
                                    {true, false, true},  {false, true, true},
                                    {true, true, true}};
  bool flags_found = false;
  for (const OffloadFlags& f : kFlagSets) {
    const std::string setting = FlagSetting(f, have);
    if (setting.empty()) continue;  // adds no flag the job lacks
    auto apply = [&](train::JobConfig& j) {
      j.dist.activation_offload |= f.activations;
      j.dist.cpu_offload |= f.weights;
      j.dist.offload_optimizer |= f.optimizer;
    };
    if (auto bytes = BytesIfFits(model, job, device, apply)) {
      options.push_back({setting, *bytes});
      flags_found = true;
      break;
    }
  }
  if (!flags_found) {
    train::JobConfig all = job;
    all.dist.activation_offload = all.dist.cpu_offload = all.dist.offload_optimizer = true;
    const std::string setting = FlagSetting({true, true, true}, have);
    auto b = Largest(model, all, device, 1, job.train.batch_size - 1,
                     [](train::JobConfig& j, int64_t v) { j.train.batch_size = v; });
    if (b && !setting.empty()) {
      options.push_back({absl::StrCat(setting, " train.batch_size=", b->first), b->second});
    }
  }

  // The largest power-of-two fraction of r that fits.
  for (int64_t r = trains_weights ? 0 : job.lora.r / 2; r >= 1; r /= 2) {
    auto bytes = BytesIfFits(model, job, device, [r](train::JobConfig& j) { j.lora.r = r; });
    if (bytes) {
      options.push_back({absl::StrCat("lora.r=", r), *bytes});
      break;
    }
  }

  // When even batch 1 is too much: the longest context (a multiple of 256)
  // at batch 1.
  if (!batch && job.train.context_length > 256) {
    train::JobConfig one = job;
    one.train.batch_size = 1;
    auto ctx = Largest(model, one, device, 1, (job.train.context_length - 1) / 256,
                       [](train::JobConfig& j, int64_t v) { j.train.context_length = v * 256; });
    if (ctx) {
      options.push_back({absl::StrCat(job.train.batch_size > 1 ? "train.batch_size=1 " : "",
                                      "train.context_length=", ctx->first * 256),
                         ctx->second});
    }
  }
  return options;
}

absl::Status CheckFits(const model::ModelConfig& model, const train::JobConfig& job,
                       const PlanDevice& device) {
  const MemoryPlan plan = PlanMemory(model, job, device);
  if (plan.fits()) return absl::OkStatus();
  return absl::InvalidArgumentError(ShortfallMessage(plan, SuggestFits(model, job, device)));
}

std::string ShortfallMessage(const MemoryPlan& plan, const std::vector<FitOption>& options) {
  std::string message = absl::StrFormat(
      "does not fit: needs %.2f GiB per GPU, %.2f GiB available (%s): %s", Gib(plan.device.Total()),
      Gib(plan.capacity_bytes), plan.capacity_source, DeviceBreakdown(plan.device));
  if (options.empty()) {
    return absl::StrCat(message, "; ", kNothingFits);
  }
  std::vector<std::string> parts;
  for (const FitOption& o : options) {
    parts.push_back(absl::StrFormat("%s (%.2f GiB)", o.setting, Gib(o.device_bytes)));
  }
  return absl::StrCat(message, "; would fit: ", absl::StrJoin(parts, ", "));
}

}  // namespace rigtune::plan
