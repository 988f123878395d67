// Coordinator lifecycle and its scheduling thread: launches, worker exits,
// retries. Recovery at start is in coordinator_recovery.cc. The JobService side is in coordinator_jobs.cc, the
// WorkerService side in coordinator_workers.cc.
#include "server/coordinator.h"

#include <algorithm>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/time_util.h"
#include "server/job_file.h"
#include "server/job_state.h"

namespace rigtune::server {

using rigtune::v1::Job;

namespace {

namespace fs = std::filesystem;

// A TCP port that was free a moment ago, for the group's MASTER_PORT.
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 29500;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 29500;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

std::string JobDir(const CoordinatorOptions& options, const std::string& id) {
  return (fs::path(options.state_dir) / "jobs" / id).string();
}

// The memory of the smallest card among `managed` (NVML indices), in GiB,
// for admission when the daemon was not told a card size; 0 when NVML
// reports none of them.
double SmallestManagedCardGib(const std::vector<GpuSample>& samples,
                              const std::vector<int>& managed) {
  double smallest = 0;
  for (const GpuSample& gpu : samples) {
    if (!gpu.memory_total_bytes) continue;
    if (std::find(managed.begin(), managed.end(), gpu.index) == managed.end()) continue;
    const double gib = *gpu.memory_total_bytes / static_cast<double>(1ull << 30);
    if (smallest == 0 || gib < smallest) smallest = gib;
  }
  return smallest;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(CoordinatorOptions options) {
  if (options.state_dir.empty()) return absl::InvalidArgumentError("state_dir: required");
  if (options.worker_binary.empty()) return absl::InvalidArgumentError("worker_binary: required");
  std::error_code error;
  fs::create_directories(fs::path(options.state_dir) / "jobs", error);
  if (error) {
    return absl::FailedPreconditionError(
        absl::StrCat("state_dir: cannot create ", options.state_dir, ": ", error.message()));
  }
  if (options.db_path.empty()) options.db_path = (fs::path(options.state_dir) / "rigtune.db").string();
  if (options.output_root.empty()) {
    options.output_root = options.roots.output.empty()
                              ? (fs::path(options.state_dir) / "outputs").string()
                              : options.roots.output.front();
  }
  absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(options.db_path);
  if (!store.ok()) return store.status();
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(options), *std::move(store)));
}

Coordinator::Coordinator(CoordinatorOptions options, std::unique_ptr<JobStore> store)
    : options_(std::move(options)),
      store_(std::move(store)),
      metrics_(options_.version),
      supervisor_(options_.grace_period),
      scheduler_(options_.gpus, options_.cpu_slots) {
  if (!options_.nvml_library.empty()) {
    absl::StatusOr<std::unique_ptr<GpuMonitor>> nvml = GpuMonitor::Open(options_.nvml_library);
    if (nvml.ok()) gpu_monitor_ = *std::move(nvml);
  }
  card_gib_ = options_.gpu_memory_gib;
  if (card_gib_ <= 0 && gpu_monitor_) {
    card_gib_ = SmallestManagedCardGib(gpu_monitor_->Sample(), options_.gpus);
  }
  metrics_.AddScrapeHook([this] { PublishJobCounts(); });
  if (gpu_monitor_) {
    metrics_.AddScrapeHook([this] { metrics_.SetGpuSamples(gpu_monitor_->Sample()); });
  }
}

Coordinator::~Coordinator() { Shutdown(); }

absl::Status Coordinator::Start(const std::string& worker_address) {
  worker_address_ = worker_address;
  if (absl::Status s = Recover(); !s.ok()) return s;
  thread_ = std::thread([this] { Loop(); });
  ready_ = true;
  return absl::OkStatus();
}

void Coordinator::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (!thread_.joinable() || shutting_down_) return;
    shutting_down_ = true;
    for (auto& [id, runtime] : runtimes_) {
      runtime.stop_requested = true;
      runtime.stop_reason = "rigtuned is shutting down; the job resumes when it restarts";
    }
  }
  ready_ = false;
  // The scheduling thread signals the groups and reaps them; the supervisor
  // escalates to SIGKILL after the grace period.
  absl::Time deadline = absl::Now() + options_.grace_period + absl::Seconds(5);
  while (supervisor_.group_count() > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void Coordinator::Kick() {
  absl::MutexLock lock(&mu_);
  kicked_ = true;
}

void Coordinator::NotifyEvents() {
  absl::MutexLock lock(&events_mu_);
  ++event_generation_;
}

void Coordinator::Loop() {
  absl::Time last_heartbeat = absl::InfinitePast();
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return kicked_ || stopping_; };
      mu_.AwaitWithTimeout(absl::Condition(&wake), options_.tick);
      if (stopping_) break;
      kicked_ = false;
    }
    Tick();
    if (absl::Now() - last_heartbeat >= absl::Seconds(1)) {
      last_heartbeat = absl::Now();
      Heartbeat();
    }
  }
  // Whatever exited during the last moments of a shutdown.
  Tick();
}

