// PlanMemory against numbers computed by hand from Note [Memory plan] (an
// independent re-derivation of every term for each row: NF4 bytes per
// linear with double-quant constants, r × (in + out) per adapted linear,
// the layer-input and working-set terms). Tolerance 0.001 GiB: the rows
// round to three decimals.
#include "worker/plan/memory_plan.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "worker/plan/plan_report.h"

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
  job.train.recompute = "full";  // the measured runs recomputed in full
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
// 11.43, 15.24, 57.88 GiB allocated; the totals add 3% slack and a third of
// the layer inputs kept on the device); the 8 GiB rows are a 10 GB card; the
// two-rank 70B rows the measured 22 GiB runs (9.69, 14.63, 21.02 GiB); the
// one-GPU streamed 70B rows the measured 22 GiB runs (16.07 and 17.74 GiB
// with activation offload; without it, out of memory at 19.99 GiB allocated
// while asking for 448 MiB more, which the plan now refuses).
INSTANTIATE_TEST_SUITE_P(
    Shapes, MemoryPlanTest,
    ::testing::Values(
        // 7B: frozen 32 x 101.3 MiB of NF4 + 2 x 250 MiB embedding/head;
        // inputs 32 x 4 x 2048 x 4096 x 2 = 2 GiB; total 9.759 x 1.03
        // rounding as before + 2/3 GiB for the inputs' fragmentation.
        Row{"llama2-7b", 4, 2048, 64, 1, false, false, false, 22, 3.600, 0.596, 1.191, 0.019,
            2.000, 1.984, 10.425, true},
        Row{"llama3-8b", 4, 2048, 64, 1, false, false, false, 22, 5.311, 0.625, 1.250, 0.020,
            2.000, 2.188, 12.514, true},
        Row{"llama2-13b", 4, 2048, 64, 1, false, false, false, 22, 6.707, 0.933, 1.865, 0.023,
            3.125, 2.484, 16.769, true},
        Row{"llama2-13b", 2, 2048, 64, 1, false, false, false, 8, 6.707, 0.933, 1.865, 0.023,
            1.562, 1.242, 13.360, false},
        Row{"llama3-8b", 2, 2048, 64, 1, false, false, false, 8, 5.311, 0.625, 1.250, 0.020,
            1.000, 1.094, 10.024, false},
        // Weights streamed (FsdpLayers on one rank): two layers in flight,
        // their adapters copied into the slots (2 x 40 x 3.0 M x 4 bytes on
        // top of 0.933 GiB), and every gradient kept for the whole step
        // (0.933 GiB) plus the layer in backward's (0.023 GiB).
        Row{"llama2-13b", 2, 2048, 64, 1, true, true, false, 8, 0.305, 0.979, 1.865, 0.956,
            0.039, 1.454, 5.902, true},
        Row{"llama3-8b", 2, 2048, 64, 1, true, true, false, 8, 0.210, 0.664, 1.250, 0.645,
            0.031, 2.072, 5.130, true},
        Row{"llama2-70b", 4, 2048, 64, 1, false, false, false, 80, 33.866, 3.086, 6.172, 0.039,
            10.000, 4.375, 63.048, true},
        Row{"llama2-70b", 2, 2048, 64, 1, true, true, true, 22, 0.822, 3.163, 0.000, 0.077,
            0.062, 2.188, 6.952, true},
        // 70B on one 22 GiB GPU, streamed. Gradients 828,375,040 x 4 bytes
        // (3.086 GiB) + one layer's (0.039); adapter 3.086 + two slots'
        // copies (0.077). Batch 2 with offloaded inputs: 15.97 GiB + 3% =
        // 16.448 (measured 16.07). Without: 80 x 64 MiB = 5 GiB of inputs
        // on the device, 21.16 GiB + 3% + 5/3 GiB = 23.201: does not fit.
        Row{"llama2-70b", 2, 2048, 64, 1, true, true, false, 22, 0.822, 3.163, 6.172, 3.125,
            0.062, 2.188, 16.448, true},
        Row{"llama2-70b", 2, 2048, 64, 1, true, false, false, 22, 0.822, 3.163, 6.172, 3.125,
            5.000, 2.188, 23.201, false},
        Row{"llama2-70b", 4, 2048, 64, 1, true, true, false, 22, 0.822, 3.163, 6.172, 3.125,
            0.125, 4.375, 18.766, true},
        Row{"llama2-70b", 2, 2048, 64, 2, true, true, false, 22, 1.028, 1.620, 3.086, 1.582,
            0.062, 2.188, 10.303, true},
        Row{"llama2-70b", 2, 2048, 64, 2, true, false, false, 22, 1.028, 1.620, 3.086, 1.582,
            5.000, 2.188, 17.055, true},
        Row{"llama2-70b", 1, 2048, 16, 2, false, true, false, 22, 17.755, 0.405, 0.771, 0.395,
            0.031, 1.562, 21.998, true},
        Row{"llama2-70b", 1, 2048, 64, 2, false, true, false, 22, 17.755, 1.620, 3.086, 1.582,
            0.031, 1.562, 26.855, false},
        // Long context, row-tiled MLP (4,608-row chunks; see the
        // TiledWorkingSet test for the per-token counts). r=32: 83.9 M
        // parameters. 81,920 tokens: working set 8.184 GiB (the tiled
        // graph; the loss is 6.23 GiB), one input 0.625 GiB.
        Row{"llama3.1-8b", 1, 81920, 32, 1, true, true, false, 22, 0.210, 0.332, 0.625, 0.322,
            0.625, 8.184, 10.719, true},
        Row{"llama3.1-8b", 1, 131072, 32, 1, true, true, false, 22, 0.210, 0.332, 0.625, 0.322,
            1.000, 13.094, 16.163, true},
        // Resident weights: the 8B's 5.31 GiB stay on the card, still fits.
        Row{"llama3.1-8b", 1, 131072, 32, 1, false, true, false, 22, 5.311, 0.312, 0.625,
            0.312, 1.000, 13.094, 21.387, true}));

