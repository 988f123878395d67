// Out of memory on a real GPU: a job under an impossible cap is refused by
// the memory planner before loading, and, told to try anyway
// (RIGTUNE_IGNORE_MEMORY_PLAN=1), runs out of memory and ends with one line
// and no C++ backtrace in anything it logged.
#include <ATen/Context.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "worker/train/run_job.h"

namespace rigtune::train {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

class OomGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
    job_.model = "random:llama2-7b";
    job_.output_dir = (std::filesystem::temp_directory_path() / "rigtune-oom-gpu-test").string();
    job_.train.batch_size = 4;
    job_.train.context_length = 2048;
    job_.train.max_steps = 2;
    job_.dist.max_gpu_memory_gib = 5;  // the NF4 model loads; its step (9.4 GiB) cannot run
  }
  void TearDown() override {
    unsetenv("RIGTUNE_IGNORE_MEMORY_PLAN");
    std::filesystem::remove_all(job_.output_dir);
  }

  absl::StatusOr<RunResult> Run() {
    RunCallbacks callbacks;
    callbacks.on_log = [this](const std::string& line) { log_.push_back(line); };
    return RunJob(job_, callbacks);
  }

  JobConfig job_;
  std::vector<std::string> log_;
};

TEST_F(OomGpuTest, PlannerRefusesBeforeLoading) {
  absl::StatusOr<RunResult> result = Run();
  ASSERT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  EXPECT_THAT(result.status().message(),
              HasSubstr("available (dist.max_gpu_memory_gib): frozen weights"));
  EXPECT_THAT(result.status().message(), HasSubstr("; would fit: "));
  ASSERT_EQ(log_.size(), 1u);  // the plan, and nothing loaded
  EXPECT_THAT(log_[0], StartsWith("rank 0: memory plan per GPU (1 rank): "));
}

TEST_F(OomGpuTest, OutOfMemoryIsOneLineWithoutBacktrace) {
  setenv("RIGTUNE_IGNORE_MEMORY_PLAN", "1", 1);
  absl::StatusOr<RunResult> result = Run();
  ASSERT_TRUE(absl::IsResourceExhausted(result.status())) << result.status();
  const std::string message(result.status().message());
  EXPECT_THAT(message, StartsWith("rank 0: out of memory on cuda:0 during "));
  EXPECT_THAT(message, HasSubstr("tried to allocate "));
  EXPECT_THAT(message, HasSubstr("cap 5.00 GiB (dist.max_gpu_memory_gib); planned "));
  EXPECT_THAT(message, Not(HasSubstr("\n")));
  EXPECT_THAT(message, Not(HasSubstr("frame #")));
  for (const std::string& line : log_) EXPECT_THAT(line, Not(HasSubstr("frame #")));
}

}  // namespace
}  // namespace rigtune::train
