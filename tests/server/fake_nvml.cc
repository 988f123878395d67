// A stand-in for the driver's libnvidia-ml.so.1 with the entry points
// GpuMonitor loads, built as a shared library so that the dlopen path runs
// for real. It reports two GPUs:
//   0 "Fake GPU A": 1 GiB of 80 GiB used, 42 % busy, 312.5 W, 61 C
//   1 "Fake GPU B": 78 GiB of 80 GiB used, 100 % busy, power not supported, 70 C
#include <cstring>

namespace {

constexpr int kSuccess = 0;
constexpr int kInvalidArgument = 2;
constexpr int kNotSupported = 3;
constexpr unsigned long long kGiB = 1ull << 30;

struct Device {
  const char* name;
  unsigned long long used;
  unsigned int busy_percent;
  int milliwatts;  // < 0: not supported
  unsigned int celsius;
};

Device devices[] = {{"Fake GPU A", 1 * kGiB, 42, 312500, 61},
                    {"Fake GPU B", 78 * kGiB, 100, -1, 70}};

Device* Find(void* handle) {
  for (Device& device : devices) {
    if (handle == &device) return &device;
  }
  return nullptr;
}

}  // namespace

extern "C" {

struct FakeMemory {
  unsigned long long total, free, used;
};
struct FakeUtilization {
  unsigned int gpu, memory;
};

int nvmlInit_v2() { return kSuccess; }
int nvmlShutdown() { return kSuccess; }
int nvmlDeviceGetCount_v2(unsigned int* count) {
  *count = 2;
  return kSuccess;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, void** handle) {
  if (index >= 2) return kInvalidArgument;
  *handle = &devices[index];
  return kSuccess;
}
int nvmlDeviceGetName(void* handle, char* name, unsigned int length) {
  Device* device = Find(handle);
  if (device == nullptr) return kInvalidArgument;
  std::strncpy(name, device->name, length);
  return kSuccess;
}
int nvmlDeviceGetMemoryInfo(void* handle, FakeMemory* memory) {
  Device* device = Find(handle);
  if (device == nullptr) return kInvalidArgument;
  *memory = {80 * kGiB, 80 * kGiB - device->used, device->used};
  return kSuccess;
}
int nvmlDeviceGetUtilizationRates(void* handle, FakeUtilization* utilization) {
  Device* device = Find(handle);
  if (device == nullptr) return kInvalidArgument;
  *utilization = {device->busy_percent, 10};
  return kSuccess;
}
int nvmlDeviceGetPowerUsage(void* handle, unsigned int* milliwatts) {
  Device* device = Find(handle);
  if (device == nullptr) return kInvalidArgument;
  if (device->milliwatts < 0) return kNotSupported;
  *milliwatts = static_cast<unsigned int>(device->milliwatts);
  return kSuccess;
}
int nvmlDeviceGetTemperature(void* handle, int sensor, unsigned int* celsius) {
  Device* device = Find(handle);
  if (device == nullptr || sensor != 0) return kInvalidArgument;
  *celsius = device->celsius;
  return kSuccess;
}

}  // extern "C"
