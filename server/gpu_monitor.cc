#include "server/gpu_monitor.h"

#include <dlfcn.h>

#include "absl/strings/str_cat.h"

namespace rigtune::server {

// Note [NVML without its header]
// The few NVML types and entry points used here, declared from the stable C
// ABI the driver's library exports (nvml.h ships with the CUDA toolkit,
// which a CPU build does not need). The _v2 names are the ones current
// drivers export under those signatures.
namespace {

using NvmlReturn = int;  // nvmlReturn_t; 0 is NVML_SUCCESS
using NvmlDevice = struct NvmlDeviceOpaque*;
constexpr NvmlReturn kNvmlSuccess = 0;
constexpr int kNvmlTemperatureGpu = 0;  // NVML_TEMPERATURE_GPU
constexpr unsigned kNameBytes = 96;     // NVML_DEVICE_NAME_V2_BUFFER_SIZE

struct NvmlMemory {  // nvmlMemory_t
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

struct NvmlUtilization {  // nvmlUtilization_t, percent
  unsigned int gpu;
  unsigned int memory;
};

}  // namespace

struct GpuMonitor::Api {
  NvmlReturn (*init)();
  NvmlReturn (*shutdown)();
  NvmlReturn (*count)(unsigned int*);
  NvmlReturn (*handle_by_index)(unsigned int, NvmlDevice*);
  NvmlReturn (*name)(NvmlDevice, char*, unsigned int);
  NvmlReturn (*memory)(NvmlDevice, NvmlMemory*);
  NvmlReturn (*utilization)(NvmlDevice, NvmlUtilization*);
  NvmlReturn (*power_milliwatts)(NvmlDevice, unsigned int*);
  NvmlReturn (*temperature)(NvmlDevice, int, unsigned int*);
};

namespace {

template <typename Fn>
bool Bind(void* handle, const char* symbol, Fn*& out) {
  out = reinterpret_cast<Fn*>(dlsym(handle, symbol));
  return out != nullptr;
}

}  // namespace

absl::StatusOr<std::unique_ptr<GpuMonitor>> GpuMonitor::Open(const std::string& library) {
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    return absl::NotFoundError(absl::StrCat("cannot load ", library, " (no NVIDIA driver?): ",
                                            why != nullptr ? why : "unknown error"));
  }
  auto api = std::make_unique<Api>();
  for (auto [symbol, bound] :
       {std::pair{"nvmlInit_v2", Bind(handle, "nvmlInit_v2", api->init)},
        {"nvmlShutdown", Bind(handle, "nvmlShutdown", api->shutdown)},
        {"nvmlDeviceGetCount_v2", Bind(handle, "nvmlDeviceGetCount_v2", api->count)},
        {"nvmlDeviceGetHandleByIndex_v2",
         Bind(handle, "nvmlDeviceGetHandleByIndex_v2", api->handle_by_index)},
        {"nvmlDeviceGetName", Bind(handle, "nvmlDeviceGetName", api->name)},
        {"nvmlDeviceGetMemoryInfo", Bind(handle, "nvmlDeviceGetMemoryInfo", api->memory)},
        {"nvmlDeviceGetUtilizationRates",
         Bind(handle, "nvmlDeviceGetUtilizationRates", api->utilization)},
        {"nvmlDeviceGetPowerUsage", Bind(handle, "nvmlDeviceGetPowerUsage", api->power_milliwatts)},
        {"nvmlDeviceGetTemperature", Bind(handle, "nvmlDeviceGetTemperature", api->temperature)}}) {
    if (!bound) {
      dlclose(handle);
      return absl::NotFoundError(absl::StrCat(library, " has no ", symbol));
    }
  }
  if (NvmlReturn rc = api->init(); rc != kNvmlSuccess) {
    dlclose(handle);
    return absl::UnavailableError(absl::StrCat("nvmlInit failed with NVML error ", rc));
  }
  return std::unique_ptr<GpuMonitor>(new GpuMonitor(handle, std::move(api)));
}

GpuMonitor::GpuMonitor(void* handle, std::unique_ptr<Api> api)
    : handle_(handle), api_(std::move(api)) {}

GpuMonitor::~GpuMonitor() {
  api_->shutdown();
  dlclose(handle_);
}

std::vector<GpuSample> GpuMonitor::Sample() {
  absl::MutexLock lock(&mu_);
  std::vector<GpuSample> samples;
  unsigned int count = 0;
  if (api_->count(&count) != kNvmlSuccess) return samples;
  for (unsigned int i = 0; i < count; ++i) {
    NvmlDevice device = nullptr;
    if (api_->handle_by_index(i, &device) != kNvmlSuccess) continue;
    GpuSample sample;
    sample.index = static_cast<int>(i);
    char name[kNameBytes] = {};
    sample.name = api_->name(device, name, kNameBytes - 1) == kNvmlSuccess ? name : "unknown";
    if (NvmlMemory memory{}; api_->memory(device, &memory) == kNvmlSuccess) {
      sample.memory_used_bytes = static_cast<double>(memory.used);
      sample.memory_total_bytes = static_cast<double>(memory.total);
    }
    if (NvmlUtilization busy{}; api_->utilization(device, &busy) == kNvmlSuccess) {
      sample.utilization_ratio = busy.gpu / 100.0;
    }
    if (unsigned int milliwatts = 0; api_->power_milliwatts(device, &milliwatts) == kNvmlSuccess) {
      sample.power_watts = milliwatts / 1000.0;
    }
    if (unsigned int celsius = 0;
        api_->temperature(device, kNvmlTemperatureGpu, &celsius) == kNvmlSuccess) {
      sample.temperature_celsius = static_cast<double>(celsius);
    }
    samples.push_back(std::move(sample));
  }
  return samples;
}

}  // namespace rigtune::server
