#include "worker/train/out_of_memory.h"

#include <algorithm>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "worker/plan/fit_advice.h"
#include "worker/plan/plan_report.h"

namespace rigtune::train {
namespace {

constexpr char kTried[] = "Tried to allocate ";

// "224.00 MiB" after "Tried to allocate ", or empty.
std::string RequestedText(const std::string& text) {
  const size_t at = text.find(kTried);
  if (at == std::string::npos) return "";
  const size_t start = at + sizeof(kTried) - 1;
  const size_t space = text.find(' ', start);  // between the number and its unit
  if (space == std::string::npos) return text.substr(start);
  const size_t end = text.find_first_of(".;,\n", space);
  return text.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

// The suggestion: the planner's settings for a card smaller by what was
// being allocated (or by a tenth, when the size is unknown) than the plan
// or the capacity, whichever is smaller; the run proved that much missing.
std::string Suggestion(const OutOfMemoryContext& c, std::optional<int64_t> requested) {
  if (c.model == nullptr || c.job == nullptr) return "";
  const plan::MemoryPlan planned = plan::PlanMemory(*c.model, *c.job, c.device_plan);
  int64_t limit = planned.device.Total();
  if (c.device_plan.capacity_bytes > 0) limit = std::min(limit, c.device_plan.capacity_bytes);
  plan::PlanDevice tighter = c.device_plan;
  tighter.capacity_bytes = std::max<int64_t>(1, limit - requested.value_or(limit / 10));
  std::vector<std::string> parts;
  for (const plan::FitOption& o : plan::SuggestFits(*c.model, *c.job, tighter)) {
    parts.push_back(absl::StrFormat("%s (%.2f GiB)", o.setting, plan::Gib(o.device_bytes)));
  }
  return absl::StrFormat("; planned %.2f GiB; %s", plan::Gib(planned.device.Total()),
                         parts.empty() ? std::string(plan::kNothingFits)
                                       : absl::StrCat("would fit: ", absl::StrJoin(parts, ", ")));
}

}  // namespace

std::optional<int64_t> RequestedBytes(const std::string& error_text) {
  const std::string text = RequestedText(error_text);
  const size_t space = text.find(' ');
  double number = 0;
  if (space == std::string::npos || !absl::SimpleAtod(text.substr(0, space), &number)) {
    return std::nullopt;
  }
  const std::string unit = text.substr(space + 1);
  const double scale = unit == "GiB"   ? double(1 << 30)
                       : unit == "MiB" ? double(1 << 20)
                       : unit == "KiB" ? double(1 << 10)
                       : unit == "bytes" || unit == "B" ? 1.0
                                                        : 0.0;
  if (scale == 0) return std::nullopt;
  return static_cast<int64_t>(number * scale);
}

absl::Status OutOfMemoryStatus(const std::string& error_text, const OutOfMemoryContext& c) {
  const std::string requested = RequestedText(error_text);
  std::string what;
  if (!requested.empty()) {
    what = absl::StrCat("tried to allocate ", requested);
  } else {
    // No size in the text: its first line stands for it.
    what = error_text.substr(0, std::min(error_text.find('\n'), size_t{200}));
  }
  const std::string cap =
      c.device_plan.capacity_bytes > 0
          ? absl::StrFormat("cap %.2f GiB (%s)", plan::Gib(c.device_plan.capacity_bytes),
                            c.device_plan.capacity_source)
          : std::string("no cap");
  std::string line = absl::StrFormat(
      "rank %d: out of memory on %s during %s: %s with %.2f GiB allocated at the peak, %s%s",
      c.rank, c.device, c.phase, what, plan::Gib(c.peak_allocated), cap,
      Suggestion(c, RequestedBytes(error_text)));
  return absl::ResourceExhaustedError(absl::StrReplaceAll(line, {{"\n", " "}, {"\r", " "}}));
}

}  // namespace rigtune::train
