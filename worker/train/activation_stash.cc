#include "worker/train/activation_stash.h"

#include <ATen/ATen.h>

#include <optional>
#include <stdexcept>

#include "worker/plan/memory_plan.h"

#ifdef RIGTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace rigtune::train {

// Note [Offload on a copy stream]
// -------------------------------
// A copy issued on the compute stream stalls the layers behind it (64 MB per
// layer input at 7B, 4 × 2048: ~1.5-3 ms each way over PCIe, 32 layers; a
// kept gate/up product is 5.4 times that). On a side stream it overlaps them
// instead. Ordering is by events: the copy stream waits for the compute
// stream before reading a tensor it did not produce, and the compute stream
// waits for a prefetch's event before using it. Lifetimes are by
// record_stream: a device tensor read or written on the other stream is
// marked used there, so the caching allocator does not hand its memory out
// again before that stream is done with it. Pinned host buffers come from
// LibTorch's host caching allocator, which records the copy's stream itself.
//
// record_stream frees a block only once the allocator sees the copy done,
// and the host runs ahead of the device: were the copies slower than the
// layers (a kept product is ~360 MB per layer at 7B, 4 × 2048), every layer's
// tensor would stay allocated behind them. So each offloaded tensor's copy
// records a `copied` event, and Put of layer i first waits on the host for
// the copies of layer i − plan::kOffloadLayersInFlight: the device then
// holds the tensors of at most that many layers in flight (the memory plan
// counts them), while the compute stream still has those layers queued.
// Note [Prefetch into the compute stream's pool]
// ----------------------------------------------
// The caching allocator keeps one pool per stream. Prefetched tensors
// allocated on the copy stream lived in its pool and, once used, went back
// there, away from the compute stream's pool where the forward's tensors of
// the same sizes come from, and uncapped the reserved memory grew by
// gigabytes a step while the allocated peak stayed (Llama-3-8B keep_mlp
// with offload, 4 × 2048: 14.6 → 39.8 GiB reserved over 6 steps; prefetched
// into the compute stream's pool: 14.1 → 14.2 GiB, on one H200). So the prefetch
// takes its memory from the compute stream's pool, and the copy stream
// first waits for the compute work queued so far (Take runs when a layer's
// backward is queued, so the copy still overlaps the next one).
#ifdef RIGTUNE_WITH_CUDA
struct ActivationStash::CopyStream {
  std::optional<at::cuda::CUDAStream> stream;
  std::vector<at::cuda::CUDAEvent> ready;   // per entry: its prefetch has landed
  std::vector<at::cuda::CUDAEvent> copied;  // per entry: its copy to the host is done
  int64_t waited_through = -1;              // layers whose copies are known done

  at::cuda::CUDAStream Get(at::Device device) {
    if (!stream) stream = at::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
    return *stream;
  }
};
#else
struct ActivationStash::CopyStream {};
#endif

ActivationStash::ActivationStash(int64_t num_layers, int num_slots, bool offload)
    : num_layers_(num_layers),
      num_slots_(num_slots),
      offload_(offload),
      stash_(num_layers * num_slots),
      fetched_(num_layers * num_slots),
      copy_(std::make_unique<CopyStream>()) {
#ifdef RIGTUNE_WITH_CUDA
  copy_->ready.resize(num_layers * num_slots);
  copy_->copied.resize(num_layers * num_slots);
#endif
}

ActivationStash::~ActivationStash() = default;

bool ActivationStash::Has(int64_t i, int slot) const { return stash_[Index(i, slot)].defined(); }

void ActivationStash::WaitForCopiesThrough(int64_t i) {
#ifdef RIGTUNE_WITH_CUDA
  for (int64_t j = copy_->waited_through + 1; j <= i; ++j) {
    for (int s = 0; s < num_slots_; ++s) {
      at::cuda::CUDAEvent& done = copy_->copied[Index(j, s)];
      if (done.isCreated()) done.synchronize();
    }
  }
  if (i > copy_->waited_through) copy_->waited_through = i;
#else
  (void)i;
#endif
}

void ActivationStash::Put(int64_t i, int slot, const at::Tensor& t, bool may_offload) {
  if (i < 0 || i >= num_layers_ || slot < 0 || slot >= num_slots_) {
    throw std::out_of_range("ActivationStash::Put: no such layer or slot");
  }
  // The last layer's tensors are the first ones taken back: they stay.
  const bool last = i + 1 == num_layers_;
  if (!offload_ || !may_offload || !t.is_cuda() || last) {
    stash_[Index(i, slot)] = t;
    return;
  }
#ifdef RIGTUNE_WITH_CUDA
  WaitForCopiesThrough(i - plan::kOffloadLayersInFlight);
  const c10::cuda::CUDAGuard guard(t.device());
  at::cuda::CUDAStream compute = at::cuda::getCurrentCUDAStream(t.device().index());
  at::cuda::CUDAStream side = copy_->Get(t.device());
  at::cuda::CUDAEvent produced;
  produced.record(compute);
  produced.block(side);
  at::Tensor host = at::empty(t.sizes(), t.options().device(at::kCPU).pinned_memory(true));
  {
    const c10::cuda::CUDAStreamGuard on_side(side);
    host.copy_(t, /*non_blocking=*/true);
  }
  copy_->copied[Index(i, slot)].record(side);
  t.record_stream(side.unwrap());
  stash_[Index(i, slot)] = host;
#endif
}

at::Tensor ActivationStash::Take(int64_t i, int slot, at::Device device) {
  const size_t k = Index(i, slot);
  at::Tensor out;
  if (fetched_[k].defined()) {
#ifdef RIGTUNE_WITH_CUDA
    const c10::cuda::CUDAGuard guard(device);
    copy_->ready[k].block(at::cuda::getCurrentCUDAStream(device.index()));
#endif
    out = fetched_[k];
  } else if (stash_[k].defined()) {
    out = stash_[k].device() == device ? stash_[k] : stash_[k].to(device, /*non_blocking=*/true);
  } else {
    throw std::logic_error("ActivationStash::Take: nothing was put in this layer's slot");
  }
  stash_[k] = at::Tensor();
  fetched_[k] = at::Tensor();
  if (i > 0) Prefetch(i - 1, slot, device);
  return out;
}

void ActivationStash::Prefetch(int64_t i, int slot, at::Device device) {
  const size_t k = Index(i, slot);
  if (!offload_ || !device.is_cuda() || !stash_[k].defined() || stash_[k].is_cuda()) return;
#ifdef RIGTUNE_WITH_CUDA
  // The device copy comes from the compute stream's pool (Note [Prefetch
  // into the compute stream's pool]); the copy waits for the work queued so
  // far, which may still read the memory that pool hands out.
  const c10::cuda::CUDAGuard guard(device);
  at::cuda::CUDAStream compute = at::cuda::getCurrentCUDAStream(device.index());
  at::cuda::CUDAStream side = copy_->Get(device);
  at::Tensor up = at::empty(stash_[k].sizes(), stash_[k].options().device(device));
  at::cuda::CUDAEvent queued;
  queued.record(compute);
  queued.block(side);
  {
    const c10::cuda::CUDAStreamGuard on_side(side);
    up.copy_(stash_[k], /*non_blocking=*/true);
  }
  copy_->ready[k].record(side);
  up.record_stream(side.unwrap());
  fetched_[k] = up;
#endif
}

}  // namespace rigtune::train
