#include "worker/train/device_memory.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_format.h"

#ifdef RIGTUNE_WITH_CUDA
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#endif

namespace rigtune::train {

int64_t PeakHostRssBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;  // "... kB"
  }
  return 0;
}

int64_t HostMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : 0;
}

void PreferExpandableSegments() {
  if (std::getenv("PYTORCH_ALLOC_CONF") != nullptr ||
      std::getenv("PYTORCH_CUDA_ALLOC_CONF") != nullptr) {
    return;  // the operator's settings win
  }
  setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True", /*overwrite=*/0);
}

#ifdef RIGTUNE_WITH_CUDA
namespace alloc = c10::cuda::CUDACachingAllocator;

absl::Status ApplyMemoryCap(const c10::Device& device, double gib) {
  if (!device.is_cuda() || gib <= 0) return absl::OkStatus();
  // The caching allocator is set up by LibTorch's lazy CUDA initialisation,
  // which the first tensor on the device triggers.
  c10::cuda::set_device(device.index());
  (void)at::empty({1}, at::TensorOptions().device(device));
  size_t free_bytes = 0, total = 0;
  cudaMemGetInfo(&free_bytes, &total);
  const double cap = gib * (1ull << 30);
  if (cap > static_cast<double>(total)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "dist.max_gpu_memory_gib: %.1f GiB exceeds the device's %.1f GiB", gib,
        total / double(1ull << 30)));
  }
  alloc::setMemoryFraction(cap / static_cast<double>(total), device.index());
  return absl::OkStatus();
}

void ResetPeakMemory(const c10::Device& device) {
  if (device.is_cuda()) alloc::resetPeakStats(device.index());
}

MemoryStats ReadMemoryStats(const c10::Device& device) {
  MemoryStats m;
  if (!device.is_cuda()) return m;
  auto stats = alloc::getDeviceStats(device.index());
  constexpr size_t kAll = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  m.allocated = stats.allocated_bytes[kAll].current;
  m.peak_allocated = stats.allocated_bytes[kAll].peak;
  m.peak_reserved = stats.reserved_bytes[kAll].peak;
  size_t free_bytes = 0, total = 0;
  cudaMemGetInfo(&free_bytes, &total);
  m.total = static_cast<int64_t>(total);
  return m;
}

void SynchronizeDevice(const c10::Device& device) {
  if (device.is_cuda()) c10::cuda::device_synchronize();
}

int64_t DeviceTotalBytes(const c10::Device& device) {
  if (!device.is_cuda()) return 0;
  c10::cuda::set_device(device.index());
  size_t free_bytes = 0, total = 0;
  if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) return 0;
  return static_cast<int64_t>(total);
}
#else
absl::Status ApplyMemoryCap(const c10::Device& device, double gib) {
  if (device.is_cuda()) {
    return absl::FailedPreconditionError("this build has no CUDA support (use the cuda preset)");
  }
  return absl::OkStatus();
}
void ResetPeakMemory(const c10::Device&) {}
MemoryStats ReadMemoryStats(const c10::Device&) { return {}; }
void SynchronizeDevice(const c10::Device&) {}
int64_t DeviceTotalBytes(const c10::Device&) { return 0; }
#endif

}  // namespace rigtune::train
