#include "server/worker_supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace rigtune::server {

namespace {

// The daemon's environment with `overrides` (KEY=VALUE) replacing same keys.
std::vector<std::string> MergeEnv(const std::vector<std::string>& a,
                                  const std::vector<std::string>& b) {
  std::vector<std::string> merged;
  std::set<std::string> keys;
  for (const auto* list : {&b, &a}) {
    for (const std::string& entry : *list) {
      std::string key = entry.substr(0, entry.find('='));
      if (keys.insert(key).second) merged.push_back(entry);
    }
  }
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry(*e);
    if (keys.insert(entry.substr(0, entry.find('='))).second) merged.push_back(entry);
  }
  return merged;
}

std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (std::string& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

constexpr char kHeaderPrefix[] = "=== rigtune: job ";
constexpr char kReasonPrefix[] = "rigtune-worker: ";

std::string DescribeExit(int rank, int status, const std::string& log_path,
                         const std::string& reason) {
  std::string what = WIFSIGNALED(status)
                         ? absl::StrCat("was killed by signal ", WTERMSIG(status))
                         : absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (!reason.empty()) absl::StrAppend(&what, ": ", reason);
  return absl::StrCat("rank ", rank, " ", what, " (log: ", log_path, ")");
}

// 126/127: the worker binary could not be executed; kWorkerExitBadJob: the
// worker found the job itself at fault.
bool Retryable(int status) {
  if (!WIFEXITED(status)) return true;
  const int code = WEXITSTATUS(status);
  return code != kWorkerExitBadJob && code != 126 && code != 127;
}

}  // namespace

std::string ReadWorkerReason(const std::string& log_path) {
  constexpr off_t kTail = 64 * 1024;
  int fd = open(log_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  struct stat st {};
  std::string text;
  if (fstat(fd, &st) == 0) {
    const off_t start = st.st_size > kTail ? st.st_size - kTail : 0;
    text.resize(static_cast<size_t>(st.st_size - start));
    ssize_t got = pread(fd, text.data(), text.size(), start);
    text.resize(got > 0 ? static_cast<size_t>(got) : 0);
  }
  close(fd);
  std::string reason;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, kHeaderPrefix)) reason.clear();
    if (absl::StartsWith(line, kReasonPrefix)) {
      reason = std::string(absl::StripAsciiWhitespace(line.substr(sizeof(kReasonPrefix) - 1)));
    }
  }
  if (reason.size() > 2048) reason.resize(2048);
  return reason;
}

WorkerSupervisor::~WorkerSupervisor() {
  absl::MutexLock lock(&mu_);
  for (auto& [id, group] : groups_) {
    SignalLocked(group, SIGKILL);
    for (Rank& rank : group.ranks) {
      if (rank.running) waitpid(rank.pid, nullptr, 0);
    }
  }
}

absl::Status WorkerSupervisor::Launch(const GroupLaunch& launch) {
  absl::MutexLock lock(&mu_);
  if (groups_.count(launch.job_id)) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", launch.job_id, " already has worker processes"));
  }
  Group group;
  group.attempt = launch.attempt;
  const pid_t parent = getpid();
  for (const RankLaunch& rank : launch.ranks) {
    // Everything the child needs is prepared before fork(): after it, only
    // async-signal-safe calls are allowed in a threaded process.
    std::vector<std::string> argv_strings = {launch.program};
    argv_strings.insert(argv_strings.end(), launch.args.begin(), launch.args.end());
    std::vector<std::string> env_strings = MergeEnv(launch.env, rank.env);
    std::vector<char*> argv = CStrings(argv_strings);
    std::vector<char*> envp = CStrings(env_strings);
    int log_fd = open(rank.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      std::string error = absl::StrCat("cannot open worker log ", rank.log_path, ": ",
                                       std::strerror(errno));
      SignalLocked(group, SIGKILL);
      for (Rank& started : group.ranks) waitpid(started.pid, nullptr, 0);
      return absl::InternalError(error);
    }
    std::string header = absl::StrCat(kHeaderPrefix, launch.job_id, " attempt ",
                                      launch.attempt, " rank ", rank.rank, ": ",
                                      absl::StrJoin(argv_strings, " "), "\n");
    (void)!write(log_fd, header.data(), header.size());
    static constexpr char kExecFailed[] =
        "rigtune-worker: the worker binary could not be executed (check worker_binary)\n";
    pid_t pid = fork();
    if (pid == 0) {
      setpgid(0, 0);
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(126);
      int null_fd = open("/dev/null", O_RDONLY);
      if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
      dup2(log_fd, STDOUT_FILENO);
      dup2(log_fd, STDERR_FILENO);
      // Undo the daemon's signal set-up: a blocked mask and ignored SIGPIPE
      // would both survive exec.
      struct sigaction default_action {};
      default_action.sa_handler = SIG_DFL;
      sigaction(SIGPIPE, &default_action, nullptr);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      execve(argv[0], argv.data(), envp.data());
      (void)!write(STDERR_FILENO, kExecFailed, sizeof(kExecFailed) - 1);
      _exit(127);
    }
    close(log_fd);
    if (pid < 0) {
      std::string error = absl::StrCat("fork failed: ", std::strerror(errno));
      SignalLocked(group, SIGKILL);
      for (Rank& started : group.ranks) waitpid(started.pid, nullptr, 0);
      return absl::InternalError(error);
    }
    group.ranks.push_back({rank.rank, pid, true, rank.log_path});
  }
  groups_[launch.job_id] = std::move(group);
  return absl::OkStatus();
}

