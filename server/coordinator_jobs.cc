// Coordinator: the JobService operations.
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/time_util.h"
#include "server/admission.h"
#include "server/coordinator.h"
#include "server/job_state.h"

namespace rigtune::server {

using rigtune::v1::Job;

namespace {

std::string NewJobId() {
  static std::mt19937_64* rng = new std::mt19937_64(std::random_device{}());
  static absl::Mutex* mu = new absl::Mutex;
  absl::MutexLock lock(mu);
  return absl::StrFormat("job-%08x", static_cast<uint32_t>((*rng)()));
}

absl::Status CheckId(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("id: required");
  if (id.size() > 64) return absl::InvalidArgumentError("id: longer than 64 bytes");
  return absl::OkStatus();
}

}  // namespace

std::map<std::string, int> Coordinator::QueuePositions() {
  std::map<std::string, int> positions;
  absl::StatusOr<std::vector<Job>> queued = store_->JobsInStates({Job::QUEUED});
  if (!queued.ok()) return positions;
  std::vector<QueuedJob> queue;
  for (size_t i = 0; i < queued->size(); ++i) {
    const Job& job = (*queued)[i];
    queue.push_back({job.id(), GpusFor(job.spec()), job.spec().priority(),
                     static_cast<int64_t>(i)});
  }
  int position = 0;
  for (const QueuedJob& job : Scheduler::Order(queue)) positions[job.id] = ++position;
  return positions;
}

absl::StatusOr<Job> Coordinator::Decorate(Job job) {
  job.set_queue_position(0);
  if (job.state() == Job::QUEUED) job.set_queue_position(QueuePositions()[job.id()]);
  return job;
}

absl::StatusOr<Job> Coordinator::CreateJob(const rigtune::v1::CreateJobRequest& request) {
  if (request.idempotency_key().size() > 128) {
    return absl::InvalidArgumentError("idempotency_key: longer than 128 bytes");
  }
  SpecLimits limits{static_cast<int>(options_.gpus.size()), options_.roots};
  if (absl::Status s = ValidateJobSpec(request.spec(), limits); !s.ok()) return s;
  if (absl::Status s = CheckJobFitsMemory(request.spec(), GpusFor(request.spec()), card_gib_);
      !s.ok()) {
    return s;
  }
  Job job;
  job.set_id(NewJobId());
  *job.mutable_spec() = request.spec();
  job.set_state(Job::QUEUED);
  job.set_idempotency_key(request.idempotency_key());
  *job.mutable_create_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
  *job.mutable_update_time() = job.create_time();
  absl::StatusOr<JobStore::CreateResult> created = store_->CreateJob(job, "submitted");
  if (!created.ok()) return created.status();
  if (created->created) {
    NotifyEvents();
    Kick();
  }
  return Decorate(std::move(created->job));
}

absl::StatusOr<Job> Coordinator::GetJob(const std::string& id) {
  if (absl::Status s = CheckId(id); !s.ok()) return s;
  absl::StatusOr<Job> job = store_->GetJob(id);
  if (!job.ok()) return job.status();
  return Decorate(*std::move(job));
}

absl::StatusOr<rigtune::v1::ListJobsResponse> Coordinator::ListJobs(
    const rigtune::v1::ListJobsRequest& request) {
  if (request.page_size() < 0 || request.page_size() > 1000) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: must be in [0, 1000], got ", request.page_size()));
  }
  if (!Job::State_IsValid(request.state())) {
    return absl::InvalidArgumentError("state: not a job state");
  }
  ListJobsQuery query;
  query.page_size = request.page_size() == 0 ? 50 : request.page_size();
  query.page_token = request.page_token();
  query.state = request.state();
  if (!request.label().empty()) {
    std::pair<std::string, std::string> label = absl::StrSplit(request.label(), '=');
    if (label.first.empty() || request.label().find('=') == std::string::npos) {
      return absl::InvalidArgumentError("label: must be key=value");
    }
    query.label_key = label.first;
    query.label_value = label.second;
  }
  absl::StatusOr<rigtune::v1::ListJobsResponse> response = store_->ListJobs(query);
  if (!response.ok()) return response.status();
  std::map<std::string, int> positions = QueuePositions();
  for (Job& job : *response->mutable_jobs()) {
    job.set_queue_position(job.state() == Job::QUEUED ? positions[job.id()] : 0);
  }
  return response;
}

void Coordinator::RequestStop(const std::string& id, const std::string& reason) {
  {
    absl::MutexLock lock(&mu_);
    auto it = runtimes_.find(id);
    if (it != runtimes_.end()) {
      it->second.stop_requested = true;
      it->second.stop_reason = reason;
    }
    kicked_ = true;
  }
}

absl::StatusOr<Job> Coordinator::CancelJob(const std::string& id, const std::string& reason) {
  if (absl::Status s = CheckId(id); !s.ok()) return s;
  if (reason.size() > 1024) return absl::InvalidArgumentError("reason: longer than 1024 bytes");
  const std::string why = reason.empty() ? std::string("cancelled by request")
                                         : absl::StrCat("cancelled: ", reason);
  absl::StatusOr<Job> job = store_->UpdateJob(id, [&](Job& job, JobUpdate& update) {
    update.reason = why;
    switch (job.state()) {
      case Job::QUEUED:
      case Job::PAUSED:
        job.set_state(Job::CANCELLED);
        return absl::OkStatus();
      case Job::STARTING:
      case Job::RUNNING:
      case Job::PAUSING:
        job.set_state(Job::CANCELLING);
        return absl::OkStatus();
      case Job::CANCELLING:
        return absl::OkStatus();
      default:
        return CheckTransition(job.state(), Job::CANCELLED);
    }
  });
  if (!job.ok()) return job.status();
  if (job->state() == Job::CANCELLING) RequestStop(id, why);
  if (job->state() == Job::CANCELLED) metrics_.OnJobFinished(id);
  NotifyEvents();
  return Decorate(*std::move(job));
}

