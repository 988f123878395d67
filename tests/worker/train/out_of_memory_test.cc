// Out of memory ends a job with one line: the mapping of LibTorch's error
// text, and RunJob's single catch (an out-of-memory error thrown from inside
// a training step, through the step callback as the test seam, on the CPU).
#include "worker/train/out_of_memory.h"

#include <c10/util/Exception.h>
#include <unistd.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <vector>

#include "worker/train/run_job.h"

namespace rigtune::train {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kCudaText[] =
    "CUDA out of memory. Tried to allocate 224.00 MiB. GPU 0 has a total capacity of 139.81 "
    "GiB of which 117.03 GiB is free. Of the allocated memory 21.76 GiB is allocated by "
    "PyTorch, and 40.39 MiB is reserved by PyTorch but unallocated.";

TEST(OutOfMemoryTest, ReadsTheRequestedSize) {
  EXPECT_EQ(RequestedBytes(kCudaText), 224 * (int64_t{1} << 20));
  EXPECT_EQ(RequestedBytes("Tried to allocate 2.00 GiB; more"), 2 * (int64_t{1} << 30));
  EXPECT_EQ(RequestedBytes("out of memory"), std::nullopt);
}

TEST(OutOfMemoryTest, OneLineWithTheAllocationTheCapThePeakAndASuggestion) {
  auto model = model::RandomModelConfig("llama2-13b");
  ASSERT_TRUE(model.ok());
  JobConfig job;
  job.train.batch_size = 4;
  job.train.context_length = 2048;
  job.dist.max_gpu_memory_gib = 16;
  OutOfMemoryContext context;
  context.device = "cuda:0";
  context.phase = "step 3";
  context.peak_allocated = 15 * (int64_t{1} << 30);
  context.model = &*model;
  context.job = &job;
  context.device_plan = plan::DeviceForJob(job, 0, 1);
  absl::Status status = OutOfMemoryStatus(std::string(kCudaText) + "\nframe #0: x", context);
  EXPECT_TRUE(absl::IsResourceExhausted(status));
  EXPECT_THAT(status.message(), Not(HasSubstr("\n")));
  EXPECT_THAT(status.message(), Not(HasSubstr("frame #")));
  EXPECT_THAT(std::string(status.message()),
              StartsWith("rank 0: out of memory on cuda:0 during step 3: tried to allocate "
                         "224.00 MiB with 15.00 GiB allocated at the peak, cap 16.00 GiB "
                         "(dist.max_gpu_memory_gib); planned 16.77 GiB; would fit: "
                         "train.batch_size=3"));
}

class RunJobOutOfMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("oom-test-" + std::to_string(::getpid()));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(RunJobOutOfMemoryTest, EndsTheRunWithOneLineAndNoBacktrace) {
  JobConfig job;
  job.model = "random:layers=2,hidden=64,intermediate=128,heads=4,kv_heads=2,vocab=96";
  job.output_dir = dir_.string();
  job.lora.r = 4;
  job.train.context_length = 16;
  job.train.batch_size = 2;
  job.train.max_steps = 3;
  job.train.dtype = "fp32";
  job.train.device = "cpu";
  std::vector<std::string> log;
  RunCallbacks callbacks;
  callbacks.on_log = [&](const std::string& line) { log.push_back(line); };
  callbacks.on_step = [](const StepMetrics& m) {
    if (m.step == 2) {
      TORCH_CHECK_WITH(OutOfMemoryError, false,
                       "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                       "capacity of 23.55 GiB");
    }
  };
  absl::StatusOr<RunResult> result = RunJob(job, callbacks);
  ASSERT_TRUE(absl::IsResourceExhausted(result.status())) << result.status();
  const std::string message(result.status().message());
  EXPECT_THAT(message, StartsWith("rank 0: out of memory on cpu during step 2: tried to "
                                  "allocate 2.00 GiB with 0.00 GiB allocated at the peak, "
                                  "no cap; planned "));
  EXPECT_THAT(message, Not(HasSubstr("\n")));
  EXPECT_THAT(message, Not(HasSubstr("frame #")));
  EXPECT_THAT(message, Not(HasSubstr("Exception raised from")));
  ASSERT_FALSE(log.empty());
  EXPECT_THAT(log[0], StartsWith("rank 0: memory plan per GPU (1 rank): "));
}

}  // namespace
}  // namespace rigtune::train
