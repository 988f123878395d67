// FsdpLayers, the streamed part: layers copied up from host memory on a copy
// stream, and (offload_optimizer) gradients copied down and AdamW on the host.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <utility>

#include "worker/dist/fsdp.h"

namespace rigtune::dist {

// Note [Streaming layers]
// With cpu_offload (frozen shards in host memory) or offload_optimizer (LoRA
// masters in host memory) a layer is "streamed". StartGather(i), issued one
// layer ahead of use (i+1 in forward, i-1 in recompute/backward), takes a
// Slot (device buffers for one layer, from a free list: in steady state two
// slots, the layer computing and the one arriving), marks the compute
// enqueued so far, and on the copy stream, once that mark is reached (the
// slot's previous layer is done with, AdamW has written the masters), copies
// the layer's host bytes into the slot and, under FSDP, issues the
// all-gathers from it. Acquire(i) makes the compute stream wait for those
// copies by an event: the host never waits for the device, and layer i+1
// crosses the bus while layer i computes. Release(i) returns the slot. Slots
// are allocated once, so nothing is freed across streams. Without CUDA
// (tests) every copy is done when issued and the algorithm is the same.
//
// offload_optimizer: after layer i's backward its gradient shard is copied
// down (on the compute stream, into a pinned staging buffer) and added to the
// host gradient one layer later, when the copy is long done; AdamW then runs
// on the host (Note [Host AdamW overlaps the next forward]), and the next
// forward's StartGather(i) waits for layer i's update before copying it up.
// Trained weights (train.method full, llama_pro) stream through the same
// slots: Note [Offloaded trained weights] in fsdp_weights.cc.

void FsdpLayers::StartStreamedGather(int64_t i, Gathered& g) {
  if (adapters_) host_step_.WaitFor(static_cast<size_t>(i));
  PublishUnit(i);  // a trained layer: its update, rounded into its shard
  g.slot = TakeSlot();
  Slot& s = g.slot;
  // Slots fit the largest layer (llama_pro mixes frozen and dense layers).
  const LayerLayout& layout = layouts_[i];
  auto fit = [](const at::Tensor& buffer, int64_t n) {
    return buffer.defined() ? buffer.narrow(0, 0, n) : buffer;
  };
  at::Tensor full_frozen = fit(s.frozen, layout.frozen_bytes);
  at::Tensor frozen_shard = fit(s.frozen_shard, layout.frozen_shard_bytes(shards_));
  at::Tensor full_trainable = fit(s.trainable, layout.trainable_floats);
  at::Tensor trainable_shard = fit(s.trainable_shard, layout.trainable_shard_floats(shards_));
  copies_.OnCopyStream(copies_.RecordCurrent(), [&] {
    at::Tensor frozen = frozen_shards_[i], lora = lora_shards_[i].detach();
    if (shards_ == 1) {
      // The masters are copied even on the device: the layer computes with
      // leaves of its own, and AdamW updates the masters in place.
      if (adapters_) g.trainable = full_trainable.copy_(lora, /*non_blocking=*/true);
      g.frozen = options_.cpu_offload ? full_frozen.copy_(frozen, /*non_blocking=*/true) : frozen;
    } else {
      if (options_.cpu_offload) frozen = frozen_shard.copy_(frozen, /*non_blocking=*/true);
      g.frozen = full_frozen;
      g.frozen_pending = shard_comm()->AllGather(full_frozen, frozen);
      if (adapters_) {
        if (options_.offload_optimizer) lora = trainable_shard.copy_(lora, /*non_blocking=*/true);
        g.trainable = full_trainable;
        g.trainable_pending = shard_comm()->AllGather(full_trainable, lora);
      }
    }
    g.ready = copies_.RecordCurrent();
  });
}

FsdpLayers::Slot FsdpLayers::TakeSlot() {
  if (!free_slots_.empty()) {
    Slot s = std::move(free_slots_.back());
    free_slots_.pop_back();
    return s;
  }
  // The largest layer's sizes (llama_pro: its dense inserted blocks).
  int64_t frozen = 0, trainable = 0;
  for (const LayerLayout& l : layouts_) {
    frozen = std::max(frozen, l.frozen_bytes);
    trainable = std::max(trainable, l.trainable_floats);
  }
  const auto bytes = at::TensorOptions().device(device_).dtype(at::kByte);
  const auto floats = at::TensorOptions().device(device_).dtype(at::kFloat);
  Slot s;
  if (adapters_) s.trainable = at::empty({trainable}, floats);
  if (options_.cpu_offload || shards_ > 1) s.frozen = at::empty({frozen}, bytes);
  // Every layer's bytes are padded to a multiple of the shard count.
  if (shards_ > 1 && options_.cpu_offload) s.frozen_shard = at::empty({frozen / shards_}, bytes);
  if (adapters_ && shards_ > 1 && options_.offload_optimizer) {
    s.trainable_shard = at::empty({trainable / shards_}, floats);
  }
  return s;
}

void FsdpLayers::StageGradients(const at::Tensor& target, const at::Tensor& grads) {
  // Staging buffers are reused by size (trained units differ in size).
  at::Tensor host;
  auto it = std::find_if(free_staging_.begin(), free_staging_.end(),
                         [&](const at::Tensor& t) { return t.numel() == grads.numel(); });
  if (it == free_staging_.end()) {
    host = copies_.HostEmpty(grads.numel(), at::kFloat);
  } else {
    host = std::move(*it);
    free_staging_.erase(it);
  }
  host.copy_(grads, /*non_blocking=*/true);
  staged_.push_back({target, host, copies_.RecordCurrent()});
  FoldStagedGradients(1);
}

void FsdpLayers::FoldStagedGradients(size_t keep) {
  c10::NoGradGuard no_grad;
  while (staged_.size() > keep) {
    StagedGrad s = std::move(staged_.front());
    staged_.erase(staged_.begin());
    CopyStream::Synchronize(s.copied);
    s.target.add_(s.host);
    free_staging_.push_back(std::move(s.host));
  }
}

std::vector<at::Tensor> FsdpLayers::Gradients() {
  FoldStagedGradients(0);
  if (!adapters_) {
    std::vector<at::Tensor> grads;
    for (const TrainedUnit& t : trained_) grads.push_back(t.grad);
    return grads;
  }
  return grad_shards_;
}

void FsdpLayers::ZeroGradients() {
  FoldStagedGradients(0);
  // A host update in flight zeroes each gradient once it has used it.
  if (host_step_.active()) return;
  for (TrainedUnit& t : trained_) t.grad.zero_();
  for (at::Tensor& g : grad_shards_) g.zero_();
}

void FsdpLayers::Update(train::AdamW& optimizer, const std::vector<at::Tensor>& grads,
                        double lr, double grad_scale) {
  if (!host_optimizer()) {
    optimizer.Step(grads, lr, grad_scale);
    if (!adapters_) PublishTrainedWeights();
    return;
  }
  // The host update runs AdamW::Update per layer, which takes the gradients
  // as they are: clip them here (the host thread zeroes them afterwards).
  if (grad_scale != 1.0) {
    for (const at::Tensor& g : grads) {
      if (g.defined()) const_cast<at::Tensor&>(g).mul_(grad_scale);
    }
  }
  // Trained units: copies gathered before the update hold the old weights;
  // each shard is refreshed at its next gather, once its update is done.
  for (TrainedUnit& t : trained_) {
    DropGathered(t.unit);
    t.stale = true;
  }
  host_step_.Start(optimizer, grads, lr);
}

int64_t FsdpLayers::host_state_bytes() const {
  int64_t bytes = options_.cpu_offload ? frozen_shard_bytes() : 0;
  // float32 masters, two AdamW moments and the gradients.
  if (options_.offload_optimizer) bytes += trainable_shard_floats() * 4 * 4;
  if (host_optimizer()) {
    // Trained units: a master shard of its own (else it is the shard,
    // counted above), the gradient and two moments.
    for (const TrainedUnit& t : trained_) bytes += t.master.numel() * (t.own_master ? 16 : 12);
  }
  return bytes;
}

}  // namespace rigtune::dist
