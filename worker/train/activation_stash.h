// ActivationStash: the checkpointed input of every decoder layer, kept
// between the no-grad forward pass and that layer's recompute.
//
// Without offload a stashed tensor simply stays where it is. With offload (a
// CUDA tensor, TrainerOptions::activation_offload) it moves to pinned host
// memory on a side copy stream, so the device-to-host copy overlaps the next
// layers' compute, and Take(i) prefetches layer i − 1's input back up on that
// stream while layer i's backward runs. See Note [Offload on a copy stream].
//
// Example (the trainer's checkpointed step):
//   ActivationStash stash(num_layers, /*offload=*/true);
//   for (i = 0..n-1) { stash.Put(i, h); h = layer_i(h); }
//   for (i = n-1..0) { at::Tensor x = stash.Take(i, device); ... backward ... }
#ifndef RIGTUNE_WORKER_TRAIN_ACTIVATION_STASH_H_
#define RIGTUNE_WORKER_TRAIN_ACTIVATION_STASH_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace rigtune::train {

class ActivationStash {
 public:
  ActivationStash(int64_t num_layers, bool offload);
  ~ActivationStash();

  // Keeps `t` (layer i's input, produced on the current stream).
  void Put(int64_t i, const at::Tensor& t);
  // Layer i's input on `device`, ready for use on the current stream, and
  // forgotten here; starts bringing layer i − 1's input up. Layers are taken
  // from the last to the first.
  at::Tensor Take(int64_t i, at::Device device);

 private:
  struct CopyStream;  // CUDA side stream and per-layer events (CUDA builds)
  void Prefetch(int64_t i, at::Device device);

  bool offload_;
  std::vector<at::Tensor> stash_;    // device tensor, or pinned host copy
  std::vector<at::Tensor> fetched_;  // device copies brought up ahead of Take
  std::unique_ptr<CopyStream> copy_;
};

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_ACTIVATION_STASH_H_
