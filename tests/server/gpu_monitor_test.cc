// GpuMonitor over a stand-in NVML library (fake_nvml.cc, loaded with dlopen
// like the driver's), and the gauges it feeds.
#include "server/gpu_monitor.h"

#include "gtest/gtest.h"
#include "server/metrics.h"

namespace rigtune::server {
namespace {

constexpr double kGiB = 1024.0 * 1024 * 1024;

TEST(GpuMonitorTest, SamplesEveryGpuInBaseUnits) {
  auto nvml = GpuMonitor::Open(RIGTUNE_FAKE_NVML);
  ASSERT_TRUE(nvml.ok()) << nvml.status();
  std::vector<GpuSample> samples = (*nvml)->Sample();
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_EQ(samples[0].index, 0);
  EXPECT_EQ(samples[0].name, "Fake GPU A");
  EXPECT_EQ(samples[0].memory_used_bytes, 1 * kGiB);
  EXPECT_EQ(samples[0].memory_total_bytes, 80 * kGiB);
  EXPECT_DOUBLE_EQ(*samples[0].utilization_ratio, 0.42);
  EXPECT_DOUBLE_EQ(*samples[0].power_watts, 312.5);
  EXPECT_EQ(samples[0].temperature_celsius, 61.0);
  EXPECT_EQ(samples[1].name, "Fake GPU B");
  EXPECT_FALSE(samples[1].power_watts.has_value());  // NVML_ERROR_NOT_SUPPORTED
}

TEST(GpuMonitorTest, MissingLibraryIsNotFound) {
  auto nvml = GpuMonitor::Open("libno-such-nvml.so.1");
  EXPECT_EQ(nvml.status().code(), absl::StatusCode::kNotFound);
}

TEST(GpuMonitorTest, LibraryWithoutNvmlIsNotFoundNamingTheSymbol) {
  auto nvml = GpuMonitor::Open("libm.so.6");
  EXPECT_EQ(nvml.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(nvml.status().message().find("nvmlInit_v2"), std::string::npos) << nvml.status();
}

TEST(GpuMonitorTest, GaugesFollowTheLatestSamples) {
  ServiceMetrics metrics("test");
  auto nvml = GpuMonitor::Open(RIGTUNE_FAKE_NVML);
  ASSERT_TRUE(nvml.ok()) << nvml.status();
  metrics.AddScrapeHook([&] { metrics.SetGpuSamples((*nvml)->Sample()); });
  std::string text = metrics.Serialize();
  EXPECT_NE(text.find("rigtune_gpu_memory_total_bytes{gpu=\"0\",name=\"Fake GPU A\"} 85899345920"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("rigtune_gpu_utilization_ratio{gpu=\"1\",name=\"Fake GPU B\"} 1"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("rigtune_gpu_power_watts{gpu=\"0\",name=\"Fake GPU A\"} 312.5"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("rigtune_gpu_power_watts{gpu=\"1\""), std::string::npos) << text;
  EXPECT_NE(text.find("rigtune_gpu_temperature_celsius{gpu=\"1\",name=\"Fake GPU B\"} 70"),
            std::string::npos)
      << text;
}

TEST(GpuMonitorTest, AGpuThatIsGoneLeavesNoStaleSeries) {
  ServiceMetrics metrics("test");
  GpuSample gpu;
  gpu.name = "Fake";
  gpu.memory_used_bytes = 1;
  metrics.SetGpuSamples({gpu});
  EXPECT_NE(metrics.Serialize().find("rigtune_gpu_memory_used_bytes{"), std::string::npos);
  metrics.SetGpuSamples({});
  EXPECT_EQ(metrics.Serialize().find("rigtune_gpu_memory_used_bytes{"), std::string::npos);
}

TEST(GpuMonitorTest, WithoutGpusTheFamiliesAreStillDeclared) {
  ServiceMetrics metrics("test");
  std::string text = metrics.Serialize();
  for (const char* name : {"rigtune_gpu_memory_used_bytes", "rigtune_gpu_memory_total_bytes",
                           "rigtune_gpu_utilization_ratio", "rigtune_gpu_power_watts",
                           "rigtune_gpu_temperature_celsius"}) {
    EXPECT_NE(text.find(std::string("# TYPE ") + name + " gauge"), std::string::npos) << name;
    EXPECT_EQ(text.find(std::string(name) + "{"), std::string::npos) << name;
  }
}

}  // namespace
}  // namespace rigtune::server