// The tiled recompute graph of Llama-3.1-8B (H 4096, I 14336, Q 4096, K
// 1024, 32 heads of 128) in bf16, per token: kept from the attention half
// 2 x (3 x 4096 + 6144 + 2 x 4096) + 4 x 32 + 4 = 53,380 bytes; one MLP
// chunk row 2 x (5 x 4096 + 6 x 14336) = 212,992; attention backward
// 2 x (3 x 4096 + 2 x 1024) + 4 x 4096 + 4 x 32 = 45,184. At 81,920 tokens:
// rotary 2 x 81,920 x 128 x 2 + prefetched input 81,920 x 8,192 + 81,920 x
// 53,380 + max(4,608 x 212,992, 81,920 x 45,184) = 8,787,394,560 bytes.
TEST(MemoryPlanTest, TiledWorkingSet) {
  auto model = model::RandomModelConfig("llama3.1-8b");
  ASSERT_TRUE(model.ok());
  train::JobConfig job;
  job.train.context_length = 81920;
  job.lora.r = 32;
  job.dist.cpu_offload = job.dist.activation_offload = true;
  const MemoryPlan plan = PlanMemory(*model, job, PlanDevice{});
  EXPECT_EQ(plan.mlp_chunk_tokens, 4608);
  EXPECT_EQ(plan.device.working_set, 8787394560LL);
  EXPECT_NE(PlanLine(plan).find("; MLP in chunks of 4608 tokens"), std::string::npos);
  EXPECT_EQ(PlanJson(plan, {})["mlp_chunk_tokens"].get<int64_t>(), 4608);
  // An explicit chunk: one chunk's MLP (40,000 x 212,992 bytes) passes the
  // attention backward and sets the peak.
  job.train.mlp_chunk_tokens = 40000;
  const MemoryPlan big = PlanMemory(*model, job, PlanDevice{});
  EXPECT_EQ(big.mlp_chunk_tokens, 40000);
  EXPECT_EQ(big.device.working_set,
            8787394560LL - 81920LL * 45184 + 40000LL * 212992);
  // MLP dropout keeps the trainer untiled, and the plan with it.
  job.train.mlp_chunk_tokens = 0;
  job.lora.dropout = 0.05;
  const MemoryPlan dropout = PlanMemory(*model, job, PlanDevice{});
  EXPECT_EQ(dropout.mlp_chunk_tokens, 0);
  EXPECT_GT(dropout.device.working_set, 2 * plan.device.working_set);
}

