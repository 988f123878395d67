// Weight streaming and the host optimizer on the CPU: a job with
// dist.cpu_offload and/or dist.offload_optimizer runs the streamed path of
// FsdpLayers (host buffers copied into device slots, gradients staged down,
// AdamW on a host thread) with the CPU as its "device", and must train
// exactly what the same job trains without offload: same losses and
// adapters within 1e-6 (float32), on one rank and on two Gloo ranks.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "tests/worker/dist/fsdp_launcher.h"

namespace rigtune::testing {
namespace {

using OffloadTest = FsdpLauncher;

struct Variant {
  const char* name;
  bool cpu_offload;
  bool offload_optimizer;
};
constexpr Variant kVariants[] = {
    {"weights", true, false}, {"optimizer", false, true}, {"both", true, true}};

TEST_F(OffloadTest, OneRankTrainsTheSameWithOffload) {
  Outcome plain = Launch("plain", {.world = 1, .batch = 4});
  ASSERT_EQ(plain.exit_codes[0], 0) << plain.rank0_log;
  ASSERT_EQ(plain.losses.size(), 4u);
  for (const Variant& v : kVariants) {
    SCOPED_TRACE(v.name);
    Outcome o = Launch(v.name, {.world = 1, .batch = 4, .cpu_offload = v.cpu_offload,
                                .offload_optimizer = v.offload_optimizer});
    ExpectSameTraining(plain, o, 1e-6);
    EXPECT_THAT(o.rank0_log, ::testing::HasSubstr("expected peak RSS <="));
  }
}

TEST_F(OffloadTest, GradientAccumulationIsStagedExactly) {
  // Two micro-batches per step: the second one's gradients are added to the
  // first's in host memory.
  Outcome plain = Launch("plain", {.world = 1, .batch = 2, .grad_accum = 2});
  ASSERT_EQ(plain.exit_codes[0], 0) << plain.rank0_log;
  ExpectSameTraining(plain,
                     Launch("both", {.world = 1, .batch = 2, .cpu_offload = true,
                                     .offload_optimizer = true, .grad_accum = 2}),
                     1e-6);
}

TEST_F(OffloadTest, TwoRanksTrainTheSameWithOffload) {
  // Every variant sharded; unsharded (gradients all-reduced, no slices)
  // with both offloads.
  for (const char* sharding : {"full_shard", "no_shard"}) {
    SCOPED_TRACE(sharding);
    Outcome plain = Launch(std::string("plain_") + sharding,
                           {.world = 2, .batch = 2, .sharding = sharding});
    ASSERT_EQ(plain.exit_codes[0], 0) << plain.rank0_log;
    for (const Variant& v : kVariants) {
      if (std::string(sharding) == "no_shard" && std::string(v.name) != "both") continue;
      SCOPED_TRACE(v.name);
      ExpectSameTraining(
          plain,
          Launch(std::string(v.name) + "_" + sharding,
                 {.world = 2, .batch = 2, .sharding = sharding, .cpu_offload = v.cpu_offload,
                  .offload_optimizer = v.offload_optimizer}),
          1e-6);
    }
  }
}

TEST_F(OffloadTest, ResumeWithHostOptimizerContinuesExactly) {
  // The host update of the last step must be complete before the checkpoint
  // reads the masters and moments: stopping after 2 steps and resuming
  // gives the uninterrupted run.
  const LaunchOptions o{.world = 1, .batch = 4, .cpu_offload = true, .offload_optimizer = true};
  Outcome whole = Launch("whole", o);
  ASSERT_EQ(whole.exit_codes[0], 0) << whole.rank0_log;
  LaunchOptions first = o;
  first.stop_after = 2;
  Outcome paused = Launch("paused", first);
  ASSERT_EQ(paused.exit_codes[0], 0) << paused.rank0_log;
  LaunchOptions second = o;
  second.resume_from = paused.dir + "/checkpoints/step-2";
  Outcome resumed = Launch("resumed", second);
  ASSERT_EQ(resumed.exit_codes[0], 0) << resumed.rank0_log;
  ASSERT_EQ(resumed.losses.size(), 2u);
  whole.losses.erase(whole.losses.begin(), whole.losses.begin() + 2);
  ExpectSameTraining(whole, resumed, 1e-6);
}

TEST_F(OffloadTest, Phi3FusedLayersStreamAndResumeExactly) {
  // Phi-3's fused qkv_proj / gate_up_proj through weight streaming and the
  // host optimizer, and through a checkpoint of the single-process model
  // (adapter and moments under the fused PEFT names) and its resume.
  const std::string phi3 =
      "random:phi3-mini,layers=2,hidden=64,intermediate=128,heads=4,kv_heads=2,vocab=96";
  Outcome plain = Launch("plain", {.model = phi3, .world = 1, .batch = 4});
  ASSERT_EQ(plain.exit_codes[0], 0) << plain.rank0_log;
  ASSERT_EQ(plain.losses.size(), 4u);
  ExpectSameTraining(plain,
                     Launch("both", {.model = phi3, .world = 1, .batch = 4, .cpu_offload = true,
                                     .offload_optimizer = true}),
                     1e-6);
  LaunchOptions first{.model = phi3, .world = 1, .batch = 4};
  first.stop_after = 2;
  Outcome paused = Launch("paused", first);
  ASSERT_EQ(paused.exit_codes[0], 0) << paused.rank0_log;
  LaunchOptions second{.model = phi3, .world = 1, .batch = 4};
  second.resume_from = paused.dir + "/checkpoints/step-2";
  Outcome resumed = Launch("resumed", second);
  ASSERT_EQ(resumed.exit_codes[0], 0) << resumed.rank0_log;
  ASSERT_EQ(resumed.losses.size(), 2u);
  plain.losses.erase(plain.losses.begin(), plain.losses.begin() + 2);
  ExpectSameTraining(plain, resumed, 1e-6);
}

}  // namespace
}  // namespace rigtune::testing
