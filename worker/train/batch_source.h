// BatchSource: where a training run gets its micro-batches.
//
// SyntheticBatchSource draws token ids from a seed (random: models without a
// dataset: benchmarks, memory tests). DatasetBatchSource tokenizes, formats,
// masks and packs a dataset file through worker/data. Both can report and
// restore their position, so a resumed run continues with the next batch.
#ifndef RIGTUNE_WORKER_TRAIN_BATCH_SOURCE_H_
#define RIGTUNE_WORKER_TRAIN_BATCH_SOURCE_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/packing.h"
#include "worker/train/job_config.h"
#include "worker/train/trainer.h"

namespace rigtune::train {

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // The next micro-batch on `device`; NOT_FOUND at the end of the data.
  virtual absl::StatusOr<TrainBatch> Next(at::Device device) = 0;
  // Micro-batches in one epoch for this rank (for progress and schedules).
  virtual int64_t BatchesPerEpoch() const = 0;
  virtual int64_t epoch() const = 0;
  // Opaque JSON position (epoch, index, RNG) for checkpoints.
  virtual std::string Position() const = 0;
  virtual absl::Status Restore(const std::string& position) = 0;
  // Human-readable statistics (examples, truncated, packing efficiency).
  virtual std::string Summary() const = 0;
};

// `vocab_size` bounds the ids; every position is a target. Each global
// batch holds batch_size x world_size rows drawn from the seed; rank r takes
// rows [r * batch_size, (r + 1) * batch_size), so N ranks see exactly the
// rows one rank with N times the batch size would.
std::unique_ptr<BatchSource> MakeSyntheticBatchSource(int64_t vocab_size, int64_t batch_size,
                                                      int64_t seq_len, int64_t batches_per_epoch,
                                                      int64_t epochs, uint64_t seed,
                                                      int64_t rank = 0, int64_t world_size = 1);

// Reads `config.dataset` with the tokenizer of `model_dir`, for data-parallel
// `rank` of `world_size`.
absl::StatusOr<std::unique_ptr<BatchSource>> MakeDatasetBatchSource(const JobConfig& config,
                                                                    const std::string& model_dir,
                                                                    int64_t rank,
                                                                    int64_t world_size);

// The engine's micro-batch for packed rows of worker/data (attention mask
// and variable-length boundaries when a row holds several examples).
TrainBatch ToTrainBatch(const data::Batch& batch, at::Device device);

// This rank's share of the validation set (dataset.validation_path, or the
// held-out dataset.validation_fraction of dataset.path), tokenized and packed
// like the training data, kept as compact token arrays (tensors and masks are
// made per batch when evaluated). Every rank gets the same number of batches
// (an empty one, rows == 0, where a rank is past the last row), and across
// ranks every row appears exactly once.
struct ValidationData {
  std::vector<data::Batch> batches;
  int32_t pad_id = 0;
  std::string summary;  // what the loader found, for the log
};
absl::StatusOr<ValidationData> MakeValidationData(const JobConfig& config,
                                                  const std::string& model_dir, int64_t rank,
                                                  int64_t world_size);

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_BATCH_SOURCE_H_
