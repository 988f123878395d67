// Coordinator::Recover(): what Start() does with the jobs a previous daemon
// left STARTING, RUNNING, PAUSING or CANCELLING (it was stopped, or killed).
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "server/checkpoint_adoption.h"
#include "server/coordinator.h"

namespace rigtune::server {

using rigtune::v1::Job;
namespace fs = std::filesystem;

absl::Status Coordinator::Recover() {
  absl::StatusOr<std::vector<Job>> left = store_->JobsInStates(
      {Job::STARTING, Job::RUNNING, Job::PAUSING, Job::CANCELLING});
  if (!left.ok()) return left.status();
  for (const Job& stale : *left) {
    // See server/checkpoint_adoption.h; read before the transaction.
    std::optional<rigtune::v1::Checkpoint> unrecorded;
    if (stale.state() == Job::STARTING || stale.state() == Job::RUNNING) {
      unrecorded = NewerCheckpointOnDisk(OutputDirOf(stale), stale.resume_from());
    }
    absl::StatusOr<Job> updated = store_->UpdateJob(stale.id(), [&](Job& job, JobUpdate& update) {
      std::error_code error;
      if (unrecorded && job.resume_from() == stale.resume_from()) {
        unrecorded->set_attempt(job.attempt());
        *unrecorded->mutable_create_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
        job.set_resume_from(unrecorded->path());
        update.checkpoints.push_back(*unrecorded);
        job.set_state(Job::QUEUED);
        update.reason = absl::StrCat("rigtuned restarted; resuming from ", unrecorded->path(),
                                     " (step ", unrecorded->step(),
                                     ", written but not recorded before the restart)");
      } else if (job.state() == Job::PAUSING) {
        job.set_state(Job::PAUSED);
        update.reason = "rigtuned restarted while the job was pausing";
      } else if (job.state() == Job::CANCELLING) {
        job.set_state(Job::CANCELLED);
        update.reason = "rigtuned restarted while the job was cancelling";
      } else if (!job.resume_from().empty() && !fs::exists(job.resume_from(), error)) {
        job.set_state(Job::FAILED);
        job.mutable_error()->set_code("CHECKPOINT_MISSING");
        job.mutable_error()->set_message(absl::StrCat(
            "rigtuned restarted under the job and its latest checkpoint ", job.resume_from(),
            " is missing"));
        update.reason = job.error().message();
      } else {
        job.set_state(Job::QUEUED);
        update.reason = job.resume_from().empty()
                            ? std::string("rigtuned restarted; the job starts over (no checkpoint)")
                            : absl::StrCat("rigtuned restarted; resuming from ", job.resume_from());
      }
      return absl::OkStatus();
    });
    if (!updated.ok()) return updated.status();
    if (updated->resume_from() != stale.resume_from()) {
      metrics_.OnCheckpoint(stale.id(), static_cast<double>(unrecorded->create_time().seconds()));
    }
  }
  NotifyEvents();
  return absl::OkStatus();
}

}  // namespace rigtune::server
