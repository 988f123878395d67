// RunJob: trains one rank of one job from its JobConfig, reporting progress
// through callbacks. The worker executable wires these callbacks to the
// coordinator's WorkerService (or to stdout when it runs standalone).
#ifndef RIGTUNE_WORKER_TRAIN_RUN_JOB_H_
#define RIGTUNE_WORKER_TRAIN_RUN_JOB_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "worker/train/job_config.h"

namespace rigtune::train {

struct StepMetrics {
  int64_t step = 0;         // optimizer steps done (1-based after the first)
  int64_t total_steps = 0;  // planned optimizer steps
  int64_t epoch = 0;
  double loss = 0;
  double learning_rate = 0;
  double grad_norm = 0;
  int64_t tokens = 0;              // tokens (non-padding) in this step, all ranks
  double tokens_per_second = 0;    // this step, all ranks
  double step_seconds = 0;
  int64_t gpu_memory_peak_bytes = 0;      // this rank's allocator peak (0 on CPU)
  int64_t gpu_memory_reserved_bytes = 0;
};

// One evaluation of the validation set (train.eval_every_steps and the end).
struct ValidationMetrics {
  int64_t step = 0;       // optimizer steps done when evaluated
  double loss = 0;        // mean token cross-entropy over the whole validation set
  double perplexity = 0;  // exp(loss)
  int64_t tokens = 0;     // its target tokens, all ranks
};

struct CheckpointInfo {
  int64_t step = 0;
  std::string path;  // checkpoint folder
  double loss = 0;
};

struct RunCallbacks {
  std::function<void(const StepMetrics&)> on_step;
  std::function<void(const std::string&)> on_log;  // human-readable progress lines
  std::function<void(const CheckpointInfo&)> on_checkpoint;
  std::function<void(const ValidationMetrics&)> on_validation;  // every rank, same numbers
  // Polled between steps; true asks the run to checkpoint and return early
  // (pause/cancel/SIGTERM). RunResult.stopped_early is then true.
  std::function<bool()> should_stop;
};

struct RunResult {
  int64_t steps = 0;
  int64_t tokens_trained = 0;
  double final_loss = 0;
  // Folder with adapter_model.safetensors + adapter_config.json; empty when
  // stopped early (the state is in the latest checkpoint instead).
  std::string adapter_path;
  bool stopped_early = false;
};

// Runs the job for the rank given by the environment (RANK, WORLD_SIZE,
// LOCAL_RANK, MASTER_ADDR, MASTER_PORT; all optional for a single process).
absl::StatusOr<RunResult> RunJob(const JobConfig& config, const RunCallbacks& callbacks);

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_RUN_JOB_H_
