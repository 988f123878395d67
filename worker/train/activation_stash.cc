#include "worker/train/activation_stash.h"

#include <ATen/ATen.h>

#include <optional>

#ifdef RIGTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace rigtune::train {

// Note [Offload on a copy stream]
// -------------------------------
// A copy issued on the compute stream stalls the layers behind it (64 MB per
// layer input at 7B, 4 × 2048: ~1.5-3 ms each way over PCIe, 32 layers). On a
// side stream it overlaps them instead. Ordering is by events: the copy
// stream waits for the compute stream before reading a tensor it did not
// produce, and the compute stream waits for a prefetch's event before using
// it. Lifetimes are by record_stream: a device tensor read or written on the
// other stream is marked used there, so the caching allocator does not hand
// its memory out again before that stream is done with it. Pinned host
// buffers come from LibTorch's host caching allocator, which records the
// copy's stream itself.
#ifdef RIGTUNE_WITH_CUDA
struct ActivationStash::CopyStream {
  std::optional<at::cuda::CUDAStream> stream;
  std::vector<at::cuda::CUDAEvent> ready;  // per layer: its prefetch has landed

  at::cuda::CUDAStream Get(at::Device device) {
    if (!stream) stream = at::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
    return *stream;
  }
};
#else
struct ActivationStash::CopyStream {};
#endif

ActivationStash::ActivationStash(int64_t num_layers, bool offload)
    : offload_(offload),
      stash_(num_layers),
      fetched_(num_layers),
      copy_(std::make_unique<CopyStream>()) {
#ifdef RIGTUNE_WITH_CUDA
  copy_->ready.resize(num_layers);
#endif
}

ActivationStash::~ActivationStash() = default;

void ActivationStash::Put(int64_t i, const at::Tensor& t) {
  // The last layer's input is the first one taken back: it stays.
  const bool last = i + 1 == static_cast<int64_t>(stash_.size());
  if (!offload_ || !t.is_cuda() || last) {
    stash_[i] = t;
    return;
  }
#ifdef RIGTUNE_WITH_CUDA
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
  t.record_stream(side.unwrap());
  stash_[i] = host;
#endif
}

at::Tensor ActivationStash::Take(int64_t i, at::Device device) {
  at::Tensor out;
  if (fetched_[i].defined()) {
#ifdef RIGTUNE_WITH_CUDA
    const c10::cuda::CUDAGuard guard(device);
    copy_->ready[i].block(at::cuda::getCurrentCUDAStream(device.index()));
    fetched_[i].record_stream(at::cuda::getCurrentCUDAStream(device.index()).unwrap());
#endif
    out = fetched_[i];
  } else {
    out = stash_[i].device() == device ? stash_[i] : stash_[i].to(device, /*non_blocking=*/true);
  }
  stash_[i] = at::Tensor();
  fetched_[i] = at::Tensor();
  if (i > 0) Prefetch(i - 1, device);
  return out;
}

void ActivationStash::Prefetch(int64_t i, at::Device device) {
  if (!offload_ || !device.is_cuda() || !stash_[i].defined() || stash_[i].is_cuda()) return;
#ifdef RIGTUNE_WITH_CUDA
  const c10::cuda::CUDAGuard guard(device);
  at::cuda::CUDAStream side = copy_->Get(device);
  const c10::cuda::CUDAStreamGuard on_side(side);
  fetched_[i] = stash_[i].to(device, /*non_blocking=*/true);
  copy_->ready[i].record(side);
#endif
}

}  // namespace rigtune::train
