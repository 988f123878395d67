// train.method full and llama_pro sharded over ranks on the CPU (Gloo):
// FsdpLayers with trained weights on 2 and 4 ranks trains what one process
// (FullModelLayers) trains, under every sharding strategy; a job paused on 2
// ranks resumes exactly; with dist.cpu_offload / dist.offload_optimizer the
// weights stream from host memory and AdamW runs on the host, training the
// same model, and checkpoints cross between offloaded and on-device runs.
// The global batch stays the same (1 x 4 = 2 x 2 = 4 x 1 rows); the final float32
// masters are read from each run's last checkpoint (random: models write no
// model folder).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>

#include "tests/worker/dist/fsdp_launcher.h"
#include "worker/train/checkpoint.h"

namespace rigtune::testing {
namespace {

constexpr char kTied[] =
    "random:layers=2,hidden=64,intermediate=128,heads=4,kv_heads=2,vocab=96,tied=1";

class FullRanks : public FsdpLauncher {
 protected:
  // The masters of the checkpoint at `step` (float32, by Hugging Face name).
  static std::map<std::string, at::Tensor> Masters(const Outcome& o, int step) {
    auto c = train::ReadCheckpoint(o.dir + "/checkpoints/step-" + std::to_string(step));
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? c->adapter : std::map<std::string, at::Tensor>{};
  }

  // Same losses (relative `tol`) and the same masters after `step` steps
  // (norm-wise relative `tol`, every tensor).
  void ExpectSameModel(const Outcome& a, const Outcome& b, int step, double tol = 1e-5) {
    for (int c : b.exit_codes) ASSERT_EQ(c, 0) << b.rank0_log;
    ASSERT_EQ(a.losses.size(), b.losses.size());
    for (size_t i = 0; i < a.losses.size(); ++i) {
      EXPECT_NEAR(b.losses[i], a.losses[i], tol * std::abs(a.losses[i])) << "step " << i;
    }
    auto ma = Masters(a, step), mb = Masters(b, step);
    ASSERT_FALSE(ma.empty());
    ASSERT_EQ(ma.size(), mb.size());
    for (const auto& [name, t] : ma) {
      ASSERT_TRUE(mb.count(name)) << name;
      ASSERT_EQ(mb[name].sizes(), t.sizes()) << name;
      const double rel = ((mb[name] - t).norm() / t.norm().clamp_min(1e-12)).item<double>();
      EXPECT_LT(rel, tol) << name;
    }
  }

  // Every rank of `o` ran AdamW on the host (the offloaded path, not the
  // on-device one that CPU tests could silently take instead).
  static void ExpectHostSteps(const Outcome& o, int steps) {
    EXPECT_NE(o.rank0_log.find("rank 0: " + std::to_string(steps) + " AdamW steps ran on the host"),
              std::string::npos)
        << o.rank0_log;
  }