// train.recompute keep_mlp, Llama-2-7B at 4 x 2048 in bf16: one gate/up
// product is 8,192 x 2 x 11,008 x 2 = 360,710,144 bytes (0.336 GiB). With
// offloaded inputs the device adds one (the prefetched one): the forward's
// two in flight + the computing layer's product and activation, 2 x P +
// 8,192 x (3 x 11,008 + 2 x 4,096) x 2 = 1,396,703,232, stay below the
// backward's working set (2,130,706,432) + P. The host pins 32 of them,
// each in a 512 MiB pinned block (16 GiB). On the device without offload:
// all 32.
TEST(MemoryPlanTest, KeptProductsOfLlama2_7b) {
  auto model = model::RandomModelConfig("llama2-7b");
  ASSERT_TRUE(model.ok());
  train::JobConfig job;
  job.train.batch_size = 4;
  job.train.context_length = 2048;
  job.dist.activation_offload = true;
  job.train.recompute = "full";
  const MemoryPlan full = PlanMemory(*model, job, PlanDevice{});
  EXPECT_FALSE(full.keeps_mlp_products);
  EXPECT_EQ(full.device.kept_products, 0);
  EXPECT_EQ(full.host.kept_products, 0);
  job.train.recompute = "keep_mlp";
  const MemoryPlan keep = PlanMemory(*model, job, PlanDevice{});
  EXPECT_TRUE(keep.keeps_mlp_products);
  EXPECT_EQ(keep.device.kept_products, 360710144);
  EXPECT_EQ(keep.host.kept_products, 32LL * 536870912);
  EXPECT_EQ(PinnedHostBytes(360710144), 536870912);
  EXPECT_EQ(PinnedHostBytes(64 << 20), 64 << 20);
  EXPECT_EQ(keep.device.working_set, full.device.working_set);
  // 3% slack on top of the product.
  EXPECT_NEAR(static_cast<double>(keep.device.Total() - full.device.Total()),
              360710144 * 1.03, 2.0);
  EXPECT_NE(PlanLine(keep).find("kept products 0.34"), std::string::npos) << PlanLine(keep);
  EXPECT_EQ(PlanLine(full).find("kept products"), std::string::npos);
  EXPECT_TRUE(PlanJson(keep, {})["keeps_mlp_products"].get<bool>());
  // auto: the same with offload and room on the host (32 x (512 + 64 MiB
  // pinned) + 1 GiB for the process = 19 GiB, at most half of it), full
  // otherwise.
  job.train.recompute = "auto";
  PlanDevice host64;
  host64.host_memory_bytes = 64 * kGiB;
  EXPECT_EQ(PlanMemory(*model, job, host64).device.kept_products, 360710144);
  PlanDevice host38;
  host38.host_memory_bytes = 38 * kGiB;
  EXPECT_TRUE(PlanMemory(*model, job, host38).keeps_mlp_products);
  PlanDevice host37;
  host37.host_memory_bytes = 37 * kGiB;
  EXPECT_FALSE(PlanMemory(*model, job, host37).keeps_mlp_products);
  // ... and only where the products still fit the card: at a cap just
  // under the kept plan's total auto recomputes in full instead.
  PlanDevice tight = host64;
  tight.capacity_bytes = keep.device.Total() - 1;
  const MemoryPlan fallback = PlanMemory(*model, job, tight);
  EXPECT_FALSE(fallback.keeps_mlp_products);
  EXPECT_TRUE(fallback.fits());
  // Without offload: keep_mlp keeps all 32 on the device; auto does not keep.
  job.dist.activation_offload = false;
  EXPECT_FALSE(PlanMemory(*model, job, host64).keeps_mlp_products);
  job.train.recompute = "keep_mlp";
  const MemoryPlan on_device = PlanMemory(*model, job, PlanDevice{});
  EXPECT_EQ(on_device.device.kept_products, 32LL * 360710144);
  EXPECT_EQ(on_device.host.kept_products, 0);
  // Layers whose gate/up do not run as one product keep nothing.
  job.dist.activation_offload = true;
  job.lora.dropout = 0.1;
  EXPECT_FALSE(PlanMemory(*model, job, PlanDevice{}).keeps_mlp_products);
}

