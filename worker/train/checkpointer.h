// Checkpointer: saves a running job's state as a checkpoint (checkpoint.h)
// and restores it, on one process or under FSDP, for RunJob.
//
// Saving is collective: FSDP ranks gather their LoRA and AdamW shards to full
// tensors (FsdpLayers::GatherTrainableState) and their data positions; rank 0
// writes the folder and applies the retention policy, and every rank learns
// whether that worked. Restoring is local: every rank reads the full tensors
// and keeps its own slice, so a job saved on N ranks resumes on M. Restored:
// LoRA weights, AdamW moments and step, and this rank's data position (rank
// 0's when the world size changed: both batch sources keep a global
// position), and the early-stopping state. Nothing else is needed: the LR
// schedule and the dropout seeds derive from the step.
//
//   Checkpointer ckpt(config, parts, total_steps);
//   if (!config.resume_from.empty()) RETURN_IF_ERROR(ckpt.Resume(config.resume_from));
//   ... after each step: if (ckpt.Due()) ASSIGN_OR_RETURN(auto info, ckpt.Save(loss));
#ifndef RIGTUNE_WORKER_TRAIN_CHECKPOINTER_H_
#define RIGTUNE_WORKER_TRAIN_CHECKPOINTER_H_

#include <c10/core/Device.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/dist/communicator.h"
#include "worker/dist/fsdp.h"
#include "worker/model/llama.h"
#include "worker/train/batch_source.h"
#include "worker/train/evaluator.h"
#include "worker/train/full_finetune.h"
#include "worker/train/job_config.h"
#include "worker/train/run_job.h"
#include "worker/train/trainer.h"

namespace rigtune::train {

// What one rank trains, as checkpoints see it. Everything must outlive the
// Checkpointer.
struct TrainingParts {
  model::LlamaModel* model = nullptr;  // one process: its LoRA tensors are the state
  dist::FsdpLayers* fsdp = nullptr;    // FSDP: the shards (`model` is then a shell)
  dist::Communicator* comm = nullptr;  // null for one process
  Trainer* trainer = nullptr;          // its AdamW holds the moments and the step
  BatchSource* data = nullptr;
  // With validation data: the early-stopping state (saved and restored) and
  // the latest evaluation (saved as the checkpoint's validation loss when it
  // was made at the saved step).
  ValidationTracker* validation = nullptr;
  const ValidationMetrics* last_validation = nullptr;
  at::Device device = at::kCPU;  // where collective buffers live
  int64_t rank = 0;
  int64_t world_size = 1;
  // train.method full: its float32 masters are the state (keyed by Hugging
  // Face tensor names in the checkpoint's adapter_model.safetensors).
  FullModelLayers* full = nullptr;
};

class Checkpointer {
 public:
  Checkpointer(const JobConfig& config, TrainingParts parts, int64_t total_steps)
      : config_(config), parts_(parts), total_steps_(total_steps) {}

  // Restores the state saved in the checkpoint folder `dir` (not collective).
  // Errors keep ReadCheckpoint's codes (DATA_LOSS for a damaged checkpoint,
  // NOT_FOUND for a missing one) and INVALID_ARGUMENT when the checkpoint
  // does not fit the job (another model shape or lora.r); all name `dir`.
  absl::Status Resume(const std::string& dir);

  // Whether checkpoint.every_steps asks for a save after the step just done.
  bool Due() const;

  // Saves the current state, `loss` being the last step's (collective).
  // Returns nullopt without writing when there is nothing new: no step done
  // yet, or this step already saved (or just resumed from). Every rank gets
  // the same info; only rank 0 writes.
  absl::StatusOr<std::optional<CheckpointInfo>> Save(double loss);

 private:
  // Every rank's BatchSource::Position(), by rank (collective).
  absl::StatusOr<std::vector<std::string>> GatherPositions();

  const JobConfig& config_;
  TrainingParts parts_;
  int64_t total_steps_;
  int64_t saved_step_ = -1;  // the step whose state is on disk
};

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_CHECKPOINTER_H_
