#include "client/render.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"

namespace rigtune::client {

namespace {

using rigtune::v1::Job;

std::string TimeText(const google::protobuf::Timestamp& time) {
  if (time.seconds() == 0 && time.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixSeconds(time.seconds()),
                          absl::LocalTimeZone());
}

std::string Clock(const google::protobuf::Timestamp& time) {
  return absl::FormatTime("%H:%M:%S", absl::FromUnixSeconds(time.seconds()),
                          absl::LocalTimeZone());
}

std::string Duration(double seconds) {
  if (seconds < 0 || seconds > 1e7) return "?";
  int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

}  // namespace

std::string ToJsonLine(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  return json;
}

void PrintJobTable(const rigtune::v1::ListJobsResponse& response) {
  std::printf("%-14s %-10s %5s %4s %11s %8s  %s\n", "ID", "STATE", "QUEUE", "GPUS", "STEP",
              "LOSS", "MODEL");
  for (const Job& job : response.jobs()) {
    const auto& m = job.latest_metrics();
    std::string step = m.total_steps() > 0 ? absl::StrCat(m.step(), "/", m.total_steps()) : "-";
    std::string loss = m.step() > 0 ? absl::StrFormat("%.4f", m.loss()) : "-";
    std::string queue = job.queue_position() > 0 ? absl::StrCat(job.queue_position()) : "-";
    std::string gpus = job.spec().has_gpus() ? absl::StrCat(job.spec().gpus()) : "auto";
    std::printf("%-14s %-10s %5s %4s %11s %8s  %s\n", job.id().c_str(),
                Job::State_Name(job.state()).c_str(), queue.c_str(), gpus.c_str(), step.c_str(),
                loss.c_str(), job.spec().model().c_str());
  }
}

void PrintJob(const Job& job) {
  auto row = [](const char* key, const std::string& value) {
    if (!value.empty()) std::printf("%-15s %s\n", key, value.c_str());
  };
  row("id", job.id());
  row("state", Job::State_Name(job.state()));
  if (job.queue_position() > 0) row("queue position", absl::StrCat(job.queue_position()));
  row("model", job.spec().model());
  row("dataset", job.spec().dataset().path());
  row("output_dir", job.spec().output_dir());
  if (job.assigned_gpus_size() > 0) row("gpus", absl::StrJoin(job.assigned_gpus(), ","));
  row("priority", absl::StrCat(job.spec().priority()));
  std::vector<std::string> labels;
  for (const auto& [key, value] : job.spec().labels()) labels.push_back(key + "=" + value);
  row("labels", absl::StrJoin(labels, ","));
  row("created", TimeText(job.create_time()));
  row("started", TimeText(job.start_time()));
  row("ended", TimeText(job.end_time()));
  row("attempt", absl::StrCat(job.attempt(), " (", job.restarts(), " restart(s))"));
  if (job.latest_metrics().step() > 0) row("progress", ProgressLine(job.latest_metrics()));
  row("resume_from", job.resume_from());
  row("logs", job.log_dir());
  if (!job.error().code().empty()) row("error", job.error().code() + ": " + job.error().message());
  row("adapter", job.result().adapter_path());
  if (job.result().tokens_trained() > 0) {
    row("tokens", absl::StrCat(job.result().tokens_trained()));
  }
}

std::string FormatEvent(const rigtune::v1::JobEvent& event) {
  std::string head = absl::StrCat(Clock(event.time()), " #", event.seq(), " ");
  if (event.has_state_change()) {
    const auto& change = event.state_change();
    std::string from = change.from() == Job::STATE_UNSPECIFIED
                           ? std::string()
                           : absl::StrCat(" (was ", Job::State_Name(change.from()), ")");
    return absl::StrCat(head, Job::State_Name(change.to()), from,
                        change.reason().empty() ? "" : ": ", change.reason());
  }
  if (event.has_metrics()) {
    const auto& m = event.metrics();
    return absl::StrCat(head,
                        absl::StrFormat("step %d/%d  loss %.4f  lr %.3g  %.0f tok/s", m.step(),
                                        m.total_steps(), m.loss(), m.learning_rate(),
                                        m.tokens_per_second()));
  }
  if (event.has_log()) return absl::StrCat(head, event.log().text());
  if (event.has_validation()) {
    const auto& v = event.validation();
    return absl::StrCat(head, absl::StrFormat("validation step %d  loss %.4f  perplexity %.3f  "
                                              "%d tokens",
                                              v.step(), v.loss(), v.perplexity(), v.tokens()));
  }
  return absl::StrCat(head, "checkpoint step ", event.checkpoint().step(), " -> ",
                      event.checkpoint().path());
}

std::string ProgressLine(const rigtune::v1::StepMetrics& m) {
  constexpr int kWidth = 24;
  const double fraction =
      m.total_steps() > 0 ? std::min(1.0, static_cast<double>(m.step()) / m.total_steps()) : 0;
  const int filled = static_cast<int>(fraction * kWidth);
  std::string bar = std::string(filled, '#') + std::string(kWidth - filled, '-');
  const double eta = m.step_seconds() * static_cast<double>(m.total_steps() - m.step());
  return absl::StrFormat("[%s] %d/%d %3.0f%%  loss %.4f  %.0f tok/s  ETA %s", bar, m.step(),
                         m.total_steps(), fraction * 100, m.loss(), m.tokens_per_second(),
                         Duration(eta));
}

}  // namespace rigtune::client