// Note [Where the kept products live]: auto puts the top layers' products
// on the device where a card of known size has room for them: as many as
// fit 80% of what the plan without them leaves free.
TEST(MemoryPlanTest, AutoKeepsProductsInTheCardsFreeRoom) {
  auto model = model::RandomModelConfig("llama2-7b");
  ASSERT_TRUE(model.ok());
  constexpr int64_t kProduct = 360710144;
  train::JobConfig job;
  job.train.batch_size = 4;
  job.train.context_length = 2048;
  job.train.recompute = "full";
  PlanDevice card;
  card.capacity_bytes = 22 * kGiB;
  card.host_memory_bytes = 64 * kGiB;
  const MemoryPlan full = PlanMemory(*model, job, card);
  ASSERT_TRUE(full.fits());
  EXPECT_EQ(full.kept_mlp_layers, 0);
  // Without offload: the others recompute in full.
  job.train.recompute = "auto";
  const MemoryPlan on_card = PlanMemory(*model, job, card);
  const int64_t room = card.capacity_bytes - full.device.Total();
  const auto want = static_cast<int64_t>(0.8 * static_cast<double>(room) / (kProduct * 1.03));
  EXPECT_GT(want, 0);
  EXPECT_LT(want, 32);
  EXPECT_TRUE(on_card.fits());
  EXPECT_EQ(on_card.kept_mlp_layers, want);
  EXPECT_EQ(on_card.device_kept_mlp_layers, want);
  EXPECT_EQ(on_card.device.kept_products, want * kProduct);
  EXPECT_EQ(on_card.host.kept_products, 0);
  EXPECT_NE(PlanLine(on_card).find(absl::StrCat("products of ", want, " layers (on the GPU)")),
            std::string::npos)
      << PlanLine(on_card);
  EXPECT_EQ(PlanJson(on_card, {})["device_kept_mlp_layers"].get<int64_t>(), want);
  // A bigger card keeps every layer's; an unknown one none; keep_mlp and
  // full are what they say whatever the card.
  PlanDevice big = card;
  big.capacity_bytes = 40 * kGiB;
  EXPECT_EQ(PlanMemory(*model, job, big).device_kept_mlp_layers, 32);
  EXPECT_FALSE(PlanMemory(*model, job, PlanDevice{}).keeps_mlp_products);
  job.train.recompute = "keep_mlp";
  EXPECT_EQ(PlanMemory(*model, job, card).device_kept_mlp_layers, 32);
  // With offload: every layer keeps its product, the top ones on the card
  // (no trip over the host link), the rest pinned on the host.
  job.train.recompute = "auto";
  job.dist.activation_offload = true;
  const MemoryPlan offloaded = PlanMemory(*model, job, card);
  EXPECT_TRUE(offloaded.fits());
  EXPECT_EQ(offloaded.kept_mlp_layers, 32);
  EXPECT_GT(offloaded.device_kept_mlp_layers, want);  // offloaded inputs leave more room
  EXPECT_LT(offloaded.device_kept_mlp_layers, 32);
  EXPECT_EQ(offloaded.host.kept_products,
            (32 - offloaded.device_kept_mlp_layers) * PinnedHostBytes(kProduct));
  EXPECT_NE(PlanLine(offloaded).find(" on the GPU, "), std::string::npos) << PlanLine(offloaded);
  // explicit keep_mlp with offload keeps them all on the host, as before.
  job.train.recompute = "keep_mlp";
  EXPECT_EQ(PlanMemory(*model, job, card).device_kept_mlp_layers, 0);
  // Llama-2-70B at 4 x 2048 on one 140.4 GiB card (an H200 less the
  // context): 63.05 GiB planned without products of 0.875 GiB each, so
  // 0.8 x 75.35 / 0.90 = 66 of its 80 layers keep theirs.
  auto large = model::RandomModelConfig("llama2-70b");
  ASSERT_TRUE(large.ok());
  job.train.recompute = "auto";
  job.dist.activation_offload = false;
  const MemoryPlan h200 = PlanMemory(*large, job, DeviceForJob(job, 143771.0 / 1024, 1));
  EXPECT_EQ(h200.device_kept_mlp_layers, 66);
  EXPECT_TRUE(h200.fits());
}

