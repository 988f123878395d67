// PlanMemory against numbers computed by hand from Note [Memory plan] (an
// independent re-derivation of every term for each row: NF4 bytes per
// linear with double-quant constants, r × (in + out) per adapted linear,
// the layer-input and working-set terms). Tolerance 0.001 GiB: the rows
// round to three decimals.
#include "worker/plan/memory_plan.h"

#include <gtest/gtest.h>

namespace rigtune::plan {
namespace {

struct Row {
  const char* shape;
  int64_t batch, context, r;
  int world;
  bool cpu_offload, activation_offload, offload_optimizer;
  double cap_gib;
  // Expected GiB.
  double frozen, adapter, optimizer, gradients, layer_inputs, working_set, total;
  bool fits;
};

void PrintTo(const Row& row, std::ostream* os) {
  *os << row.shape << " " << row.batch << "x" << row.context << " r=" << row.r
      << " world=" << row.world << " cpu_offload=" << row.cpu_offload
      << " activation_offload=" << row.activation_offload
      << " offload_optimizer=" << row.offload_optimizer << " cap=" << row.cap_gib;
}

class MemoryPlanTest : public ::testing::TestWithParam<Row> {};

TEST_P(MemoryPlanTest, MatchesTheHandComputedParts) {
  const Row& row = GetParam();
  auto model = model::RandomModelConfig(row.shape);
  ASSERT_TRUE(model.ok()) << model.status();
  train::JobConfig job;
  job.train.batch_size = row.batch;
  job.train.context_length = row.context;
  job.lora.r = row.r;
  job.dist.cpu_offload = row.cpu_offload;
  job.dist.activation_offload = row.activation_offload;
  job.dist.offload_optimizer = row.offload_optimizer;
  job.dist.max_gpu_memory_gib = row.cap_gib;
  const MemoryPlan plan = PlanMemory(*model, job, DeviceForJob(job, 0, row.world));
  constexpr double kTol = 0.001;
  EXPECT_NEAR(plan.device.frozen_weights / double(kGiB), row.frozen, kTol);
  EXPECT_NEAR(plan.device.adapter / double(kGiB), row.adapter, kTol);
  EXPECT_NEAR(plan.device.optimizer / double(kGiB), row.optimizer, kTol);
  EXPECT_NEAR(plan.device.gradients / double(kGiB), row.gradients, kTol);
  EXPECT_NEAR(plan.device.layer_inputs / double(kGiB), row.layer_inputs, kTol);
  EXPECT_NEAR(plan.device.working_set / double(kGiB), row.working_set, kTol);
  EXPECT_NEAR(plan.device.Total() / double(kGiB), row.total, kTol);
  EXPECT_EQ(plan.fits(), row.fits);
}

// 4 x 2048 on one GPU are the measured runs of docs/benchmarks.md (9.40,
// 11.43, 15.24, 57.88 GiB allocated; the totals add 3% slack); the 8 GiB
// rows are a 10 GB card; the two-rank 70B rows the measured 22 GiB runs
// (9.69, 14.63, 21.02 GiB).
INSTANTIATE_TEST_SUITE_P(
    Shapes, MemoryPlanTest,
    ::testing::Values(
        Row{"llama2-7b", 4, 2048, 64, 1, false, false, false, 22, 3.600, 0.596, 1.191, 0.019,
            2.000, 1.984, 9.759, true},
        Row{"llama3-8b", 4, 2048, 64, 1, false, false, false, 22, 5.311, 0.625, 1.250, 0.020,
            2.000, 2.188, 11.847, true},
        Row{"llama2-13b", 4, 2048, 64, 1, false, false, false, 22, 6.707, 0.933, 1.865, 0.023,
            3.125, 2.484, 15.728, true},
        Row{"llama2-13b", 2, 2048, 64, 1, false, false, false, 8, 6.707, 0.933, 1.865, 0.023,
            1.562, 1.242, 12.839, false},
        Row{"llama3-8b", 2, 2048, 64, 1, false, false, false, 8, 5.311, 0.625, 1.250, 0.020,
            1.000, 1.094, 9.691, false},
        // Weights streamed: two layers in flight; at the end of backward
        // all 13B gradients outweigh the start's layer inputs.
        Row{"llama2-13b", 2, 2048, 64, 1, true, true, false, 8, 0.305, 0.933, 1.865, 0.933,
            0.039, 1.242, 5.612, true},
        Row{"llama3-8b", 2, 2048, 64, 1, true, true, false, 8, 0.210, 0.625, 1.250, 0.020,
            0.031, 2.072, 4.446, true},
        Row{"llama2-70b", 4, 2048, 64, 1, false, false, false, 80, 33.866, 3.086, 6.172, 0.039,
            10.000, 4.375, 59.714, true},
        Row{"llama2-70b", 2, 2048, 64, 1, true, true, true, 22, 0.822, 3.086, 0.000, 0.039,
            0.062, 2.188, 6.833, true},
        Row{"llama2-70b", 2, 2048, 64, 2, true, true, false, 22, 1.028, 1.620, 3.086, 1.582,
            0.062, 2.188, 10.303, true},
        Row{"llama2-70b", 2, 2048, 64, 2, true, false, false, 22, 1.028, 1.620, 3.086, 1.582,
            5.000, 2.188, 15.389, true},
        Row{"llama2-70b", 1, 2048, 16, 2, false, true, false, 22, 17.755, 0.405, 0.771, 0.395,
            0.031, 1.562, 21.998, true},
        Row{"llama2-70b", 1, 2048, 64, 2, false, true, false, 22, 17.755, 1.620, 3.086, 1.582,
            0.031, 1.562, 26.855, false}));

TEST(MemoryPlanTest, LoraParametersOfLlama2_70bOnAllLinears) {
  auto model = model::RandomModelConfig("llama2-70b");
  ASSERT_TRUE(model.ok());
  EXPECT_EQ(LoraParameterCount(*model, train::LoraConfig{}), 828375040);  // "828 M"
  train::LoraConfig attention_only;
  attention_only.target_modules = {"q_proj", "v_proj"};
  // 80 layers x 64 x ((8192 + 8192) + (8192 + 1024)).
  EXPECT_EQ(LoraParameterCount(*model, attention_only), 80 * 64 * (16384 + 9216));
}

TEST(MemoryPlanTest, DoraAddsOneMagnitudePerOutputRow) {
  auto model = model::RandomModelConfig("llama2-70b");
  ASSERT_TRUE(model.ok());
  // + 80 layers x (8192 + 1024 + 1024 + 8192 + 28672 + 28672 + 8192) rows.
  EXPECT_EQ(LoraParameterCount(*model, train::LoraConfig{}, /*dora=*/true),
            828375040 + 80 * 83968);
  train::JobConfig job;
  job.train.method = "dora";
  EXPECT_EQ(PlanMemory(*model, job, PlanDevice{}).trainable_parameters, 828375040 + 80 * 83968);
}

TEST(MemoryPlanTest, BaseFormatsSetTheFrozenBytes) {
  auto model = model::RandomModelConfig("llama2-7b");
  ASSERT_TRUE(model.ok());
  train::JobConfig job;
  job.train.base = "bf16";
  // 32 layers x (2 norms x 4096 x 2 + 2 x (4 x 4096 x 4096 + 3 x 4096 x 11008))
  // + head (32000 x 4096 x 2 + 4096 x 2) + embedding 32000 x 4096 x 2.
  const int64_t expected = 32 * (2 * 4096 * 2 + 2 * (4LL * 4096 * 4096 + 3LL * 4096 * 11008)) +
                           (32000LL * 4096 * 2 + 4096 * 2) + 32000LL * 4096 * 2;
  EXPECT_EQ(PlanMemory(*model, job, PlanDevice{}).device.frozen_weights, expected);
  EXPECT_LT(PlanMemory(*model, train::JobConfig{}, PlanDevice{}).device.frozen_weights,
            expected / 3);  // NF4: about a quarter of the linears' bytes
  // hqq4: half a byte per weight plus a float32 scale and zero per 64.
  job.train.base = "hqq4";
  const int64_t linears = 4LL * 4096 * 4096 + 3LL * 4096 * 11008;
  EXPECT_EQ(PlanMemory(*model, job, PlanDevice{}).device.frozen_weights,
            32 * (2 * 4096 * 2 + linears / 2 + linears / 64 * 8) +
                (32000LL * 4096 * 2 + 4096 * 2) + 32000LL * 4096 * 2);
}

TEST(MemoryPlanTest, CapWinsOverTheCardAndTheCardKeepsContextRoom) {
  train::JobConfig job;
  PlanDevice card = DeviceForJob(job, 24, 1);
  EXPECT_EQ(card.capacity_bytes, 22 * kGiB);
  job.dist.max_gpu_memory_gib = 8;
  PlanDevice capped = DeviceForJob(job, 24, 2);
  EXPECT_EQ(capped.capacity_bytes, 8 * kGiB);
  EXPECT_EQ(capped.capacity_source, "dist.max_gpu_memory_gib");
  EXPECT_EQ(capped.world_size, 2);
  EXPECT_EQ(DeviceForJob(train::JobConfig{}, 0, 1).capacity_bytes, 0);
}

TEST(MemoryPlanTest, UnknownCapacityAlwaysFits) {
  auto model = model::RandomModelConfig("llama2-70b");
  ASSERT_TRUE(model.ok());
  EXPECT_TRUE(PlanMemory(*model, train::JobConfig{}, PlanDevice{}).fits());
}

TEST(MemoryPlanTest, HostHoldsOffloadedWeightsAndOptimizer) {
  auto model = model::RandomModelConfig("llama2-70b");
  ASSERT_TRUE(model.ok());
  train::JobConfig job;
  job.dist.cpu_offload = job.dist.offload_optimizer = true;
  const MemoryPlan plan = PlanMemory(*model, job, PlanDevice{});
  // The whole NF4 model (33.87 GiB) and 16 bytes per LoRA parameter.
  EXPECT_NEAR(plan.host.frozen_weights / double(kGiB), 33.866, 0.001);
  EXPECT_EQ(plan.host.optimizer, 16 * 828375040LL);
}

}  // namespace
}  // namespace rigtune::plan
