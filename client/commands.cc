#include "client/commands.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/job_file.h"
#include "client/render.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace rigtune::client {

namespace {

using rigtune::v1::Job;
using rigtune::v1::JobEvent;

int UsageError(const absl::Status& status) {
  std::fprintf(stderr, "rigtune: %s\n", std::string(status.message()).c_str());
  return kExitUsage;
}

int OutcomeCode(Job::State state) {
  switch (state) {
    case Job::SUCCEEDED:
      return kExitOk;
    case Job::FAILED:
      return kExitJobFailed;
    case Job::CANCELLED:
      return kExitJobCancelled;
    case Job::PAUSED:
      return kExitJobPaused;
    default:
      return kExitError;
  }
}

void PrintEvent(const JobEvent& event, bool json, bool tty, bool& progress_open) {
  if (json) {
    std::printf("%s\n", ToJsonLine(event).c_str());
  } else if (event.has_metrics() && tty) {
    std::printf("\r%s\033[K", ProgressLine(event.metrics()).c_str());
    progress_open = true;
  } else if (event.has_metrics()) {
    std::printf("%s\n", ProgressLine(event.metrics()).c_str());
  } else {
    if (progress_open) std::printf("\n");
    progress_open = false;
    std::printf("%s\n", FormatEvent(event).c_str());
  }
  std::fflush(stdout);
}

// Streams events after `after_seq` through `print` until the job ends (OK),
// pauses (when stop_on_pause), or the stream fails for good. Reconnects
// while the daemon is briefly unavailable (a restart), missing nothing.
grpc::Status Follow(Connection& connection, const std::string& id, int64_t after_seq,
                    bool stop_on_pause, const std::function<void(const JobEvent&)>& print,
                    bool* paused) {
  absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (true) {
    auto context = connection.Context(/*streaming=*/true);
    rigtune::v1::WatchJobRequest request;
    request.set_id(id);
    request.set_after_seq(after_seq);
    auto reader = connection.jobs().WatchJob(context.get(), request);
    JobEvent event;
    while (reader->Read(&event)) {
      after_seq = event.seq();
      give_up = absl::Now() + absl::Seconds(60);
      print(event);
      if (stop_on_pause && event.has_state_change() && event.state_change().to() == Job::PAUSED) {
        *paused = true;
        context->TryCancel();
        break;
      }
    }
    grpc::Status status = reader->Finish();
    if (*paused || status.ok()) return grpc::Status::OK;
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE || absl::Now() > give_up) {
      return status;
    }
    absl::SleepFor(absl::Seconds(1));
  }
}

}  // namespace

absl::StatusOr<nlohmann::json> BuildSpecJson(const SubmitOptions& options) {
  absl::StatusOr<nlohmann::json> spec = LoadJobFile(options.job_file);
  if (!spec.ok()) return spec.status();
  std::vector<std::string> overrides;
  if (!options.model.empty()) overrides.push_back("model=" + nlohmann::json(options.model).dump());
  if (!options.dataset.empty()) {
    overrides.push_back("dataset.path=" + nlohmann::json(options.dataset).dump());
  }
  if (!options.output_dir.empty()) {
    overrides.push_back("output_dir=" + nlohmann::json(options.output_dir).dump());
  }
  if (options.gpus >= 0) overrides.push_back(absl::StrCat("gpus=", options.gpus));
  if (options.priority_set) overrides.push_back(absl::StrCat("priority=", options.priority));
  if (options.max_steps >= 0) overrides.push_back(absl::StrCat("train.max_steps=", options.max_steps));
  for (const std::string& label : options.labels) {
    size_t eq = label.find('=');
    if (eq == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("--label ", label, ": must be key=value"));
    }
    overrides.push_back(absl::StrCat("labels.", label.substr(0, eq), "=",
                                     nlohmann::json(label.substr(eq + 1)).dump()));
  }
  overrides.insert(overrides.end(), options.overrides.begin(), options.overrides.end());
  if (absl::Status s = ApplyOverrides(overrides, *spec); !s.ok()) return s;
  AbsolutizePaths(*spec, std::filesystem::current_path().string());
  return spec;
}

