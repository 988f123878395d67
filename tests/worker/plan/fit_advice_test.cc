#include "worker/plan/fit_advice.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "worker/plan/plan_report.h"

namespace rigtune::plan {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

train::JobConfig Job(int64_t batch, int64_t r, double cap) {
  train::JobConfig job;
  job.model = "random:llama2-13b";
  job.output_dir = "/tmp/out";
  job.train.batch_size = batch;
  job.train.context_length = 2048;
  job.lora.r = r;
  job.dist.max_gpu_memory_gib = cap;
  return job;
}

// Applies "a.b=v c.d=w" to a copy of `job` through the job file parser, as
// a user would by editing the file.
train::JobConfig Apply(const train::JobConfig& job, const std::string& setting) {
  nlohmann::json j = nlohmann::json::parse(train::JobConfigToJson(job));
  for (absl::string_view kv : absl::StrSplit(setting, ' ')) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, '=');
    std::pair<std::string, std::string> field = absl::StrSplit(p.first, '.');
    int64_t number = 0;
    if (absl::SimpleAtoi(p.second, &number)) {
      j[field.first][field.second] = number;
    } else {
      j[field.first][field.second] = p.second == "true";
    }
  }
  auto parsed = train::ParseJobConfig(j.dump());
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return *parsed;
}

TEST(FitAdviceTest, FittingJobIsOk) {
  auto model = model::RandomModelConfig("llama2-13b");
  ASSERT_TRUE(model.ok());
  const train::JobConfig job = Job(4, 64, 22);
  EXPECT_TRUE(CheckFits(*model, job, DeviceForJob(job, 0, 1)).ok());
  EXPECT_TRUE(SuggestFits(*model, job, DeviceForJob(job, 0, 1)).empty());
}

// Llama-2-13B at 2 x 2048 on a 10 GB card (8 GiB): the frozen weights alone
// are 6.7 GiB, so a smaller batch or r cannot help; offloading can.
TEST(FitAdviceTest, EverySuggestionFitsAndTheMessageIsOneLine) {
  auto model = model::RandomModelConfig("llama2-13b");
  ASSERT_TRUE(model.ok());
  const train::JobConfig job = Job(2, 64, 8);
  const PlanDevice device = DeviceForJob(job, 0, 1);
  absl::Status status = CheckFits(*model, job, device);
  ASSERT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_THAT(status.message(), Not(HasSubstr("\n")));
  EXPECT_THAT(status.message(),
              HasSubstr("does not fit: needs 13.36 GiB per GPU, 8.00 GiB available "
                        "(dist.max_gpu_memory_gib): frozen weights 6.71 + "));
  const std::vector<FitOption> options = SuggestFits(*model, job, device);
  ASSERT_FALSE(options.empty());
  for (const FitOption& o : options) {
    EXPECT_THAT(status.message(), HasSubstr(o.setting));
    // The advice gives the least the setting needs; recompute auto may then
    // fill free room with kept products, and still fits.
    const MemoryPlan least = PlanMemory(*model, Apply(job, o.setting), device, false);
    EXPECT_TRUE(least.fits()) << o.setting;
    EXPECT_EQ(least.device.Total(), o.device_bytes) << o.setting;
    const MemoryPlan plan = PlanMemory(*model, Apply(job, o.setting), device);
    EXPECT_TRUE(plan.fits()) << o.setting;
    EXPECT_GE(plan.device.Total(), least.device.Total()) << o.setting;
  }
  EXPECT_EQ(options[0].setting, "dist.cpu_offload=true");  // the fewest flags
}

// Llama-3-8B, r=128 at 8 x 2048 under 16 GiB: the largest batch is the one whose
// successor does not fit, and r is halved until it fits.
TEST(FitAdviceTest, SuggestsTheLargestBatchAndRank) {
  auto model = model::RandomModelConfig("llama3-8b");
  ASSERT_TRUE(model.ok());
  const train::JobConfig job = Job(8, 128, 16);
  const PlanDevice device = DeviceForJob(job, 0, 1);
  const std::vector<FitOption> options = SuggestFits(*model, job, device);
  ASSERT_GE(options.size(), 2u);
  ASSERT_EQ(options[0].setting.rfind("train.batch_size=", 0), 0u) << options[0].setting;
  const int64_t batch = std::stoll(options[0].setting.substr(17));
  EXPECT_TRUE(PlanMemory(*model, Job(batch, 128, 16), device).fits());
  EXPECT_FALSE(PlanMemory(*model, Job(batch + 1, 128, 16), device).fits());
  const FitOption& rank = options.back();
  ASSERT_EQ(rank.setting.rfind("lora.r=", 0), 0u) << rank.setting;
  const int64_t r = std::stoll(rank.setting.substr(7));
  EXPECT_TRUE(PlanMemory(*model, Job(8, r, 16), device).fits());
  EXPECT_FALSE(PlanMemory(*model, Job(8, r * 2, 16), device).fits());
}

TEST(FitAdviceTest, FullFineTuningIsOfferedOffloadButNoRank) {
  auto model = model::RandomModelConfig("llama3.2-1b");
  ASSERT_TRUE(model.ok()) << model.status();
  train::JobConfig job = Job(8, 64, 24);
  job.train.base = "bf16";
  job.train.method = "full";
  const std::vector<FitOption> options = SuggestFits(*model, job, DeviceForJob(job, 0, 1));
  bool offload = false;
  for (const FitOption& o : options) {
    offload = offload || o.setting.find("offload") != std::string::npos;
    EXPECT_THAT(o.setting, Not(HasSubstr("lora.r"))) << o.setting;
  }
  EXPECT_TRUE(offload);
}

TEST(FitAdviceTest, SuggestsTheNextStepWhenNothingFits) {
  auto model = model::RandomModelConfig("llama2-70b");
  ASSERT_TRUE(model.ok());
  const train::JobConfig job = Job(1, 8, 1);
  absl::Status status = CheckFits(*model, job, DeviceForJob(job, 0, 1));
  EXPECT_THAT(status.message(), HasSubstr("use more GPUs"));
}

TEST(PlanReportTest, JsonCarriesThePartsAndTheVerdict) {
  auto model = model::RandomModelConfig("llama2-13b");
  ASSERT_TRUE(model.ok());
  const train::JobConfig job = Job(2, 64, 8);
  const PlanDevice device = DeviceForJob(job, 0, 1);
  const MemoryPlan plan = PlanMemory(*model, job, device);
  nlohmann::json j = PlanJson(plan, SuggestFits(*model, job, device));
  EXPECT_FALSE(j["fits"].get<bool>());
  EXPECT_EQ(j["device_bytes"]["total"].get<int64_t>(), plan.device.Total());
  EXPECT_EQ(j["device_bytes"]["frozen_weights"].get<int64_t>(), plan.device.frozen_weights);
  EXPECT_EQ(j["capacity_bytes"].get<int64_t>(), 8 * kGiB);
  EXPECT_FALSE(j["would_fit"].empty());
  EXPECT_THAT(PlanLine(plan), HasSubstr("memory plan per GPU (1 rank): 13.36 GiB, 8.00 GiB "
                                        "available (dist.max_gpu_memory_gib), does not fit"));
}

}  // namespace
}  // namespace rigtune::plan