void Coordinator::Tick() {
  std::vector<std::string> to_signal;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, runtime] : runtimes_) {
      if (runtime.stop_requested && !runtime.stop_signalled) {
        runtime.stop_signalled = true;
        to_signal.push_back(id);
      }
    }
  }
  for (const std::string& id : to_signal) supervisor_.Stop(id);
  for (const GroupExit& exit : supervisor_.Poll()) {
    Runtime runtime;
    {
      absl::MutexLock lock(&mu_);
      auto it = runtimes_.find(exit.job_id);
      if (it != runtimes_.end()) {
        runtime = std::move(it->second);
        runtimes_.erase(it);
      }
      scheduler_.Release(exit.job_id);
    }
    HandleExit(exit, runtime);
  }
  ScheduleQueued();
}

void Coordinator::ScheduleQueued() {
  absl::StatusOr<std::vector<Job>> queued = store_->JobsInStates({Job::QUEUED});
  if (!queued.ok() || queued->empty()) return;
  std::vector<QueuedJob> queue;
  std::map<std::string, const Job*> by_id;
  for (size_t i = 0; i < queued->size(); ++i) {
    const Job& job = (*queued)[i];
    queue.push_back({job.id(), GpusFor(job.spec()), job.spec().priority(),
                     static_cast<int64_t>(i)});
    by_id[job.id()] = &job;
  }
  std::vector<Placement> placements;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return;
    placements = scheduler_.Schedule(queue);
  }
  for (const Placement& placement : placements) Launch(*by_id[placement.id], placement);
}

