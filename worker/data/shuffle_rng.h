// ShuffleRng: the loader's deterministic random source (SplitMix64) and a
// Fisher-Yates shuffle built on it. Unlike std::shuffle with a standard
// distribution, the sequence is fixed by this code alone, so every rank,
// compiler and standard library produces the same order for the same state,
// and a saved state (one uint64) replays an epoch exactly. Example:
//
//   ShuffleRng rng(42);
//   std::vector<int64_t> order = {0, 1, 2, 3};
//   rng.Shuffle(&order);     // same permutation everywhere
//   uint64_t saved = rng.state();
#ifndef RIGTUNE_WORKER_DATA_SHUFFLE_RNG_H_
#define RIGTUNE_WORKER_DATA_SHUFFLE_RNG_H_

#include <cstdint>
#include <utility>
#include <vector>

namespace rigtune::data {

class ShuffleRng {
 public:
  explicit ShuffleRng(uint64_t state) : state_(state) {}

  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  // Uniform in [0, n), n > 0, without modulo bias (rejection sampling).
  uint64_t Below(uint64_t n) {
    const uint64_t threshold = (0 - n) % n;
    for (;;) {
      const uint64_t r = Next();
      if (r >= threshold) return r % n;
    }
  }

  template <typename T>
  void Shuffle(std::vector<T>* items) {
    for (size_t i = items->size(); i > 1; --i) {
      std::swap((*items)[i - 1], (*items)[Below(i)]);
    }
  }

  uint64_t state() const { return state_; }

 private:
  uint64_t state_;
};

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_SHUFFLE_RNG_H_
