#include "server/job_state.h"

#include "absl/strings/str_cat.h"

namespace rigtune::server {

using Job = rigtune::v1::Job;

bool IsTerminal(State state) {
  return state == Job::CANCELLED || state == Job::SUCCEEDED || state == Job::FAILED;
}

bool HasWorkers(State state) {
  return state == Job::STARTING || state == Job::RUNNING || state == Job::PAUSING ||
         state == Job::CANCELLING;
}

namespace {

bool Allowed(State from, State to) {
  switch (from) {
    case Job::QUEUED:
      return to == Job::STARTING || to == Job::PAUSED || to == Job::CANCELLED ||
             to == Job::FAILED;
    case Job::STARTING:
    case Job::RUNNING:
      // QUEUED: a worker failed and the job waits for a relaunch, or the
      // daemon restarted under it.
      return (to == Job::RUNNING && from == Job::STARTING) || to == Job::PAUSING ||
             to == Job::CANCELLING || to == Job::QUEUED || to == Job::SUCCEEDED ||
             to == Job::FAILED;
    case Job::PAUSING:
      // SUCCEEDED: the run finished before it saw the pause request.
      return to == Job::PAUSED || to == Job::CANCELLING || to == Job::SUCCEEDED ||
             to == Job::FAILED;
    case Job::PAUSED:
      return to == Job::QUEUED || to == Job::CANCELLED;
    case Job::CANCELLING:
      return to == Job::CANCELLED;
    default:
      return false;
  }
}

}  // namespace

absl::Status CheckTransition(State from, State to) {
  if (IsTerminal(from)) {
    return absl::FailedPreconditionError(
        absl::StrCat("job is ", StateName(from), "; terminal states never change"));
  }
  if (!Allowed(from, to)) {
    return absl::FailedPreconditionError(
        absl::StrCat("job is ", StateName(from), "; it cannot become ", StateName(to)));
  }
  return absl::OkStatus();
}

std::string StateName(State state) { return Job::State_Name(state); }

}  // namespace rigtune::server