TEST(MemoryPlanTest, MlpChunkTokensTilesOnlyLongMicroBatches) {
  // 8B (I 14336), bf16: a row of the gate/up product is 57,344 bytes; tiling
  // starts past 1 GiB (18,724 rows) with 256 MiB chunks (4,681 -> 4,608 rows).
  EXPECT_EQ(MlpChunkTokens(8192, 14336, 2, 0), 0);
  EXPECT_EQ(MlpChunkTokens(18724, 14336, 2, 0), 0);
  EXPECT_EQ(MlpChunkTokens(18725, 14336, 2, 0), 4608);
  EXPECT_EQ(MlpChunkTokens(131072, 14336, 2, 0), 4608);
  // 70B (I 28672) at 4 x 2048: 0.94 GB, untiled; fp32 halves the chunk.
  EXPECT_EQ(MlpChunkTokens(8192, 28672, 2, 0), 0);
  EXPECT_EQ(MlpChunkTokens(65536, 28672, 4, 0), 1024);
  // An explicit size tiles whenever the micro-batch is longer.
  EXPECT_EQ(MlpChunkTokens(100, 14336, 2, 7), 7);
  EXPECT_EQ(MlpChunkTokens(7, 14336, 2, 7), 0);
}

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

TEST(MemoryPlanTest, FullFineTuningCountsWeightsMastersGradientsAndMoments) {
  auto model = model::RandomModelConfig("llama3.2-1b");
  ASSERT_TRUE(model.ok()) << model.status();
  // Llama-3.2-1B's 1,235,814,400 parameters: the tied embedding
  // 128256 x 2048, 16 layers x (2048 x (2048 + 512 + 512 + 2048) +
  // 3 x 2048 x 8192 + 2 norms x 2048), the final norm.
  const int64_t n = 128256LL * 2048 + 16 * (2048LL * 5120 + 3LL * 2048 * 8192 + 2 * 2048) + 2048;
  ASSERT_EQ(n, 1235814400);
  EXPECT_EQ(FullParameterCount(*model), n);
  train::JobConfig job;
  job.train.base = "bf16";
  job.train.method = "full";
  MemoryPlan plan = PlanMemory(*model, job, PlanDevice{});
  EXPECT_EQ(plan.trainable_parameters, n);
  EXPECT_EQ(plan.device.frozen_weights, 2 * n);  // bf16 weights the layers read
  EXPECT_EQ(plan.device.adapter, 4 * n);         // float32 masters
  EXPECT_EQ(plan.device.optimizer, 8 * n);       // two float32 moments
  EXPECT_EQ(plan.device.gradients, 6 * n);       // bf16, widened to float32 for the step
  EXPECT_EQ(plan.device.workspace, 0);
  // In fp32 the weights are their own masters and their gradients need no widening.
  job.train.dtype = "fp32";
  plan = PlanMemory(*model, job, PlanDevice{});
  EXPECT_EQ(plan.device.frozen_weights, 4 * n);
  EXPECT_EQ(plan.device.adapter, 0);
  EXPECT_EQ(plan.device.gradients, 4 * n);
}

