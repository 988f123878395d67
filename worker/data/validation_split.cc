#include "worker/data/validation_split.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/data/shuffle_rng.h"

namespace rigtune::data {
namespace {

// Keeps the split apart from the loader's epoch shuffles, which start from
// the same job seed.
constexpr uint64_t kSplitStream = 0x76616c6964617465ull;  // "validate"

}  // namespace

absl::StatusOr<SplitExamples> SplitForValidation(std::vector<Example> examples, double fraction,
                                                 uint64_t seed) {
  if (!(fraction > 0 && fraction <= 0.5)) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset.validation_fraction: must be in (0, 0.5], got ", fraction));
  }
  const int64_t n = static_cast<int64_t>(examples.size());
  if (n < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset.validation_fraction: the dataset has ", n,
        " usable example(s); holding some out needs at least 2 (or use dataset.validation_path)"));
  }
  const int64_t held = std::max<int64_t>(1, std::llround(fraction * static_cast<double>(n)));
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  ShuffleRng rng(seed ^ kSplitStream);
  rng.Shuffle(&order);
  std::vector<bool> is_held(n, false);
  for (int64_t i = 0; i < held; ++i) is_held[order[i]] = true;
  SplitExamples out;
  for (int64_t i = 0; i < n; ++i) {
    (is_held[i] ? out.validation : out.train).push_back(std::move(examples[i]));
  }
  return out;
}

}  // namespace rigtune::data
