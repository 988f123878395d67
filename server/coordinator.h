// Coordinator: the transport-free core of rigtuned.
//
// It owns the job store, the scheduler and the worker supervisor, and
// implements the JobService and WorkerService operations on plain protobuf
// messages; job_service.cc, worker_service.cc and http_server.cc are thin
// gRPC/REST front ends over it. A background thread (started by Start())
// launches queued jobs, reaps worker exits, retries failed groups and
// escalates stops.
//
//   ASSIGN_OR_RETURN(auto coordinator, Coordinator::Create(options));
//   RETURN_IF_ERROR(coordinator->Start("127.0.0.1:50051"));  // workers dial this
//   ... serve ...
//   coordinator->Shutdown();  // workers checkpoint and stop; next Start() resumes them
//
// Every method is thread-safe.
#ifndef RIGTUNE_SERVER_COORDINATOR_H_
#define RIGTUNE_SERVER_COORDINATOR_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "rigtune/v1/job_service.pb.h"
#include "rigtune/v1/worker_service.pb.h"
#include "server/gpu_monitor.h"
#include "server/job_store.h"
#include "server/metrics.h"
#include "server/scheduler.h"
#include "server/spec_validation.h"
#include "server/worker_supervisor.h"

namespace rigtune::server {

struct CoordinatorOptions {
  std::string state_dir;  // holds jobs/<id>/job.json and jobs/<id>/logs/
  std::string db_path;    // empty: <state_dir>/rigtune.db
  std::vector<int> gpus;  // the GPU inventory
  int cpu_slots = 1;      // concurrent CPU jobs
  std::string worker_binary;
  std::vector<std::string> worker_args;  // appended to every worker's argv
  PathRoots roots;
  std::string output_root;  // default output_dir is <output_root>/<job id>
  int max_restarts = 2;     // for jobs whose spec leaves it unset
  // Each GPU's memory, for admission; 0 = the smallest managed card NVML
  // reports, or unknown without NVML.
  double gpu_memory_gib = 0;
  absl::Duration grace_period = absl::Seconds(30);
  absl::Duration tick = absl::Milliseconds(100);
  std::string worker_token;  // handed to workers as RIGTUNE_TOKEN
  // NVML for the per-GPU gauges (gpu_monitor.h); empty, or a library that
  // does not load (no driver): no GPU gauges.
  std::string nvml_library = GpuMonitor::kDefaultLibrary;
  std::string version = "dev";
  // Called about once a second from the scheduling thread with a one-line
  // summary ("2 running, 1 queued"); rigtuned pings the systemd watchdog here.
  std::function<void(const std::string&)> heartbeat;
};

class Coordinator {
 public:
  // Opens (and migrates) the store and checks the options. Starts nothing.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(CoordinatorOptions options);
  ~Coordinator();

  // Recovers jobs a previous daemon left running (resume from their latest
  // checkpoint, or FAILED naming the missing checkpoint) and starts the
  // scheduling thread. Workers will dial `worker_address`.
  absl::Status Start(const std::string& worker_address);

  // Asks every worker group to checkpoint and stop, waits up to the grace
  // period (then SIGKILL), stops the thread. Jobs that were running stay
  // RUNNING in the store so the next Start() resumes them. Idempotent.
  void Shutdown();

  // ---- JobService ----
  absl::StatusOr<rigtune::v1::Job> CreateJob(const rigtune::v1::CreateJobRequest& request);
  absl::StatusOr<rigtune::v1::Job> GetJob(const std::string& id);
  absl::StatusOr<rigtune::v1::ListJobsResponse> ListJobs(
      const rigtune::v1::ListJobsRequest& request);
  // QUEUED/PAUSED: CANCELLED at once; with workers: CANCELLING until they exit
  // (SIGTERM, SIGKILL after the grace period); CANCELLING: no change.
  absl::StatusOr<rigtune::v1::Job> CancelJob(const std::string& id, const std::string& reason);
  // QUEUED: PAUSED at once; with workers: PAUSING until they checkpoint and
  // exit; PAUSING/PAUSED: no change; CANCELLING: FAILED_PRECONDITION.
  absl::StatusOr<rigtune::v1::Job> PauseJob(const std::string& id);
  // PAUSED: QUEUED (it restarts from its latest checkpoint); QUEUED,
  // STARTING, RUNNING: no change; PAUSING, CANCELLING: FAILED_PRECONDITION.
  absl::StatusOr<rigtune::v1::Job> ResumeJob(const std::string& id);
  absl::StatusOr<rigtune::v1::ListJobEventsResponse> ListJobEvents(
      const rigtune::v1::ListJobEventsRequest& request);
  absl::StatusOr<rigtune::v1::ListCheckpointsResponse> ListCheckpoints(const std::string& id);
  // Hands `sink` every event after request.after_seq, then live events, and
  // returns OK once the job's terminal state change was delivered. Returns
  // CANCELLED when `sink` returns false or `cancelled()` becomes true.
  absl::Status WatchJob(const rigtune::v1::WatchJobRequest& request,
                        const std::function<bool(const rigtune::v1::JobEvent&)>& sink,
                        const std::function<bool()>& cancelled);