TEST(MemoryPlanTest, LlamaProTrainsOnlyTheCopiesDenseBesideAQuantizedBase) {
  auto model = model::RandomModelConfig("llama2-7b");
  ASSERT_TRUE(model.ok());
  train::JobConfig job;
  job.train.method = "llama_pro";
  job.train.expand_every = 4;  // 32 layers + 8 copies
  const int64_t per_layer = 2 * 4096 + 4LL * 4096 * 4096 + 3LL * 4096 * 11008;
  MemoryPlan plan = PlanMemory(*model, job, PlanDevice{});
  EXPECT_EQ(plan.trainable_parameters, 8 * per_layer);
  EXPECT_EQ(plan.device.adapter, 4 * 8 * per_layer);    // float32 masters
  EXPECT_EQ(plan.device.optimizer, 8 * 8 * per_layer);  // moments
  EXPECT_EQ(plan.device.gradients, 6 * 8 * per_layer);  // bf16 + widened
  // 32 NF4 layers as for QLoRA, plus 8 dense bf16 ones.
  const int64_t nf4_32 = PlanMemory(*model, train::JobConfig{}, PlanDevice{}).device.frozen_weights;
  EXPECT_EQ(plan.device.frozen_weights, nf4_32 + 8 * 2 * per_layer);
}

// Llama-3.2-1B trained in full on a bf16 base: its parameter count, one
// decoder layer's and the embedding table's.
struct Full1B {
  model::ModelConfig model;
  train::JobConfig job;
  int64_t n = 0;
  int64_t layer = 2048LL * 5120 + 3LL * 2048 * 8192 + 2 * 2048;
  int64_t table = 128256LL * 2048;
};

Full1B MakeFull1B() {
  Full1B f;
  auto model = model::RandomModelConfig("llama3.2-1b");
  EXPECT_TRUE(model.ok()) << model.status();
  f.model = *model;
  f.job.train.base = "bf16";
  f.job.train.method = "full";
  f.n = FullParameterCount(f.model);
  return f;
}

TEST(MemoryPlanTest, ShardedFullFineTuningDividesTheTrainedStateByTheRanks) {
  Full1B f = MakeFull1B();
  const model::ModelConfig* model = &f.model;
  train::JobConfig& job = f.job;
  PlanDevice one, two;
  two.world_size = 2;
  const int64_t n = f.n, layer = f.layer, table = f.table;
  const MemoryPlan alone = PlanMemory(*model, job, one);
  const MemoryPlan sharded = PlanMemory(*model, job, two);
  EXPECT_EQ(sharded.trainable_parameters, n);
  // Half of the bf16 weights, plus the two gathered layers in flight.
  EXPECT_EQ(sharded.device.frozen_weights, 2 * n / 2 + 2 * 2 * layer);
  EXPECT_EQ(sharded.device.adapter, 4 * n / 2);    // float32 master shards
  EXPECT_EQ(sharded.device.optimizer, 8 * n / 2);  // moment shards
  // float32 gradient shards, plus the largest unit's (the embedding table)
  // bf16 gradients and their float32 flattening while reduce-scattered.
  EXPECT_EQ(sharded.device.gradients, 4 * n / 2 + 6 * table);
  EXPECT_LT(sharded.device.Total(), alone.device.Total());
  // no_shard replicates everything on each rank.
  job.dist.sharding = "no_shard";
  EXPECT_EQ(PlanMemory(*model, job, two).device.optimizer, 8 * n);
}

TEST(MemoryPlanTest, ShardedLlamaProDividesTheCopiesStateByTheRanks) {
  auto model = model::RandomModelConfig("llama2-7b");
  ASSERT_TRUE(model.ok());
  train::JobConfig job;
  job.train.method = "llama_pro";
  job.train.expand_every = 4;  // 32 layers + 8 copies
  PlanDevice two;
  two.world_size = 2;
  const int64_t per_layer = 2 * 4096 + 4LL * 4096 * 4096 + 3LL * 4096 * 11008;
  const MemoryPlan plan = PlanMemory(*model, job, two);
  EXPECT_EQ(plan.trainable_parameters, 8 * per_layer);
  EXPECT_EQ(plan.device.adapter, 4 * 8 * per_layer / 2);
  EXPECT_EQ(plan.device.optimizer, 8 * 8 * per_layer / 2);
  EXPECT_EQ(plan.device.gradients, 4 * 8 * per_layer / 2 + 6 * per_layer);
}