  Outcome One(const std::string& name, LaunchOptions o) {
    o.world = 1;
    o.batch = 4;
    Outcome one = Launch(name, o);
    EXPECT_EQ(one.exit_codes[0], 0) << one.rank0_log;
    EXPECT_EQ(one.losses.size(), static_cast<size_t>(o.steps));
    return one;
  }
};

LaunchOptions Full() { return {.base = "bf16", .method = "full"}; }

TEST_F(FullRanks, TwoAndFourRanksMatchOne) {
  const Outcome one = One("one", Full());
  for (int world : {2, 4}) {
    SCOPED_TRACE(world);
    LaunchOptions o = Full();
    o.world = world;
    o.batch = 4 / world;
    ExpectSameModel(one, Launch("ranks" + std::to_string(world), o), 4);
  }
}

// In bf16 each rank's weights are the rounding of its float32 masters
// after every step (in fp32 above they are the masters themselves). One
// rank computes its gradients over 4 rows in bf16, two ranks over 2 rows
// each, summed in float32: bf16 rounding separates them, and AdamW's
// sign-like first steps turn that into a few percent on the embedding rows
// (as in tests/gpu/fsdp_gpu_test.cc), so against one rank the tolerance is
// bf16's. Sharded and unsharded two-rank runs compute the same per-rank
// gradients and must agree tightly. Weights that never reached the shards
// would leave the loss flat and the masters apart by the whole update.
TEST_F(FullRanks, Bf16WeightsAreRoundedFromTheMasterShards) {
  LaunchOptions bf16 = Full();
  bf16.dtype = "bf16";
  const Outcome one = One("one", bf16);
  LaunchOptions two = bf16;
  two.world = 2;
  two.batch = 2;
  const Outcome sharded = Launch("full_shard", two);
  ExpectSameModel(one, sharded, 4, 5e-2);
  two.sharding = "no_shard";
  ExpectSameModel(sharded, Launch("no_shard", two), 4, 1e-5);
  // Offloaded, the bf16 shards are rounded on the host from host masters.
  two.sharding = "full_shard";
  two.cpu_offload = true;
  const Outcome offloaded = Launch("offloaded", two);
  ExpectSameModel(sharded, offloaded, 4, 1e-5);
  ExpectHostSteps(offloaded, 4);
}

TEST_F(FullRanks, EveryStrategyMatchesOneWithATiedHead) {
  LaunchOptions tied = Full();
  tied.model = kTied;
  const Outcome one = One("one", tied);
  struct Strategy {
    const char* sharding;
    int world, local_world;
  };
  // hybrid on 2 simulated nodes of 2 ranks: shards within a node, the
  // gradient shards all-reduced across them.
  for (const Strategy& s : {Strategy{"full_shard", 2, 0}, Strategy{"shard_grad_op", 2, 0},
                            Strategy{"no_shard", 2, 0}, Strategy{"hybrid", 4, 2}}) {
    SCOPED_TRACE(s.sharding);
    LaunchOptions o = tied;
    o.sharding = s.sharding;
    o.world = s.world;
    o.local_world = s.local_world;
    o.batch = 4 / s.world;
    ExpectSameModel(one, Launch(s.sharding, o), 4);
  }
}

TEST_F(FullRanks, LlamaProOnTwoRanksMatchesOne) {
  // Two NF4 layers, a copy after each: layers 1 and 3 train, 0 and 2 stay
  // frozen (sharded as NF4 bytes), and the backward walk stops at layer 1.
  const LaunchOptions pro{.base = "nf4", .method = "llama_pro", .expand_every = 1};
  const Outcome one = One("one", pro);
  LaunchOptions two = pro;
  two.world = 2;
  two.batch = 2;
  const Outcome sharded = Launch("two", two);
  ExpectSameModel(one, sharded, 4);
  auto masters = Masters(sharded, 4);
  EXPECT_TRUE(masters.count("model.layers.3.mlp.down_proj.weight"));
  EXPECT_FALSE(masters.count("model.layers.2.mlp.down_proj.weight"));
  EXPECT_FALSE(masters.count("model.embed_tokens.weight"));
}

TEST_F(FullRanks, PausedOnTwoRanksResumesExactly) {
  LaunchOptions whole = Full();
  whole.steps = 6;
  const Outcome uninterrupted = One("whole", whole);
  LaunchOptions first = whole;
  first.world = 2;
  first.batch = 2;
  first.stop_after = 3;
  const Outcome paused = Launch("paused", first);
  for (int c : paused.exit_codes) ASSERT_EQ(c, 0) << paused.rank0_log;
  ASSERT_EQ(paused.losses.size(), 3u);
  LaunchOptions second = whole;
  second.world = 2;
  second.batch = 2;
  second.resume_from = paused.dir + "/checkpoints/step-3";
  Outcome joined = Launch("resumed", second);
  joined.losses.insert(joined.losses.begin(), paused.losses.begin(), paused.losses.end());
  ExpectSameModel(uninterrupted, joined, 6);
}

// One process streams (FsdpLayers without a communicator); two ranks
// stream their shards. offload_optimizer alone keeps the fp32 shards on the
// device and copies host masters into them after each host update.
TEST_F(FullRanks, OffloadOnOneAndTwoRanksMatchesOneWithout) {
  const Outcome one = One("one", Full());
  struct Case {
    const char* name;
    int world;
    bool cpu_offload, offload_optimizer;
  };
  for (const Case& c : {Case{"streamed", 1, true, false}, Case{"offloaded", 2, true, false},
                        Case{"host_optimizer", 2, false, true}}) {
    SCOPED_TRACE(c.name);
    LaunchOptions o = Full();
    o.world = c.world;
    o.batch = 4 / c.world;
    o.cpu_offload = c.cpu_offload;
    o.offload_optimizer = c.offload_optimizer;
    const Outcome offloaded = Launch(c.name, o);
    ExpectSameModel(one, offloaded, 4);
    ExpectHostSteps(offloaded, 4);
  }
}

TEST_F(FullRanks, LlamaProWithOffloadOnTwoRanksMatchesOneWithout) {
  // The frozen NF4 layers and the dense inserted ones share the streaming
  // slots (sized for the larger); only the inserted ones are updated.
  const LaunchOptions pro{.base = "nf4", .method = "llama_pro", .expand_every = 1};
  const Outcome one = One("one", pro);
  LaunchOptions two = pro;
  two.world = 2;
  two.batch = 2;
  two.cpu_offload = true;
  const Outcome offloaded = Launch("offloaded", two);
  ExpectSameModel(one, offloaded, 4);
  ExpectHostSteps(offloaded, 4);
}

// Checkpoints are the same with and without offload: one written on the
// device resumes offloaded, one written offloaded resumes on the device,
// and both continue the uninterrupted run.
TEST_F(FullRanks, CheckpointsCrossBetweenOffloadedAndOnDeviceRuns) {
  LaunchOptions whole = Full();
  whole.steps = 6;
  whole.checkpoint_every = 3;
  const Outcome uninterrupted = One("whole", whole);

  LaunchOptions streamed = whole;
  streamed.world = 1;
  streamed.cpu_offload = true;
  streamed.resume_from = uninterrupted.dir + "/checkpoints/step-3";
  Outcome from_device = Launch("from_device", streamed);
  ExpectHostSteps(from_device, 3);
  from_device.losses.insert(from_device.losses.begin(), uninterrupted.losses.begin(),
                            uninterrupted.losses.begin() + 3);
  ExpectSameModel(uninterrupted, from_device, 6);

  LaunchOptions first = whole;
  first.world = 2;
  first.batch = 2;
  first.checkpoint_every = 0;
  first.cpu_offload = true;
  first.stop_after = 3;
  const Outcome paused = Launch("paused", first);
  for (int c : paused.exit_codes) ASSERT_EQ(c, 0) << paused.rank0_log;
  ASSERT_EQ(paused.losses.size(), 3u);
  ExpectHostSteps(paused, 3);
  LaunchOptions second = first;
  second.cpu_offload = false;
  second.stop_after = 0;
  second.resume_from = paused.dir + "/checkpoints/step-3";
  Outcome on_device = Launch("on_device", second);
  EXPECT_EQ(on_device.rank0_log.find("AdamW steps ran on the host"), std::string::npos);
  on_device.losses.insert(on_device.losses.begin(), paused.losses.begin(), paused.losses.end());
  ExpectSameModel(uninterrupted, on_device, 6);
}

}  // namespace
}  // namespace rigtune::testing
