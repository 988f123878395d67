// WorkerSupervisor: the worker processes of running jobs, one group per job
// with one process per rank.
//
// Launch() fork/execs every rank with its environment and its own log file
// (stdout + stderr, appended). Poll() reaps exited ranks and reports each
// group once all its ranks are gone. When one rank fails (non-zero exit or a
// signal) the rest of its group is torn down: SIGTERM now, SIGKILL after the
// grace period. Stop() does the same on request (pause, cancel, shutdown).
//
// A failed rank's own reason is the last "rigtune-worker: " line of its
// log since this attempt's header (see Note [Final reason line] in
// worker/main.cc); it goes into GroupExit::failure. A rank that exits with
// kWorkerExitBadJob (the job cannot run as given) or cannot be executed
// makes the exit not retryable.
//
// Workers get PR_SET_PDEATHSIG(SIGTERM): if the daemon dies, even by
// SIGKILL, they checkpoint and exit instead of training unsupervised.
// Note [Fork thread]: the death signal follows the thread that forked, so
// the Coordinator launches from its long-lived scheduling thread only.
//
// Thread-safe; internal state guarded by mu_.
#ifndef RIGTUNE_SERVER_WORKER_SUPERVISOR_H_
#define RIGTUNE_SERVER_WORKER_SUPERVISOR_H_

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace rigtune::server {

// rigtune-worker's exit status for "the job cannot run as given" (bad
// config, model or data): relaunching would fail the same way.
inline constexpr int kWorkerExitBadJob = 2;

struct RankLaunch {
  int rank = 0;
  std::vector<std::string> env;  // KEY=VALUE, on top of the group's env
  std::string log_path;
};

struct GroupLaunch {
  std::string job_id;
  int attempt = 0;
  std::string program;            // absolute path of the worker executable
  std::vector<std::string> args;  // argv[1..]
  std::vector<std::string> env;   // KEY=VALUE, on top of the daemon's environment
  std::vector<RankLaunch> ranks;
};

struct GroupExit {
  std::string job_id;
  int attempt = 0;
  bool ok = false;        // every rank exited with status 0
  int failed_rank = -1;   // the first rank that failed
  // e.g. "rank 1 was killed by signal 9 (log: /var/...)" or
  // "rank 0 exited with status 2: dataset.path: ... (log: /var/...)".
  std::string failure;
  bool has_reason = false;  // failure includes the rank's own reason line
  bool retryable = true;    // false: a relaunch would fail the same way
};

// The worker's one-line reason in the log at `log_path`: the last line
// starting with "rigtune-worker: " after the last attempt header, without
// that prefix; empty when there is none. Reads at most the last 64 KiB.
std::string ReadWorkerReason(const std::string& log_path);

class WorkerSupervisor {
 public:
  explicit WorkerSupervisor(absl::Duration grace_period) : grace_(grace_period) {}
  // Kills whatever is still running.
  ~WorkerSupervisor();

  // Starts every rank. FAILED_PRECONDITION when the job already has a group;
  // INTERNAL when a log file cannot be opened or fork fails (ranks already
  // started are killed).
  absl::Status Launch(const GroupLaunch& launch);

  // SIGTERM to every live rank of the job now, SIGKILL after the grace
  // period. A no-op for a job without a group.
  void Stop(const std::string& job_id);

  // SIGKILL to every live rank of the job.
  void Kill(const std::string& job_id);

  // Reaps exits, escalates overdue stops, returns groups that are now gone.
  std::vector<GroupExit> Poll(absl::Time now = absl::Now());

  bool HasGroup(const std::string& job_id) const;
  std::vector<pid_t> Pids(const std::string& job_id) const;
  int group_count() const;

 private:
  struct Rank {
    int rank = 0;
    pid_t pid = 0;
    bool running = true;
    std::string log_path;
  };
  struct Group {
    int attempt = 0;
    std::vector<Rank> ranks;
    bool failed = false;
    int failed_rank = -1;
    std::string failure;
    bool has_reason = false;
    bool retryable = true;
    absl::Time kill_at = absl::InfiniteFuture();
  };

  void SignalLocked(Group& group, int signal) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const absl::Duration grace_;
  mutable absl::Mutex mu_;
  std::map<std::string, Group> groups_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_WORKER_SUPERVISOR_H_
