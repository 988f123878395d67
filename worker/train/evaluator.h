// Evaluator: the validation loss of a training job.
//
// The mean token cross-entropy over the whole validation set (every target
// token of every held-out row once), computed with the trainer's forward-only
// path (Trainer::LossSum: no dropout, no gradients) through its LayerSource,
// so it works the same on one process, under FSDP sharding and with CPU
// offload. Each rank evaluates its share of the rows (MakeValidationData);
// the sums of loss and target tokens are then added over the ranks, so the
// result is the same for any world size.
//
// ValidationTracker keeps the best loss so far and the evaluations since it,
// for checkpoint.keep_best and train.early_stopping_patience.
//
//   ASSIGN_OR_RETURN(auto eval, Evaluator::Create(job, rank, world_size));
//   if (eval->Due(step, total_steps)) ValidationMetrics v = eval->Evaluate(trainer, device, step);
#ifndef RIGTUNE_WORKER_TRAIN_EVALUATOR_H_
#define RIGTUNE_WORKER_TRAIN_EVALUATOR_H_

#include <c10/core/Device.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/train/batch_source.h"
#include "worker/train/job_config.h"
#include "worker/train/run_job.h"
#include "worker/train/trainer.h"

namespace rigtune::train {

class Evaluator {
 public:
  // Reads, tokenizes and shards the job's validation data for `rank`.
  // Errors name dataset.validation_path or dataset.validation_fraction.
  static absl::StatusOr<std::unique_ptr<Evaluator>> Create(const JobConfig& config, int64_t rank,
                                                           int64_t world_size);

  // Whether to evaluate after optimizer step `step` of `total_steps`: every
  // train.eval_every_steps, and always at the last step.
  bool Due(int64_t step, int64_t total_steps) const;

  // The validation loss of the trainer's current adapters (collective: every
  // rank calls it with the same step).
  ValidationMetrics Evaluate(Trainer& trainer, at::Device device, int64_t step);

  const std::string& summary() const { return data_.summary; }

 private:
  Evaluator(int64_t every_steps, ValidationData data)
      : every_steps_(every_steps), data_(std::move(data)) {}

  int64_t every_steps_;
  ValidationData data_;
};

// The best validation loss so far and how many evaluations did not beat it.
struct ValidationTracker {
  double best = std::numeric_limits<double>::infinity();
  int64_t best_step = 0;
  int64_t evals_since_best = 0;

  // Records one evaluation; true when it is a new best (strictly lower).
  bool Record(const ValidationMetrics& v);
  // True once `patience` (> 0) evaluations in a row brought no new best.
  bool Exhausted(int64_t patience) const { return patience > 0 && evals_since_best >= patience; }
};

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_EVALUATOR_H_