TEST(MemoryPlanTest, OffloadedFullFineTuningKeepsTheTrainedStateOnTheHost) {
  Full1B f = MakeFull1B();
  const model::ModelConfig* model = &f.model;
  train::JobConfig& job = f.job;
  job.dist.cpu_offload = true;
  PlanDevice two;
  two.world_size = 2;
  const int64_t n = f.n, layer = f.layer, table = f.table;
  train::JobConfig device_job = job;
  device_job.dist.cpu_offload = false;
  const MemoryPlan on_device = PlanMemory(*model, device_job, two);
  for (int world : {1, 2}) {
    SCOPED_TRACE(world);
    PlanDevice device;
    device.world_size = world;
    const MemoryPlan plan = PlanMemory(*model, job, device);
    // The GPU: two bf16 layers in flight (and under FSDP the shard being
    // copied up), one unit's gradients while reduced; no masters, moments
    // or gradient shards.
    EXPECT_EQ(plan.device.frozen_weights, 2 * 2 * layer + (world > 1 ? 2 * layer / 2 : 0));
    EXPECT_EQ(plan.device.adapter, 0);
    EXPECT_EQ(plan.device.optimizer, 0);
    EXPECT_EQ(plan.device.gradients, 6 * table);
    // The host: the bf16 shards, and a float32 master, gradient and two
    // moments per parameter.
    EXPECT_EQ(plan.host.frozen_weights, 2 * n / world);
    EXPECT_EQ(plan.host.optimizer, 16 * n / world);
  }
  EXPECT_LT(PlanMemory(*model, job, two).device.Total(), on_device.device.Total() / 4);
  // In fp32 the host shard is its own master.
  job.train.dtype = "fp32";
  EXPECT_EQ(PlanMemory(*model, job, two).host.optimizer, 12 * n / 2);
  // offload_optimizer alone: the weights stay on the GPU, the rest moves.
  job.train.dtype = "bf16";
  job.dist.cpu_offload = false;
  job.dist.offload_optimizer = true;
  const MemoryPlan host_optimizer = PlanMemory(*model, job, two);
  EXPECT_EQ(host_optimizer.device.frozen_weights, on_device.device.frozen_weights);
  EXPECT_EQ(host_optimizer.device.optimizer, 0);
  EXPECT_EQ(host_optimizer.host.frozen_weights, 0);
  EXPECT_EQ(host_optimizer.host.optimizer, 16 * n / 2);
}

TEST(MemoryPlanTest, OffloadedLlamaProStreamsDenseSlotsAndHostsTheCopiesState) {
  auto model = model::RandomModelConfig("llama2-7b");
  ASSERT_TRUE(model.ok());
  train::JobConfig job;
  job.train.method = "llama_pro";
  job.train.expand_every = 4;  // 32 layers + 8 copies
  job.dist.cpu_offload = true;
  PlanDevice two;
  two.world_size = 2;
  const int64_t per_layer = 2 * 4096 + 4LL * 4096 * 4096 + 3LL * 4096 * 11008;
  const MemoryPlan plan = PlanMemory(*model, job, two);
  EXPECT_EQ(plan.device.frozen_weights, 2 * 2 * per_layer + 2 * per_layer / 2);
  EXPECT_EQ(plan.device.optimizer, 0);
  EXPECT_EQ(plan.device.gradients, 6 * per_layer);
  EXPECT_EQ(plan.host.optimizer, 16 * 8 * per_layer / 2);
  // The host holds the NF4 shards of 40 layers with the 8 copies dense.
  train::JobConfig nf4;
  nf4.train = job.train;
  nf4.dist.cpu_offload = true;
  nf4.train.method = "lora";
  nf4.train.expand_every = 0;
  EXPECT_GT(plan.host.frozen_weights, PlanMemory(*model, nf4, two).host.frozen_weights);
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
