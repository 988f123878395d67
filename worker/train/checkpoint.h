// Training checkpoints: a folder per saved step, safe against crashes and
// verified on load.
//
// <output_dir>/checkpoints/step-<N>/ holds
//   adapter_model.safetensors, adapter_config.json  the adapter in PEFT's
//       format (LoadAdapter or PeftModel.from_pretrained load it as is);
//   optimizer.safetensors  the full, un-sharded float32 AdamW moments, keyed
//       by PEFT key + ".exp_avg" / ".exp_avg_sq";
//   trainer_state.json     step, total_steps, loss, world_size, each rank's
//       data position (BatchSource::Position()), seed, job_id;
//   manifest.json          every other file with its size and CRC-32; written
//       last, so a folder without it is incomplete.
// Nothing is sharded, so a checkpoint written by N ranks resumes on M.
//
// Writing goes to step-<N>.tmp/ (each file and the folder fsynced), which is
// then renamed to step-<N>/: a crash at any point leaves the checkpoints
// already there intact, and a leftover *.tmp folder is never read and is
// removed by the next write. Reading checks the manifest first and answers
// DATA_LOSS naming the file for anything missing, truncated or corrupt.
//
//   TrainingCheckpoint c;  // filled from the trainer (see checkpointer.h)
//   ASSIGN_OR_RETURN(std::string dir, WriteCheckpoint(job.output_dir, c, job.lora, job.model));
//   RETURN_IF_ERROR(ApplyRetention(job.output_dir, job.checkpoint));
//   ASSIGN_OR_RETURN(TrainingCheckpoint back, ReadCheckpoint(dir));
#ifndef RIGTUNE_WORKER_TRAIN_CHECKPOINT_H_
#define RIGTUNE_WORKER_TRAIN_CHECKPOINT_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/train/checkpoint_manifest.h"
#include "worker/train/job_config.h"

namespace rigtune::train {

// trainer_state.json.
struct TrainerState {
  int64_t step = 0;         // optimizer steps done
  int64_t total_steps = 0;  // planned when the checkpoint was written
  double loss = 0;          // of the last step (keep_best without validation data)
  // The validation loss evaluated at this step (keep_best ranks by it), and
  // the early-stopping state; NaN / unset when the job has no validation or
  // did not evaluate at this step. Optional in the file.
  double validation_loss = std::numeric_limits<double>::quiet_NaN();
  double best_validation_loss = std::numeric_limits<double>::infinity();
  int64_t best_validation_step = 0;
  int64_t evals_since_best = 0;
  int64_t world_size = 1;
  std::vector<std::string> data_positions;  // BatchSource::Position() of rank r at [r]
  uint64_t seed = 0;
  std::string job_id;

  std::string ToJson() const;
  // INVALID_ARGUMENT naming the first missing or mistyped field.
  static absl::StatusOr<TrainerState> FromJson(const std::string& text);
};

// Everything a checkpoint holds, un-sharded, float32 on the CPU.
struct TrainingCheckpoint {
  TrainerState state;
  std::map<std::string, at::Tensor> adapter;    // PEFT key -> LoRA weight
  std::map<std::string, at::Tensor> optimizer;  // PEFT key + ".exp_avg" / ".exp_avg_sq"
};

// <output_dir>/checkpoints and <output_dir>/checkpoints/step-<step>.
std::string CheckpointsRoot(const std::string& output_dir);
std::string CheckpointFolder(const std::string& output_dir, int64_t step);

// Writes `checkpoint` as CheckpointFolder(output_dir, checkpoint.state.step)
// the crash-safe way described above and returns that folder. Leftover
// *.tmp folders are removed first; a complete folder for the same step is
// replaced. `lora` and `base_model` go into adapter_config.json.
absl::StatusOr<std::string> WriteCheckpoint(const std::string& output_dir,
                                            const TrainingCheckpoint& checkpoint,
                                            const LoraConfig& lora, const std::string& base_model);

// VerifyCheckpoint(dir) (checkpoint_manifest.h) checks a folder against its
// manifest without loading tensors.

// VerifyCheckpoint, then reads the three data files. NOT_FOUND when `dir`
// does not exist.
absl::StatusOr<TrainingCheckpoint> ReadCheckpoint(const std::string& dir);

// A complete checkpoint folder (one with a manifest) under CheckpointsRoot.
struct CheckpointEntry {
  int64_t step = 0;
  double loss = 0;
  std::string path;
  double validation_loss = std::numeric_limits<double>::quiet_NaN();  // NaN: not evaluated
};
// The complete checkpoints of `output_dir`, by ascending step (*.tmp and
// other names are ignored; a missing root gives an empty list).
std::vector<CheckpointEntry> ListCheckpoints(const std::string& output_dir);

// Deletes every complete checkpoint except the `keep_last` newest and, with
// `keep_best`, the best one (the earliest on a tie): the lowest validation
// loss among those evaluated at their step, or, when none was (a job
// without validation data), the lowest training loss.
absl::Status ApplyRetention(const std::string& output_dir, const CheckpointConfig& config);

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_CHECKPOINT_H_
