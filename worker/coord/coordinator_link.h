// CoordinatorLink: a worker rank's connection to rigtuned's WorkerService.
//
// Connect() registers the rank; afterwards step metrics, log lines and
// checkpoints are queued and streamed by a background thread (callers never
// block on the network), which also polls every 500 ms for a stop request
// (pause, cancel, daemon shutdown). Finish() flushes the stream and reports
// the outcome.
//
// LibTorch-free and protobuf-free in its interface: the engine side
// (worker/main.cc) sees only this header and worker/train/run_job.h.
//
//   ASSIGN_OR_RETURN(auto link, CoordinatorLink::Connect(address, identity, token));
//   callbacks.on_step = [&](const train::StepMetrics& m) { link->ReportStep(m); };
//   callbacks.should_stop = [&] { return link->StopRequested(); };
//   absl::StatusOr<train::RunResult> result = train::RunJob(config, callbacks);
//   link->Finish(result);
#ifndef RIGTUNE_WORKER_COORD_COORDINATOR_LINK_H_
#define RIGTUNE_WORKER_COORD_COORDINATOR_LINK_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/train/run_job.h"

namespace rigtune::worker {

struct LinkIdentity {
  std::string job_id;
  int rank = 0;
  int world_size = 1;
  int attempt = 0;
};

// RANK, WORLD_SIZE, RIGTUNE_JOB_ID and RIGTUNE_ATTEMPT from the environment
// (as rigtuned's supervisor sets them); absent ones keep their defaults.
LinkIdentity LinkIdentityFromEnv();

class CoordinatorLink {
 public:
  // Registers with the coordinator at `address` (host:port). UNAVAILABLE
  // after ~10 s of failed attempts; FAILED_PRECONDITION when the
  // coordinator does not run this attempt of the job.
  static absl::StatusOr<std::unique_ptr<CoordinatorLink>> Connect(const std::string& address,
                                                                  const LinkIdentity& identity,
                                                                  const std::string& token);
  ~CoordinatorLink();
  CoordinatorLink(const CoordinatorLink&) = delete;
  CoordinatorLink& operator=(const CoordinatorLink&) = delete;

  // Queued; never blocks on the network.
  void ReportStep(const train::StepMetrics& metrics);
  void ReportLog(const std::string& line);
  void ReportValidation(const train::ValidationMetrics& validation);
  // Flushes the queue, then blocks (up to ~15 s) until the coordinator has
  // recorded the checkpoint: a crash right after it still resumes from it.
  absl::Status ReportCheckpoint(const train::CheckpointInfo& checkpoint);

  // True once the coordinator asked this rank to checkpoint and stop, or no
  // longer knows this attempt.
  bool StopRequested() const;
  std::string stop_reason() const;

  // Flushes queued reports, then tells the coordinator how the run ended.
  absl::Status Finish(const absl::StatusOr<train::RunResult>& result);

 private:
  class Impl;
  explicit CoordinatorLink(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rigtune::worker

#endif  // RIGTUNE_WORKER_COORD_COORDINATOR_LINK_H_
