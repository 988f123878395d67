// FsdpLayers, the streamed part: layers copied up from host memory on a copy
// stream, and (offload_optimizer) gradients copied down and AdamW on the host.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

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

void FsdpLayers::StartStreamedGather(int64_t i, Gathered& g) {
  host_step_.WaitFor(static_cast<size_t>(i));
  g.slot = TakeSlot();
  Slot& s = g.slot;
  copies_.OnCopyStream(copies_.RecordCurrent(), [&] {
    at::Tensor frozen = frozen_shards_[i], lora = lora_shards_[i].detach();
    if (shards_ == 1) {
      // The masters are copied even on the device: the layer computes with
      // leaves of its own, and AdamW updates the masters in place.
      g.trainable = s.trainable.copy_(lora, /*non_blocking=*/true);
      g.frozen = options_.cpu_offload ? s.frozen.copy_(frozen, /*non_blocking=*/true) : frozen;
    } else {
      if (options_.cpu_offload) frozen = s.frozen_shard.copy_(frozen, /*non_blocking=*/true);
      if (options_.offload_optimizer) lora = s.trainable_shard.copy_(lora, /*non_blocking=*/true);
      g.frozen = s.frozen;
      g.trainable = s.trainable;
      g.frozen_pending = shard_comm()->AllGather(s.frozen, frozen);
      g.trainable_pending = shard_comm()->AllGather(s.trainable, lora);
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
  const LayerLayout& layout = layouts_.front();  // every layer has the same sizes
  const auto bytes = at::TensorOptions().device(device_).dtype(at::kByte);
  const auto floats = at::TensorOptions().device(device_).dtype(at::kFloat);
  Slot s;
  s.trainable = at::empty({layout.trainable_floats}, floats);
  if (options_.cpu_offload || shards_ > 1) s.frozen = at::empty({layout.frozen_bytes}, bytes);
  if (shards_ > 1 && options_.cpu_offload) {
    s.frozen_shard = at::empty({layout.frozen_shard_bytes(shards_)}, bytes);
  }
  if (shards_ > 1 && options_.offload_optimizer) {
    s.trainable_shard = at::empty({layout.trainable_shard_floats(shards_)}, floats);
  }
  return s;
}

void FsdpLayers::StageGradients(int64_t i, const at::Tensor& grads) {
  at::Tensor host;
  if (free_staging_.empty()) {
    host = copies_.HostEmpty(grads.numel(), at::kFloat);
  } else {
    host = std::move(free_staging_.back());
    free_staging_.pop_back();
  }
  host.copy_(grads, /*non_blocking=*/true);
  staged_.push_back({i, host, copies_.RecordCurrent()});
  FoldStagedGradients(1);
}

void FsdpLayers::FoldStagedGradients(size_t keep) {
  c10::NoGradGuard no_grad;
  while (staged_.size() > keep) {
    StagedGrad s = std::move(staged_.front());
    staged_.erase(staged_.begin());
    CopyStream::Synchronize(s.copied);
    grad_shards_[s.layer].add_(s.host);
    free_staging_.push_back(std::move(s.host));
  }
}

std::vector<at::Tensor> FsdpLayers::Gradients() {
  if (!adapters_) {
    std::vector<at::Tensor> grads;
    for (const TrainedUnit& t : trained_) grads.push_back(t.grad);
    return grads;
  }
  FoldStagedGradients(0);
  return grad_shards_;
}

void FsdpLayers::ZeroGradients() {
  for (TrainedUnit& t : trained_) t.grad.zero_();
  FoldStagedGradients(0);
  // A host update in flight zeroes each gradient once it has used it.
  if (host_step_.active()) return;
  for (at::Tensor& g : grad_shards_) g.zero_();
}

void FsdpLayers::Update(train::AdamW& optimizer, const std::vector<at::Tensor>& grads,
                        double lr, double grad_scale) {
  if (!adapters_) {
    optimizer.Step(grads, lr, grad_scale);
    PublishTrainedWeights();
    return;
  }
  if (!options_.offload_optimizer) {
    optimizer.Step(grads, lr, grad_scale);
    return;
  }
  // The host update runs AdamW::Update per layer, which takes the gradients
  // as they are: clip them here (the host thread zeroes them afterwards).
  if (grad_scale != 1.0) {
    for (const at::Tensor& g : grads) {
      if (g.defined()) const_cast<at::Tensor&>(g).mul_(grad_scale);
    }
  }
  host_step_.Start(optimizer, grads, lr);
}

int64_t FsdpLayers::host_state_bytes() const {
  int64_t bytes = options_.cpu_offload ? frozen_shard_bytes() : 0;
  // float32 masters, two AdamW moments and the gradients.
  if (options_.offload_optimizer) bytes += trainable_shard_floats() * 4 * 4;
  return bytes;
}

}  // namespace rigtune::dist
