// Device memory accounting and limits for a training process: the CUDA
// caching allocator's peaks (what the step metrics report) and the
// `max_gpu_memory_gib` cap that proves a configuration fits a smaller card.
// On CPU every call is a no-op and the stats read zero.
#ifndef RIGTUNE_WORKER_TRAIN_DEVICE_MEMORY_H_
#define RIGTUNE_WORKER_TRAIN_DEVICE_MEMORY_H_

#include <c10/core/Device.h>

#include <cstdint>

#include "absl/status/status.h"

namespace rigtune::train {

struct MemoryStats {
  int64_t allocated = 0;
  int64_t peak_allocated = 0;
  int64_t peak_reserved = 0;
  int64_t total = 0;  // the device's memory
};

// Lets the CUDA caching allocator grow its segments in place
// (`expandable_segments:True`) unless PYTORCH_ALLOC_CONF or
// PYTORCH_CUDA_ALLOC_CONF already says otherwise. Long sequences allocate
// blocks of gigabytes whose sizes change from layer to layer; in fixed
// segments the freed ones stay cached beside the new ones, and under a cap
// the reserve reaches the cap while a third of it is idle (Llama-3.1-8B at
// 98,304 tokens: 17.45 GiB allocated, 21.99 GiB reserved under 22). Call it
// before the first CUDA allocation (RunJob does): the allocator reads its
// settings once, on first use.
void PreferExpandableSegments();

// Caps the caching allocator at `gib` GiB (0 = no cap). Fails when the cap
// exceeds the device's memory.
absl::Status ApplyMemoryCap(const c10::Device& device, double gib);
void ResetPeakMemory(const c10::Device& device);
MemoryStats ReadMemoryStats(const c10::Device& device);
// The device's memory in bytes (0 on the CPU).
int64_t DeviceTotalBytes(const c10::Device& device);
void SynchronizeDevice(const c10::Device& device);

// This process's peak resident host memory (VmHWM), in bytes; 0 if unknown.
int64_t PeakHostRssBytes();
// The host's physical memory in bytes; 0 if unknown.
int64_t HostMemoryBytes();

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_DEVICE_MEMORY_H_