void Coordinator::Launch(const Job& queued, const Placement& placement) {
  const std::string& id = queued.id();
  const int attempt = queued.attempt() + 1;
  const int world_size = placement.gpus.empty() ? 1 : static_cast<int>(placement.gpus.size());
  const std::string job_dir = JobDir(options_, id);
  const std::string log_dir = (fs::path(job_dir) / "logs").string();
  const std::string job_file = (fs::path(job_dir) / "job.json").string();
  const std::string output_dir = OutputDirOf(queued);
  auto fail = [&](const std::string& code, const std::string& message) {
    {
      absl::MutexLock lock(&mu_);
      runtimes_.erase(id);
      scheduler_.Release(id);
    }
    (void)store_->UpdateJob(id, [&](Job& job, JobUpdate& update) {
      if (IsTerminal(job.state())) return absl::FailedPreconditionError("already finished");
      job.set_state(Job::FAILED);
      job.mutable_error()->set_code(code);
      job.mutable_error()->set_message(message);
      update.reason = message;
      return absl::OkStatus();
    });
    NotifyEvents();
  };

  std::error_code error;
  fs::create_directories(log_dir, error);
  if (!queued.resume_from().empty() && !fs::exists(queued.resume_from(), error)) {
    return fail("CHECKPOINT_MISSING",
                absl::StrCat("cannot resume: checkpoint ", queued.resume_from(), " is missing"));
  }
  JobFileContext context{id, output_dir, queued.resume_from(), placement.gpus.empty()};
  if (absl::Status s = WriteFileAtomically(job_file, JobFileJson(queued.spec(), context).dump(2));
      !s.ok()) {
    return fail("LAUNCH_FAILED", std::string(s.message()));
  }
  {
    absl::MutexLock lock(&mu_);
    Runtime& runtime = runtimes_[id];
    runtime = Runtime();
    runtime.attempt = attempt;
    runtime.world_size = world_size;
    runtime.gpus = placement.gpus;
  }
  std::string where = placement.gpus.empty()
                          ? "on the CPU"
                          : absl::StrCat("on GPU(s) ", absl::StrJoin(placement.gpus, ","));
  std::string from = queued.resume_from().empty()
                         ? std::string("from the start")
                         : absl::StrCat("from checkpoint ", queued.resume_from());
  absl::StatusOr<Job> started = store_->UpdateJob(id, [&](Job& job, JobUpdate& update) {
    if (job.state() != Job::QUEUED) {
      return absl::AbortedError("the job left the queue before it could start");
    }
    job.set_state(Job::STARTING);
    job.set_attempt(attempt);
    job.clear_assigned_gpus();
    for (int gpu : placement.gpus) job.add_assigned_gpus(gpu);
    job.set_log_dir(log_dir);
    job.set_queue_position(0);
    if (!job.has_start_time()) {
      *job.mutable_start_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
    }
    update.reason = absl::StrCat("launching ", world_size, " rank(s) ", where, ", attempt ",
                                 attempt, ", ", from);
    return absl::OkStatus();
  });
  if (!started.ok()) {
    absl::MutexLock lock(&mu_);
    runtimes_.erase(id);
    scheduler_.Release(id);
    return;
  }
  NotifyEvents();

  GroupLaunch launch;
  launch.job_id = id;
  launch.attempt = attempt;
  launch.program = options_.worker_binary;
  launch.args = {"--job", job_file, "--coordinator", worker_address_, "--job-id", id};
  launch.args.insert(launch.args.end(), options_.worker_args.begin(), options_.worker_args.end());
  std::vector<std::string> visible;
  for (int gpu : placement.gpus) visible.push_back(absl::StrCat(gpu));
  launch.env = {absl::StrCat("WORLD_SIZE=", world_size), "MASTER_ADDR=127.0.0.1",
                absl::StrCat("MASTER_PORT=", FreePort()),
                absl::StrCat("CUDA_VISIBLE_DEVICES=", absl::StrJoin(visible, ",")),
                // The numbering of nvidia-smi and NVML (gpu_monitor.h), not CUDA's default.
                "CUDA_DEVICE_ORDER=PCI_BUS_ID",
                absl::StrCat("RIGTUNE_JOB_ID=", id), absl::StrCat("RIGTUNE_ATTEMPT=", attempt),
                absl::StrCat("RIGTUNE_COORDINATOR=", worker_address_)};
  if (!options_.worker_token.empty()) {
    launch.env.push_back(absl::StrCat("RIGTUNE_TOKEN=", options_.worker_token));
  }
  for (int rank = 0; rank < world_size; ++rank) {
    RankLaunch r;
    r.rank = rank;
    r.env = {absl::StrCat("RANK=", rank), absl::StrCat("LOCAL_RANK=", rank)};
    r.log_path = (fs::path(log_dir) / absl::StrCat("rank", rank, ".log")).string();
    launch.ranks.push_back(std::move(r));
  }
  if (absl::Status s = supervisor_.Launch(launch); !s.ok()) {
    fail("LAUNCH_FAILED", std::string(s.message()));
  }
}