void WorkerSupervisor::SignalLocked(Group& group, int signal) {
  for (Rank& rank : group.ranks) {
    if (!rank.running) continue;
    // The rank leads its own process group: reach its children too.
    if (kill(-rank.pid, signal) != 0) kill(rank.pid, signal);
  }
}

void WorkerSupervisor::Stop(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = groups_.find(job_id);
  if (it == groups_.end()) return;
  SignalLocked(it->second, SIGTERM);
  it->second.kill_at = std::min(it->second.kill_at, absl::Now() + grace_);
}

void WorkerSupervisor::Kill(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = groups_.find(job_id);
  if (it != groups_.end()) SignalLocked(it->second, SIGKILL);
}

std::vector<GroupExit> WorkerSupervisor::Poll(absl::Time now) {
  absl::MutexLock lock(&mu_);
  std::vector<GroupExit> exits;
  for (auto it = groups_.begin(); it != groups_.end();) {
    Group& group = it->second;
    for (Rank& rank : group.ranks) {
      if (!rank.running) continue;
      int status = 0;
      pid_t reaped = waitpid(rank.pid, &status, WNOHANG);
      if (reaped == 0) continue;
      rank.running = false;
      // A reaped pid, or one that vanished (ECHILD: reaped elsewhere).
      bool failed = reaped < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
      if (reaped > 0) kill(-rank.pid, SIGKILL);  // strays left in its process group
      if (failed && !group.failed) {
        group.failed = true;
        group.failed_rank = rank.rank;
        std::string reason;
        if (reaped > 0 && WIFEXITED(status)) reason = ReadWorkerReason(rank.log_path);
        group.has_reason = !reason.empty();
        group.retryable = reaped < 0 || Retryable(status);
        group.failure = reaped < 0 ? absl::StrCat("rank ", rank.rank, " vanished")
                                   : DescribeExit(rank.rank, status, rank.log_path, reason);
        SignalLocked(group, SIGTERM);
        group.kill_at = std::min(group.kill_at, now + grace_);
      }
    }
    if (now >= group.kill_at) SignalLocked(group, SIGKILL);
    bool all_done = true;
    for (const Rank& rank : group.ranks) all_done = all_done && !rank.running;
    if (!all_done) {
      ++it;
      continue;
    }
    exits.push_back({it->first, group.attempt, !group.failed, group.failed_rank, group.failure,
                     group.has_reason, group.retryable});
    it = groups_.erase(it);
  }
  return exits;
}

bool WorkerSupervisor::HasGroup(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  return groups_.count(job_id) > 0;
}

std::vector<pid_t> WorkerSupervisor::Pids(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  std::vector<pid_t> pids;
  auto it = groups_.find(job_id);
  if (it == groups_.end()) return pids;
  for (const Rank& rank : it->second.ranks) {
    if (rank.running) pids.push_back(rank.pid);
  }
  return pids;
}

int WorkerSupervisor::group_count() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(groups_.size());
}

}  // namespace rigtune::server