int Submit(Connection& connection, const SubmitOptions& options, bool json) {
  absl::StatusOr<nlohmann::json> spec_json = BuildSpecJson(options);
  if (!spec_json.ok()) return UsageError(spec_json.status());
  absl::StatusOr<rigtune::v1::JobSpec> spec = ToJobSpec(*spec_json);
  if (!spec.ok()) return UsageError(spec.status());
  rigtune::v1::CreateJobRequest request;
  *request.mutable_spec() = *spec;
  request.set_idempotency_key(options.idempotency_key);
  Job job;
  grpc::Status status = connection.jobs().CreateJob(connection.Context().get(), request, &job);
  if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
    // The daemon refused the message for its size before reading it.
    std::fprintf(stderr,
                 "rigtune: the job is %zu bytes, more than rigtuned accepts in one request "
                 "(--max-request-bytes, 1 MiB by default); a JobSpec needs a few KB: check the "
                 "job file for oversized values such as labels\n",
                 request.ByteSizeLong());
    return kExitInvalid;
  }
  if (!status.ok()) return ReportError(status);
  if (json) {
    std::printf("%s\n", ToJsonLine(job).c_str());
  } else {
    std::printf("%s %s", job.id().c_str(), Job::State_Name(job.state()).c_str());
    if (job.queue_position() > 0) std::printf(" (queue position %d)", job.queue_position());
    std::printf("\n");
  }
  std::fflush(stdout);
  return options.watch ? Watch(connection, job.id(), 0, json) : kExitOk;
}

int List(Connection& connection, const ListOptions& options, bool json) {
  rigtune::v1::ListJobsRequest request;
  if (!options.state.empty()) {
    Job::State state;
    if (!Job::State_Parse(options.state, &state)) {
      return UsageError(absl::InvalidArgumentError(
          absl::StrCat("--state ", options.state, ": not a job state (e.g. RUNNING)")));
    }
    request.set_state(state);
  }
  request.set_label(options.label);
  rigtune::v1::ListJobsResponse all;
  while (all.jobs_size() < options.limit) {
    request.set_page_size(std::min(1000, options.limit - all.jobs_size()));
    rigtune::v1::ListJobsResponse page;
    grpc::Status status = connection.jobs().ListJobs(connection.Context().get(), request, &page);
    if (!status.ok()) return ReportError(status);
    for (const Job& job : page.jobs()) *all.add_jobs() = job;
    if (page.next_page_token().empty()) break;
    request.set_page_token(page.next_page_token());
  }
  if (json) {
    std::printf("%s\n", ToJsonLine(all).c_str());
  } else {
    PrintJobTable(all);
  }
  return kExitOk;
}

int Show(Connection& connection, const std::string& id, bool json) {
  rigtune::v1::GetJobRequest request;
  request.set_id(id);
  Job job;
  grpc::Status status = connection.jobs().GetJob(connection.Context().get(), request, &job);
  if (!status.ok()) return ReportError(status);
  if (json) {
    std::printf("%s\n", ToJsonLine(job).c_str());
  } else {
    PrintJob(job);
  }
  return kExitOk;
}

int Watch(Connection& connection, const std::string& id, int64_t after_seq, bool json) {
  const bool tty = !json && isatty(STDOUT_FILENO);
  bool progress_open = false;
  bool paused = false;
  grpc::Status status = Follow(
      connection, id, after_seq, /*stop_on_pause=*/true,
      [&](const JobEvent& event) { PrintEvent(event, json, tty, progress_open); }, &paused);
  if (progress_open) std::printf("\n");
  if (!status.ok()) return ReportError(status);
  if (paused) return kExitJobPaused;
  rigtune::v1::GetJobRequest request;
  request.set_id(id);
  Job job;
  status = connection.jobs().GetJob(connection.Context().get(), request, &job);
  if (!status.ok()) return ReportError(status);
  if (!json) {
    std::printf("job %s %s", id.c_str(), Job::State_Name(job.state()).c_str());
    if (!job.error().message().empty()) std::printf(": %s", job.error().message().c_str());
    if (!job.result().adapter_path().empty()) {
      std::printf("; adapter in %s", job.result().adapter_path().c_str());
    }
    std::printf("\n");
  }
  return OutcomeCode(job.state());
}