void Coordinator::HandleExit(const GroupExit& exit, const Runtime& runtime) {
  bool shutting_down;
  {
    absl::MutexLock lock(&mu_);
    shutting_down = shutting_down_;
  }
  bool restarted = false;
  absl::StatusOr<Job> updated = store_->UpdateJob(exit.job_id, [&](Job& job, JobUpdate& update) {
    const bool finished = exit.ok && runtime.has_result && !runtime.stopped_early;
    if (job.state() == Job::CANCELLING) {
      job.set_state(Job::CANCELLED);
      update.reason = "workers stopped";
    } else if (finished && (job.state() == Job::RUNNING || job.state() == Job::STARTING ||
                            job.state() == Job::PAUSING)) {
      job.set_state(Job::SUCCEEDED);
      *job.mutable_result() = runtime.result;
      update.reason = absl::StrCat("trained ", runtime.result.steps(), " steps");
    } else if (job.state() == Job::PAUSING) {
      job.set_state(Job::PAUSED);
      update.reason = exit.ok ? "workers checkpointed and stopped"
                              : absl::StrCat("workers stopped: ", exit.failure);
    } else if ((job.state() == Job::RUNNING || job.state() == Job::STARTING) && !shutting_down) {
      std::string failure =
          !exit.ok ? exit.failure
          : runtime.stopped_early ? std::string("workers stopped early without being asked")
                                  : std::string("workers exited without reporting a result");
      if (!runtime.worker_error.empty() && !exit.has_reason) {
        absl::StrAppend(&failure, ": ", runtime.worker_error);
      }
      const int max_restarts = job.spec().has_max_restarts() ? job.spec().max_restarts()
                                                               : options_.max_restarts;
      if (!exit.retryable) {
        // Note [Deterministic failures]: the worker found the job itself at
        // fault (config, model, data); a relaunch would fail the same way.
        job.set_state(Job::FAILED);
        job.mutable_error()->set_code("INVALID_JOB");
        job.mutable_error()->set_message(failure);
        update.reason = absl::StrCat(failure, " (not retried: the job itself is at fault)");
      } else if (job.restarts() < max_restarts) {
        job.set_restarts(job.restarts() + 1);
        job.set_state(Job::QUEUED);
        update.reason = absl::StrCat(failure, "; restart ", job.restarts(), " of ", max_restarts,
                                     job.resume_from().empty()
                                         ? std::string(" from the start")
                                         : absl::StrCat(" from ", job.resume_from()));
        restarted = true;
      } else {
        job.set_state(Job::FAILED);
        job.mutable_error()->set_code("WORKER_FAILED");
        job.mutable_error()->set_message(
            absl::StrCat(failure, " (after ", job.restarts(), " restart(s))"));
        update.reason = job.error().message();
      }
    }
    return absl::OkStatus();
  });
  if (restarted) metrics_.OnWorkerRestart();
  if (updated.ok() && IsTerminal(updated->state())) metrics_.OnJobFinished(exit.job_id);
  NotifyEvents();
  Kick();
}

std::map<Job::State, int> Coordinator::PublishJobCounts() {
  absl::StatusOr<std::map<Job::State, int>> counts = store_->CountByState();
  if (!counts.ok()) return {};
  metrics_.SetJobCounts(*counts);
  metrics_.SetQueueDepth((*counts)[Job::QUEUED]);
  return *counts;
}

void Coordinator::Heartbeat() {
  if (!options_.heartbeat) return;
  std::map<Job::State, int> counts = PublishJobCounts();
  options_.heartbeat(absl::StrCat(counts[Job::RUNNING] + counts[Job::STARTING], " running, ",
                                  counts[Job::QUEUED], " queued, ", counts[Job::PAUSED],
                                  " paused"));
}

std::string Coordinator::OutputDirOf(const Job& job) const {
  return job.spec().output_dir().empty() ? (fs::path(options_.output_root) / job.id()).string()
                                         : job.spec().output_dir();
}

int Coordinator::GpusFor(const rigtune::v1::JobSpec& spec) const {
  if (spec.has_gpus()) return spec.gpus();
  return options_.gpus.empty() ? 0 : 1;
}

}  // namespace rigtune::server