absl::StatusOr<Job> Coordinator::PauseJob(const std::string& id) {
  if (absl::Status s = CheckId(id); !s.ok()) return s;
  absl::StatusOr<Job> job = store_->UpdateJob(id, [&](Job& job, JobUpdate& update) {
    update.reason = "paused by request";
    switch (job.state()) {
      case Job::QUEUED:
        job.set_state(Job::PAUSED);
        return absl::OkStatus();
      case Job::STARTING:
      case Job::RUNNING:
        job.set_state(Job::PAUSING);
        return absl::OkStatus();
      case Job::PAUSING:
      case Job::PAUSED:
        return absl::OkStatus();
      default:
        return CheckTransition(job.state(), Job::PAUSING);
    }
  });
  if (!job.ok()) return job.status();
  if (job->state() == Job::PAUSING) RequestStop(id, "paused by request");
  NotifyEvents();
  return Decorate(*std::move(job));
}

absl::StatusOr<Job> Coordinator::ResumeJob(const std::string& id) {
  if (absl::Status s = CheckId(id); !s.ok()) return s;
  absl::StatusOr<Job> job = store_->UpdateJob(id, [&](Job& job, JobUpdate& update) {
    update.reason = "resumed by request";
    switch (job.state()) {
      case Job::PAUSED:
        job.set_state(Job::QUEUED);
        return absl::OkStatus();
      case Job::QUEUED:
      case Job::STARTING:
      case Job::RUNNING:
        return absl::OkStatus();
      case Job::PAUSING:
        return absl::FailedPreconditionError(
            "job is PAUSING; resume it once it is PAUSED (its workers are checkpointing)");
      default:
        return CheckTransition(job.state(), Job::QUEUED);
    }
  });
  if (!job.ok()) return job.status();
  NotifyEvents();
  Kick();
  return Decorate(*std::move(job));
}

absl::StatusOr<rigtune::v1::ListJobEventsResponse> Coordinator::ListJobEvents(
    const rigtune::v1::ListJobEventsRequest& request) {
  if (absl::Status s = CheckId(request.id()); !s.ok()) return s;
  if (request.page_size() < 0 || request.page_size() > 5000) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: must be in [0, 5000], got ", request.page_size()));
  }
  if (request.after_seq() < 0) return absl::InvalidArgumentError("after_seq: must be >= 0");
  absl::StatusOr<std::vector<rigtune::v1::JobEvent>> events = store_->ListEvents(
      request.id(), request.after_seq(), request.page_size() == 0 ? 500 : request.page_size());
  if (!events.ok()) return events.status();
  rigtune::v1::ListJobEventsResponse response;
  response.set_last_seq(request.after_seq());
  for (auto& event : *events) {
    response.set_last_seq(event.seq());
    *response.add_events() = std::move(event);
  }
  return response;
}

absl::StatusOr<rigtune::v1::ListCheckpointsResponse> Coordinator::ListCheckpoints(
    const std::string& id) {
  if (absl::Status s = CheckId(id); !s.ok()) return s;
  absl::StatusOr<std::vector<rigtune::v1::Checkpoint>> checkpoints = store_->ListCheckpoints(id);
  if (!checkpoints.ok()) return checkpoints.status();
  rigtune::v1::ListCheckpointsResponse response;
  for (auto& checkpoint : *checkpoints) *response.add_checkpoints() = std::move(checkpoint);
  return response;
}

absl::Status Coordinator::WatchJob(const rigtune::v1::WatchJobRequest& request,
                                   const std::function<bool(const rigtune::v1::JobEvent&)>& sink,
                                   const std::function<bool()>& cancelled) {
  if (absl::Status s = CheckId(request.id()); !s.ok()) return s;
  if (request.after_seq() < 0) return absl::InvalidArgumentError("after_seq: must be >= 0");
  int64_t after = request.after_seq();
  while (true) {
    int64_t generation;
    {
      absl::MutexLock lock(&events_mu_);
      generation = event_generation_;
    }
    absl::StatusOr<std::vector<rigtune::v1::JobEvent>> events =
        store_->ListEvents(request.id(), after, 500);
    if (!events.ok()) return events.status();
    for (const rigtune::v1::JobEvent& event : *events) {
      if (!sink(event)) return absl::CancelledError("the watcher went away");
      after = event.seq();
    }
    if (events->empty()) {
      absl::StatusOr<Job> job = store_->GetJob(request.id());
      if (!job.ok()) return job.status();
      if (IsTerminal(job->state()) && after >= job->last_event_seq()) return absl::OkStatus();
      absl::MutexLock lock(&events_mu_);
      auto changed = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(events_mu_) {
        return event_generation_ != generation;
      };
      events_mu_.AwaitWithTimeout(absl::Condition(&changed), absl::Milliseconds(250));
    }
    if (cancelled && cancelled()) return absl::CancelledError("the watcher went away");
  }
}

}  // namespace rigtune::server
