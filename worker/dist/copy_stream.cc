#include "worker/dist/copy_stream.h"

#include <ATen/ATen.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <cstdlib>

#ifdef RIGTUNE_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace rigtune::dist {
namespace {

c10::impl::VirtualGuardImpl Impl(const at::Device& device) {
  return c10::impl::VirtualGuardImpl(device.type());
}

}  // namespace

CopyStream::CopyStream(at::Device device) : device_(device) {
  if (device_.is_cuda()) copy_ = Impl(device_).getStreamFromGlobalPool(device_, false);
}

at::Tensor CopyStream::HostEmpty(int64_t numel, at::ScalarType dtype) const {
  const auto cpu = at::TensorOptions().dtype(dtype).device(at::kCPU);
#ifdef RIGTUNE_WITH_CUDA
  if (device_.is_cuda() && numel > 0) {
    // Note [Registered, not cached, pinned memory]: the pinned caching
    // allocator rounds every block up to a power of two (a 0.45 GB layer of
    // Llama-2-70B would take 0.5 GB, a 100 MB layer of a 7B 128 MB); these
    // buffers live as long as the job, so they are allocated exactly and
    // registered with the driver instead.
    const size_t bytes = static_cast<size_t>(numel) * at::elementSize(dtype);
    const size_t rounded = (bytes + 4095) / 4096 * 4096;
    void* p = std::aligned_alloc(4096, rounded);
    if (p != nullptr && cudaHostRegister(p, rounded, cudaHostRegisterDefault) == cudaSuccess) {
      return at::from_blob(
          p, {numel},
          [](void* q) {
            cudaHostUnregister(q);
            std::free(q);
          },
          cpu);
    }
    cudaGetLastError();  // clear the failed registration; fall back below
    std::free(p);
    return at::empty({numel}, cpu.pinned_memory(true));
  }
#endif
  return at::empty({numel}, cpu);
}

Mark CopyStream::RecordCurrent() const {
  if (!copy_) return nullptr;
  auto mark = std::make_shared<c10::Event>(device_.type());
  mark->record(Impl(device_).getStream(device_));
  return mark;
}

void CopyStream::WaitOnCurrent(const Mark& mark) const {
  if (mark) mark->block(Impl(device_).getStream(device_));
}

void CopyStream::Synchronize(const Mark& mark) {
  if (mark) mark->synchronize();
}

void CopyStream::OnCopyStream(const Mark& after, const std::function<void()>& fn) const {
  if (!copy_) {
    fn();
    return;
  }
  if (after) after->block(*copy_);
  c10::StreamGuard guard(*copy_);
  fn();
}

}  // namespace rigtune::dist
