// GpuMonitor: what each GPU of the host is doing right now, from NVML.
//
// NVML (the driver's libnvidia-ml.so.1) is loaded with dlopen at run time:
// rigtuned neither links the driver nor needs the CUDA toolkit, and on a
// CPU-only host Open() fails, the daemon starts all the same and /metrics
// simply has no GPU series. Indices are NVML's (PCI bus order, as in
// nvidia-smi); rigtuned launches workers with CUDA_DEVICE_ORDER=PCI_BUS_ID so
// that CUDA_VISIBLE_DEVICES and the `gpu` label of the per-rank metrics use
// the same numbers.
//
//   absl::StatusOr<std::unique_ptr<GpuMonitor>> nvml = GpuMonitor::Open();
//   if (nvml.ok()) for (const GpuSample& gpu : (*nvml)->Sample()) ...
//
// Thread-safe: Sample() may run on several scraping threads at once.
#ifndef RIGTUNE_SERVER_GPU_MONITOR_H_
#define RIGTUNE_SERVER_GPU_MONITOR_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace rigtune::server {

// One GPU at one instant, in base units. A quantity the card or driver
// does not report (NVML_ERROR_NOT_SUPPORTED, e.g. power on some boards) is
// absent.
struct GpuSample {
  int index = 0;
  std::string name;  // e.g. "NVIDIA GeForce RTX 4090"
  std::optional<double> memory_used_bytes;
  std::optional<double> memory_total_bytes;
  std::optional<double> utilization_ratio;  // 0..1 over the driver's last sample period
  std::optional<double> power_watts;
  std::optional<double> temperature_celsius;
};

class GpuMonitor {
 public:
  // The NVML library every driver installs.
  static constexpr char kDefaultLibrary[] = "libnvidia-ml.so.1";

  // Loads `library` and initializes NVML. NOT_FOUND when the library cannot
  // be loaded (no NVIDIA driver) or lacks an entry point; UNAVAILABLE when
  // nvmlInit fails (driver not loaded, no device).
  static absl::StatusOr<std::unique_ptr<GpuMonitor>> Open(
      const std::string& library = kDefaultLibrary);
  ~GpuMonitor();
  GpuMonitor(const GpuMonitor&) = delete;
  GpuMonitor& operator=(const GpuMonitor&) = delete;

  // Every GPU NVML sees, by index; a GPU whose handle cannot be had (fallen
  // off the bus) is left out.
  std::vector<GpuSample> Sample();

 private:
  struct Api;
  GpuMonitor(void* handle, std::unique_ptr<Api> api);

  void* const handle_;  // from dlopen
  const std::unique_ptr<Api> api_;
  absl::Mutex mu_;  // NVML is thread-safe; this keeps samples from interleaving
};

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_GPU_MONITOR_H_
