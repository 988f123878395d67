#include "worker/plan/plan_report.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace rigtune::plan {
namespace {

// The parts in the order every report lists them: a label for people and
// the JSON key.
template <typename Bytes>
struct Part {
  const char* label;
  const char* key;
  int64_t Bytes::*bytes;
};
constexpr Part<DeviceBytes> kDeviceParts[] = {
    {"frozen weights", "frozen_weights", &DeviceBytes::frozen_weights},
    {"adapter", "adapter", &DeviceBytes::adapter},
    {"optimizer", "optimizer", &DeviceBytes::optimizer},
    {"gradients", "gradients", &DeviceBytes::gradients},
    {"layer inputs", "layer_inputs", &DeviceBytes::layer_inputs},
    {"kept products", "kept_products", &DeviceBytes::kept_products},
    {"working set", "working_set", &DeviceBytes::working_set},
    {"workspace", "workspace", &DeviceBytes::workspace},
    {"slack", "slack", &DeviceBytes::slack},
};
constexpr Part<HostBytes> kHostParts[] = {
    {"process", "process", &HostBytes::process},
    {"frozen weights", "frozen_weights", &HostBytes::frozen_weights},
    {"optimizer", "optimizer", &HostBytes::optimizer},
    {"layer inputs", "layer_inputs", &HostBytes::layer_inputs},
    {"kept products", "kept_products", &HostBytes::kept_products},
    {"loading", "loading", &HostBytes::loading},
};

// Parts shown only when the job has them (train.recompute keep_mlp).
bool Optional(const Part<DeviceBytes>& p) { return p.bytes == &DeviceBytes::kept_products; }

std::string HostBreakdown(const HostBytes& host) {
  std::vector<std::string> parts;
  for (const auto& p : kHostParts) {
    if (host.*p.bytes > 0) parts.push_back(absl::StrFormat("%s %.2f", p.label, Gib(host.*p.bytes)));
  }
  return absl::StrCat(absl::StrJoin(parts, " + "), " GiB");
}

std::string Capacity(const MemoryPlan& plan) {
  if (plan.capacity_bytes <= 0) return "capacity unknown";
  return absl::StrFormat("%.2f GiB available (%s)", Gib(plan.capacity_bytes), plan.capacity_source);
}

// "the MLP gate/up products of 70 layers (on the GPU)", for the plan's text.
std::string KeptProducts(const MemoryPlan& plan) {
  const int64_t host = plan.kept_mlp_layers - plan.device_kept_mlp_layers;
  std::string where;
  if (host == 0) {
    where = "on the GPU";
  } else if (plan.device_kept_mlp_layers == 0) {
    where = "in host memory";
  } else {
    where = absl::StrFormat("%d on the GPU, %d in host memory", plan.device_kept_mlp_layers, host);
  }
  return absl::StrFormat("the MLP gate/up products of %d layer%s (%s)", plan.kept_mlp_layers,
                         plan.kept_mlp_layers == 1 ? "" : "s", where);
}

}  // namespace

double Gib(int64_t bytes) { return static_cast<double>(bytes) / static_cast<double>(kGiB); }

std::string DeviceBreakdown(const DeviceBytes& device) {
  std::vector<std::string> parts;
  for (const auto& p : kDeviceParts) {
    if (Optional(p) && device.*p.bytes == 0) continue;
    parts.push_back(absl::StrFormat("%s %.2f", p.label, Gib(device.*p.bytes)));
  }
  return absl::StrCat(absl::StrJoin(parts, " + "), " GiB");
}

std::string PlanLine(const MemoryPlan& plan) {
  std::string line = absl::StrFormat(
      "memory plan per GPU (%d rank%s): %.2f GiB, %s, %s = %s; host %.2f GiB = %s",
      plan.world_size, plan.world_size == 1 ? "" : "s", Gib(plan.device.Total()), Capacity(plan),
      plan.fits() ? "fits" : "does not fit", DeviceBreakdown(plan.device), Gib(plan.host.Total()),
      HostBreakdown(plan.host));
  if (plan.mlp_chunk_tokens > 0) {
    absl::StrAppendFormat(&line, "; MLP in chunks of %d tokens", plan.mlp_chunk_tokens);
  }
  if (plan.keeps_mlp_products) absl::StrAppend(&line, "; recompute keeps ", KeptProducts(plan));
  return line;
}

std::string PlanText(const MemoryPlan& plan, const std::vector<FitOption>& options) {
  std::string text = absl::StrFormat("per GPU (%d rank%s, %.0f M trainable parameters):\n",
                                     plan.world_size, plan.world_size == 1 ? "" : "s",
                                     plan.trainable_parameters / 1e6);
  for (const auto& p : kDeviceParts) {
    if (Optional(p) && plan.device.*p.bytes == 0) continue;
    absl::StrAppendFormat(&text, "  %-16s %8.2f GiB\n", p.label, Gib(plan.device.*p.bytes));
  }
  absl::StrAppendFormat(&text, "  %-16s %8.2f GiB   %s\n", "total", Gib(plan.device.Total()),
                        Capacity(plan));
  absl::StrAppendFormat(&text, "host memory per rank: %.2f GiB (%s)\n", Gib(plan.host.Total()),
                        HostBreakdown(plan.host));
  if (plan.mlp_chunk_tokens > 0) {
    absl::StrAppendFormat(&text, "MLP row-tiled: %d tokens per chunk (train.mlp_chunk_tokens)\n",
                          plan.mlp_chunk_tokens);
  }
  if (plan.keeps_mlp_products) {
    absl::StrAppend(&text, "recompute: keep_mlp (train.recompute): ", KeptProducts(plan), "\n");
  }
  if (plan.fits()) {
    absl::StrAppend(&text, plan.capacity_bytes > 0 ? "fits\n"
                                                   : "fits: unknown (give --gpu-memory-gib or "
                                                     "dist.max_gpu_memory_gib)\n");
    return text;
  }
  absl::StrAppend(&text, "does not fit; would fit:\n");
  for (const FitOption& o : options) {
    absl::StrAppendFormat(&text, "  %-60s %8.2f GiB\n", o.setting, Gib(o.device_bytes));
  }
  if (options.empty()) {
    absl::StrAppend(&text, "  ", kNothingFits, "\n");
  }
  return text;
}

nlohmann::json PlanJson(const MemoryPlan& plan, const std::vector<FitOption>& options) {
  nlohmann::json device = {{"total", plan.device.Total()}};
  for (const auto& p : kDeviceParts) device[p.key] = plan.device.*p.bytes;
  nlohmann::json host = {{"total", plan.host.Total()}};
  for (const auto& p : kHostParts) host[p.key] = plan.host.*p.bytes;
  nlohmann::json fits = nlohmann::json::array();
  for (const FitOption& o : options) {
    fits.push_back({{"setting", o.setting}, {"device_bytes", o.device_bytes}});
  }
  return {{"fits", plan.fits()},
          {"device_bytes", std::move(device)},
          {"host_bytes", std::move(host)},
          {"capacity_bytes", plan.capacity_bytes},
          {"capacity_source", plan.capacity_source},
          {"world_size", plan.world_size},
          {"trainable_parameters", plan.trainable_parameters},
          {"mlp_chunk_tokens", plan.mlp_chunk_tokens},
          {"keeps_mlp_products", plan.keeps_mlp_products},
          {"kept_mlp_layers", plan.kept_mlp_layers},
          {"device_kept_mlp_layers", plan.device_kept_mlp_layers},
          {"would_fit", std::move(fits)}};
}

}  // namespace rigtune::plan
