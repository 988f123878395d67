// Validation split: a deterministic held-out part of a training dataset
// (dataset.validation_fraction).
//
// The held-out examples are chosen by a ShuffleRng permutation seeded from
// `seed`, so the same file and seed give the same split on every rank, in
// every run and after a resume; which examples are held out does not depend
// on the world size or the batch size. The training part keeps the file's
// order (the loader shuffles it per epoch). Example:
//
//   auto examples = ReadDataset(path, format, &stats);
//   auto parts = SplitForValidation(*std::move(examples), 0.1, job.train.seed);
//   // parts->train for training, parts->validation for the validation loss
#ifndef RIGTUNE_WORKER_DATA_VALIDATION_SPLIT_H_
#define RIGTUNE_WORKER_DATA_VALIDATION_SPLIT_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/dataset.h"

namespace rigtune::data {

struct SplitExamples {
  std::vector<Example> train;
  std::vector<Example> validation;  // in the file's order
};

// Holds out round(fraction * n) examples (at least one) of `examples`.
// INVALID_ARGUMENT naming dataset.validation_fraction when `fraction` is
// outside (0, 0.5] or the dataset has fewer than two examples.
absl::StatusOr<SplitExamples> SplitForValidation(std::vector<Example> examples, double fraction,
                                                 uint64_t seed);

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_VALIDATION_SPLIT_H_