int Logs(Connection& connection, const std::string& id, bool follow, bool json) {
  auto print = [json](const JobEvent& event) {
    if (event.has_metrics()) return;
    std::printf("%s\n", json ? ToJsonLine(event).c_str() : FormatEvent(event).c_str());
    std::fflush(stdout);
  };
  int64_t after = 0;
  while (true) {
    rigtune::v1::ListJobEventsRequest request;
    request.set_id(id);
    request.set_after_seq(after);
    request.set_page_size(1000);
    rigtune::v1::ListJobEventsResponse page;
    grpc::Status status =
        connection.jobs().ListJobEvents(connection.Context().get(), request, &page);
    if (!status.ok()) return ReportError(status);
    for (const JobEvent& event : page.events()) print(event);
    if (page.events_size() == 0) break;
    after = page.last_seq();
  }
  if (!follow) return kExitOk;
  bool paused = false;
  grpc::Status status = Follow(connection, id, after, /*stop_on_pause=*/false, print, &paused);
  return status.ok() ? kExitOk : ReportError(status);
}

int Control(Connection& connection, const std::string& verb, const std::string& id,
            const std::string& reason, bool json) {
  Job job;
  grpc::Status status;
  if (verb == "cancel") {
    rigtune::v1::CancelJobRequest request;
    request.set_id(id);
    request.set_reason(reason);
    status = connection.jobs().CancelJob(connection.Context().get(), request, &job);
  } else if (verb == "pause") {
    rigtune::v1::PauseJobRequest request;
    request.set_id(id);
    status = connection.jobs().PauseJob(connection.Context().get(), request, &job);
  } else {
    rigtune::v1::ResumeJobRequest request;
    request.set_id(id);
    status = connection.jobs().ResumeJob(connection.Context().get(), request, &job);
  }
  if (!status.ok()) return ReportError(status);
  if (json) {
    std::printf("%s\n", ToJsonLine(job).c_str());
  } else {
    std::printf("%s %s\n", job.id().c_str(), Job::State_Name(job.state()).c_str());
  }
  return kExitOk;
}

int Checkpoints(Connection& connection, const std::string& id, bool json) {
  rigtune::v1::ListCheckpointsRequest request;
  request.set_id(id);
  rigtune::v1::ListCheckpointsResponse response;
  grpc::Status status =
      connection.jobs().ListCheckpoints(connection.Context().get(), request, &response);
  if (!status.ok()) return ReportError(status);
  if (json) {
    std::printf("%s\n", ToJsonLine(response).c_str());
    return kExitOk;
  }
  std::printf("%8s %10s %8s  %s\n", "STEP", "LOSS", "ATTEMPT", "PATH");
  for (const auto& checkpoint : response.checkpoints()) {
    std::printf("%8lld %10.4f %8d  %s\n", static_cast<long long>(checkpoint.step()),
                checkpoint.loss(), checkpoint.attempt(), checkpoint.path().c_str());
  }
  return kExitOk;
}

int Health(Connection& connection, bool json) {
  auto health = grpc::health::v1::Health::NewStub(connection.channel());
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = health->Check(connection.Context().get(), request, &response);
  if (!status.ok()) return ReportError(status);
  if (json) {
    std::printf("%s\n", ToJsonLine(response).c_str());
  } else {
    std::printf("%s\n",
                grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()).c_str());
  }
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kExitOk
                                                                              : kExitUnavailable;
}

}  // namespace rigtune::client
