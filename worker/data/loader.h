// DataLoader: what the engine calls to get batches for one rank.
//
// Create() reads and validates the whole dataset, renders and tokenizes every
// example, and reports what it skipped or cut (DataStats). Then each epoch:
//   1. the example order is shuffled with ShuffleRng from the epoch's start
//      state (the state after the previous epoch's shuffle; the first epoch
//      starts from `seed`);
//   2. examples are packed into rows (or one per row without packing);
//   3. rows form global batches of world_size * batch_size rows; rank r gets
//      rows [r * batch_size, (r + 1) * batch_size) of each global batch. The
//      rows left over at the end of an epoch (fewer than a global batch) are
//      skipped, so every rank runs the same number of steps.
// Next() returns the rank's next batch and moves to the next epoch when one
// ends. position() is a small JSON-serializable cursor (epoch, batch,
// rng_state); Restore() on a loader created with the same dataset, tokenizer
// and options continues with exactly the batch an uninterrupted loader would
// have returned next.
//
// Mapping from a job file (worker/train/job_config.h):
//   LoaderOptions o;
//   o.dataset_path = job.dataset.path;        o.format = *ParseDatasetFormat(job.dataset.format);
//   o.train_on_prompt = job.dataset.train_on_prompt;  o.packing = job.dataset.packing;
//   o.context_length = job.train.context_length;      o.batch_size = job.train.batch_size;
//   o.seed = job.train.seed;  o.epochs = job.train.epochs;
//   o.rank = RANK;  o.world_size = WORLD_SIZE;
//   auto tokenizer = Tokenizer::Load(job.model);
//   auto loader = DataLoader::Create(o, **tokenizer);
//   absl::StatusOr<Batch> batch = (*loader)->Next();
// Not thread-safe: one loader per rank, used by one thread.
#ifndef RIGTUNE_WORKER_DATA_LOADER_H_
#define RIGTUNE_WORKER_DATA_LOADER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/dataset.h"
#include "worker/data/example_encoder.h"
#include "worker/data/packing.h"
#include "worker/data/tokenizer.h"

namespace rigtune::data {

struct LoaderOptions {
  std::string dataset_path;
  DatasetFormat format = DatasetFormat::kAlpaca;
  bool train_on_prompt = false;
  bool packing = true;
  bool drop_overlong = false;  // false: truncate to context_length (counted)
  ChatTemplateOptions chat_template;  // messages format: template override and variables
  int64_t context_length = 512;
  int64_t batch_size = 1;
  int64_t rank = 0;
  int64_t world_size = 1;
  uint64_t seed = 42;
  int64_t epochs = 0;  // Next() returns NotFound after this many epochs; 0: no end
  // > 0: split the file with SplitForValidation (validation_split.h) and use
  // the training part, or with `validation_part` the held-out part.
  double validation_fraction = 0;
  bool validation_part = false;
};

// What validation and encoding found; logged by the worker before training.
struct DataStats {
  int64_t records = 0;           // objects read from the file
  int64_t empty = 0;             // skipped: nothing to train on
  int64_t truncated = 0;         // longer than context_length, cut
  int64_t dropped_eos = 0;       // ... of which the cut removed the final EOS / end of turn
  int64_t dropped_overlong = 0;  // skipped instead of cut (drop_overlong)
  int64_t no_target = 0;         // skipped: no trained token left after the cut
  int64_t examples = 0;          // examples used
  int64_t tokens = 0;            // their tokens
  int64_t target_tokens = 0;     // their trained tokens
  int64_t rows = 0;              // rows of the first epoch
  // Real tokens / (rows * context_length) for the first epoch.
  double packing_efficiency = 0;
  std::string ToString() const;
};

struct LoaderPosition {
  int64_t epoch = 0;
  int64_t batch = 0;           // next batch of this epoch
  uint64_t rng_state = 0;      // ShuffleRng state at the start of `epoch`
  std::string ToJson() const;  // {"epoch":0,"batch":3,"rng_state":"000000000000002a"}
  static absl::StatusOr<LoaderPosition> FromJson(const std::string& json_text);
};

class DataLoader {
 public:
  // Fails on invalid options (naming the field), dataset errors (file:line),
  // a messages dataset without a usable chat template, or a dataset too small
  // for one global batch.
  static absl::StatusOr<std::unique_ptr<DataLoader>> Create(const LoaderOptions& options,
                                                            const Tokenizer& tokenizer);
  // From examples already encoded (synthetic data, tests).
  static absl::StatusOr<std::unique_ptr<DataLoader>> FromEncoded(
      std::vector<EncodedExample> examples, const LoaderOptions& options, int32_t pad_id);

  // This rank's next batch; rolls over into the next epoch, and fails with
  // NotFound once `epochs` epochs are done.
  absl::StatusOr<Batch> Next();
  LoaderPosition position() const { return position_; }
  // Fails when the position does not fit this dataset (batch past the epoch).
  absl::Status Restore(const LoaderPosition& position);

  int64_t batches_per_epoch() const;
  int64_t epoch() const { return position_.epoch; }
  const DataStats& stats() const { return stats_; }
  // The current epoch's packed rows, all ranks' (validation walks them all).
  const std::vector<PackedRow>& rows() const { return rows_; }
  int32_t pad_id() const { return pad_id_; }

 private:
  DataLoader(LoaderOptions options, std::vector<EncodedExample> examples, int32_t pad_id);
  void BuildEpoch();  // rows_ for position_.epoch from position_.rng_state

  LoaderOptions options_;
  std::vector<EncodedExample> examples_;
  int32_t pad_id_;
  DataStats stats_;
  LoaderPosition position_;
  std::vector<PackedRow> rows_;    // current epoch, all ranks
  uint64_t next_epoch_state_ = 0;  // rng state after this epoch's shuffle
};

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_LOADER_H_
