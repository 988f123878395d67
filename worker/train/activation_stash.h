// ActivationStash: what the checkpointed step keeps of every decoder layer
// between the no-grad forward pass and that layer's recompute: its input,
// and with train.recompute keep_mlp its MLP's gate/up product (Note [Keeping
// the gate/up product] in llama.cc). Each kept tensor has a slot; a layer
// may fill any of them.
//
// Without offload a stashed tensor simply stays where it is. With offload (a
// CUDA tensor, TrainerOptions::activation_offload) it moves to pinned host
// memory on a side copy stream, so the device-to-host copy overlaps the next
// layers' compute, and Take(i, slot) prefetches layer i − 1's tensor of that
// slot back up on that stream while layer i's backward runs. At most
// plan::kOffloadLayersInFlight layers' copies are outstanding at a time: a
// Put waits (on the host) for older ones, so a copy slower than the compute
// holds the device memory of a bounded number of layers. See
// Note [Offload on a copy stream].
//
// Example (the trainer's checkpointed step):
//   ActivationStash stash(num_layers, kNumSlots, /*offload=*/true);
//   for (i = 0..n-1) { stash.Put(i, kInput, h); h = layer_i(h); }
//   for (i = n-1..0) { at::Tensor x = stash.Take(i, kInput, device); ... backward ... }
#ifndef RIGTUNE_WORKER_TRAIN_ACTIVATION_STASH_H_
#define RIGTUNE_WORKER_TRAIN_ACTIVATION_STASH_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace rigtune::train {

class ActivationStash {
 public:
  ActivationStash(int64_t num_layers, int num_slots, bool offload);
  ~ActivationStash();

  // Keeps `t` (produced on the current stream) as layer i's tensor in `slot`;
  // with `may_offload` false it stays on the device even with offload.
  void Put(int64_t i, int slot, const at::Tensor& t, bool may_offload = true);
  // Whether layer i's `slot` holds a tensor (Put and not yet taken).
  bool Has(int64_t i, int slot) const;
  // Layer i's tensor in `slot` on `device`, ready for use on the current
  // stream, and forgotten here; starts bringing layer i − 1's tensor of the
  // same slot up. Layers are taken from the last to the first.
  at::Tensor Take(int64_t i, int slot, at::Device device);

 private:
  struct CopyStream;  // CUDA side stream and per-entry events (CUDA builds)
  void Prefetch(int64_t i, int slot, at::Device device);
  // Waits until the copies of layers up to i have finished (no-op on CPU).
  void WaitForCopiesThrough(int64_t i);
  size_t Index(int64_t i, int slot) const { return static_cast<size_t>(i) * num_slots_ + slot; }

  int64_t num_layers_;
  int num_slots_;
  bool offload_;
  std::vector<at::Tensor> stash_;    // per (layer, slot): device tensor, or pinned host copy
  std::vector<at::Tensor> fetched_;  // device copies brought up ahead of Take
  std::unique_ptr<CopyStream> copy_;
};

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_ACTIVATION_STASH_H_
