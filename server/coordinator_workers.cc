// Coordinator: the WorkerService operations, called by rigtune-worker ranks.
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "server/coordinator.h"
#include "server/job_state.h"

namespace rigtune::server {

using rigtune::v1::Job;

absl::StatusOr<Coordinator::Runtime*> Coordinator::CurrentRuntimeLocked(
    const rigtune::v1::WorkerIdentity& worker) {
  auto it = runtimes_.find(worker.job_id());
  if (it == runtimes_.end() || it->second.attempt != worker.attempt()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", worker.job_id(), " attempt ", worker.attempt(), " is not running any more"));
  }
  if (worker.rank() < 0 || worker.rank() >= it->second.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("worker.rank: must be in [0, ",
                                                   it->second.world_size, "), got ",
                                                   worker.rank()));
  }
  return &it->second;
}

absl::StatusOr<rigtune::v1::RegisterResponse> Coordinator::RegisterWorker(
    const rigtune::v1::RegisterRequest& request) {
  bool all_registered = false;
  int world_size = 0;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<Runtime*> runtime = CurrentRuntimeLocked(request.worker());
    if (!runtime.ok()) return runtime.status();
    (*runtime)->registered.insert(request.worker().rank());
    world_size = (*runtime)->world_size;
    all_registered = static_cast<int>((*runtime)->registered.size()) == world_size;
  }
  if (all_registered) {
    (void)store_->UpdateJob(request.worker().job_id(), [&](Job& job, JobUpdate& update) {
      if (job.state() != Job::STARTING) return absl::OkStatus();
      job.set_state(Job::RUNNING);
      update.reason = absl::StrCat("all ", world_size, " rank(s) registered");
      return absl::OkStatus();
    });
    NotifyEvents();
  }
  rigtune::v1::RegisterResponse response;
  response.set_world_size(world_size);
  return response;
}

absl::Status Coordinator::HandleReport(const rigtune::v1::WorkerReport& report) {
  int gpu = -1;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<Runtime*> runtime = CurrentRuntimeLocked(report.worker());
    if (!runtime.ok()) return runtime.status();
    const int rank = report.worker().rank();
    if (rank < static_cast<int>((*runtime)->gpus.size())) gpu = (*runtime)->gpus[rank];
  }
  const std::string& id = report.worker().job_id();
  const bool rank0 = report.worker().rank() == 0;
  if (report.has_metrics()) {
    rigtune::v1::StepMetrics metrics = report.metrics();
    metrics.set_rank(report.worker().rank());
    metrics_.OnStep(id, gpu, metrics);
    if (!rank0) return absl::OkStatus();
    absl::StatusOr<Job> job = store_->UpdateJob(id, [&](Job& job, JobUpdate& update) {
      *job.mutable_latest_metrics() = metrics;
      update.events.emplace_back();
      *update.events.back().mutable_metrics() = metrics;
      return absl::OkStatus();
    });
    if (!job.ok()) return job.status();
  } else if (report.has_log()) {
    if (!rank0) return absl::OkStatus();
    rigtune::v1::LogLine line = report.log();
    line.set_rank(0);
    if (line.text().size() > 4096) line.mutable_text()->resize(4096);
    absl::StatusOr<Job> job = store_->UpdateJob(id, [&](Job&, JobUpdate& update) {
      update.events.emplace_back();
      *update.events.back().mutable_log() = line;
      return absl::OkStatus();
    });
    if (!job.ok()) return job.status();
  } else if (report.has_validation()) {
    if (!rank0) return absl::OkStatus();
    const rigtune::v1::ValidationMetrics& validation = report.validation();
    absl::StatusOr<Job> job = store_->UpdateJob(id, [&](Job&, JobUpdate& update) {
      update.events.emplace_back();
      *update.events.back().mutable_validation() = validation;
      return absl::OkStatus();
    });
    if (!job.ok()) return job.status();
    metrics_.OnValidation(id, validation);
  } else if (report.has_checkpoint()) {
    if (!rank0) return absl::OkStatus();
    if (report.checkpoint().path().empty()) {
      return absl::InvalidArgumentError("checkpoint.path: required");
    }
    rigtune::v1::Checkpoint checkpoint = report.checkpoint();
    checkpoint.set_attempt(report.worker().attempt());
    *checkpoint.mutable_create_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
    absl::StatusOr<Job> job = store_->UpdateJob(id, [&](Job& job, JobUpdate& update) {
      job.set_resume_from(checkpoint.path());
      update.checkpoints.push_back(checkpoint);
      return absl::OkStatus();
    });
    if (!job.ok()) return job.status();
    metrics_.OnCheckpoint(id, static_cast<double>(checkpoint.create_time().seconds()));
  }
  NotifyEvents();
  return absl::OkStatus();
}

rigtune::v1::GetControlResponse Coordinator::GetControl(
    const rigtune::v1::GetControlRequest& request) {
  rigtune::v1::GetControlResponse response;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Runtime*> runtime = CurrentRuntimeLocked(request.worker());
  if (!runtime.ok()) {
    response.set_action(rigtune::v1::GetControlResponse::STOP);
    response.set_reason(std::string(runtime.status().message()));
  } else if ((*runtime)->stop_requested) {
    response.set_action(rigtune::v1::GetControlResponse::STOP);
    response.set_reason((*runtime)->stop_reason);
  } else {
    response.set_action(rigtune::v1::GetControlResponse::CONTINUE);
  }
  return response;
}

absl::Status Coordinator::FinishWorker(const rigtune::v1::FinishRequest& request) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Runtime*> runtime = CurrentRuntimeLocked(request.worker());
  if (!runtime.ok()) return runtime.status();
  if (!request.ok()) {
    if ((*runtime)->worker_error.empty()) {
      (*runtime)->worker_error = absl::StrCat("rank ", request.worker().rank(), ": ",
                                              request.error_message().substr(0, 2048));
    }
    return absl::OkStatus();
  }
  if (request.worker().rank() == 0) {
    (*runtime)->has_result = true;
    (*runtime)->stopped_early = request.stopped_early();
    (*runtime)->result = request.result();
  }
  return absl::OkStatus();
}

}  // namespace rigtune::server