  // ---- WorkerService ---- (calls from a stale attempt: FAILED_PRECONDITION)
  absl::StatusOr<rigtune::v1::RegisterResponse> RegisterWorker(
      const rigtune::v1::RegisterRequest& request);
  absl::Status HandleReport(const rigtune::v1::WorkerReport& report);
  rigtune::v1::GetControlResponse GetControl(const rigtune::v1::GetControlRequest& request);
  absl::Status FinishWorker(const rigtune::v1::FinishRequest& request);

  // Moves on every stored event. A watcher that found nothing new after
  // reading generation g waits for it to change (sse_events.h polls this).
  int64_t event_generation() {
    absl::MutexLock lock(&events_mu_);
    return event_generation_;
  }

  ServiceMetrics& metrics() { return metrics_; }
  // True between Start() and Shutdown().
  bool ready() const { return ready_.load(); }

 private:
  // A launched attempt of a job, from launch until its processes are reaped.
  struct Runtime {
    int attempt = 0;
    int world_size = 0;
    std::vector<int> gpus;
    std::set<int> registered;
    bool stop_requested = false;  // GetControl answers STOP
    std::string stop_reason;
    bool stop_signalled = false;  // SIGTERM sent by the scheduling thread
    bool has_result = false;
    bool stopped_early = false;
    rigtune::v1::JobResult result;
    std::string worker_error;  // from a rank's Finish(ok = false)
  };

  Coordinator(CoordinatorOptions options, std::unique_ptr<JobStore> store);

  // Scheduling thread (coordinator.cc).
  void Loop();
  void Tick();
  void ScheduleQueued();
  void Launch(const rigtune::v1::Job& job, const Placement& placement);
  void HandleExit(const GroupExit& exit, const Runtime& runtime);
  absl::Status Recover();  // coordinator_recovery.cc
  // The job counts, fresh from the store, into rigtune_jobs and
  // rigtune_queue_depth (a scrape hook; also feeds the heartbeat).
  std::map<rigtune::v1::Job::State, int> PublishJobCounts();
  void Heartbeat();

  // Shared helpers.
  int GpusFor(const rigtune::v1::JobSpec& spec) const;
  // spec.output_dir, else <output_root>/<job id>.
  std::string OutputDirOf(const rigtune::v1::Job& job) const;
  absl::StatusOr<rigtune::v1::Job> Decorate(rigtune::v1::Job job);
  std::map<std::string, int> QueuePositions();
  void RequestStop(const std::string& id, const std::string& reason);
  absl::StatusOr<Runtime*> CurrentRuntimeLocked(const rigtune::v1::WorkerIdentity& worker)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Wakes watchers after store writes.
  void NotifyEvents();
  void Kick();

  const CoordinatorOptions options_;
  std::unique_ptr<JobStore> store_;
  ServiceMetrics metrics_;
  std::unique_ptr<GpuMonitor> gpu_monitor_;  // null without NVML
  // Card size for admission: options_.gpu_memory_gib, else NVML's; set once
  // in the constructor.
  double card_gib_ = 0;
  WorkerSupervisor supervisor_;
  std::string worker_address_;
  std::atomic<bool> ready_{false};

  absl::Mutex mu_;
  Scheduler scheduler_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Runtime> runtimes_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;      // the thread should exit
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;  // no launches; keep jobs resumable
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;

  absl::Mutex events_mu_;
  int64_t event_generation_ ABSL_GUARDED_BY(events_mu_) = 0;
};

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_COORDINATOR_H_
