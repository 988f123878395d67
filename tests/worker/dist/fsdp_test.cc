// Multi-process FSDP on the CPU (Gloo): N ranks must train exactly what one
// rank with N times the batch trains, for every sharding strategy; and a
// rank that dies must end the job with an error naming it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <regex>
#include <string>

#include "tests/worker/dist/fsdp_launcher.h"

namespace rigtune::testing {
namespace {

using FsdpTest = FsdpLauncher;

TEST_F(FsdpTest, ShardingStrategiesMatchOneRank) {
  Outcome one = Launch("one", {.world = 1, .batch = 4});
  ASSERT_EQ(one.exit_codes[0], 0) << one.rank0_log;
  ASSERT_EQ(one.losses.size(), 4u);
  EXPECT_LT(one.losses.back(), one.losses.front());
  for (const char* sharding : {"full_shard", "shard_grad_op", "no_shard"}) {
    SCOPED_TRACE(sharding);
    ExpectSameTraining(
        one, Launch(std::string("two_") + sharding, {.world = 2, .batch = 2, .sharding = sharding}),
        1e-5);
  }
}

TEST_F(FsdpTest, FourRanksMatchOneRank) {
  Outcome one = Launch("one", {.world = 1, .batch = 4});
  ASSERT_EQ(one.exit_codes[0], 0) << one.rank0_log;
  for (const char* sharding : {"full_shard", "shard_grad_op", "no_shard"}) {
    SCOPED_TRACE(sharding);
    ExpectSameTraining(
        one, Launch(std::string("four_") + sharding, {.world = 4, .batch = 1, .sharding = sharding}),
        1e-5);
  }
}

TEST_F(FsdpTest, HybridAcrossTwoSimulatedNodesMatchesOneRank) {
  // Four ranks as two "nodes" of two: shard within a node, replicate across.
  Outcome one = Launch("one", {.world = 1, .batch = 4});
  ASSERT_EQ(one.exit_codes[0], 0) << one.rank0_log;
  ExpectSameTraining(
      one, Launch("hybrid", {.world = 4, .local_world = 2, .batch = 1, .sharding = "hybrid"}),
      1e-5);
}

TEST_F(FsdpTest, TiedEmbeddingsShardedMatchOneRank) {
  // The head reuses the embedding unit: gathered for the lookup and again
  // for the loss.
  const std::string tied =
      "random:layers=2,hidden=64,intermediate=128,heads=4,kv_heads=2,vocab=96,tied=1";
  Outcome one = Launch("one", {.model = tied, .world = 1, .batch = 4});
  ASSERT_EQ(one.exit_codes[0], 0) << one.rank0_log;
  ExpectSameTraining(one, Launch("two", {.model = tied, .world = 2, .batch = 2}), 1e-5);
}

TEST_F(FsdpTest, GemmaLayersShardedMatchOneRank) {
  // Gemma 3's layers (four norms, q/k head norms, GeGLU) survive flattening
  // into shards and gathering back.
  const std::string model =
      "random:gemma3-1b,layers=2,hidden=64,intermediate=128,heads=4,kv_heads=2,vocab=96,"
      "head_dim=32";
  Outcome one = Launch("one", {.model = model, .world = 1, .batch = 4});
  ASSERT_EQ(one.exit_codes[0], 0) << one.rank0_log;
  ExpectSameTraining(one, Launch("two", {.model = model, .world = 2, .batch = 2}), 1e-5);
}

TEST_F(FsdpTest, Phi3FusedLayersShardedMatchOneRank) {
  // Phi-3's fused qkv_proj and gate_up_proj (one NF4 tensor and one adapter
  // each, empty k/v/up slots) survive flattening into shards and gathering
  // back; the job's default targets resolve to the fused names.
  const std::string model =
      "random:phi3-mini,layers=2,hidden=64,intermediate=128,heads=4,kv_heads=2,vocab=96";
  Outcome one = Launch("one", {.model = model, .world = 1, .batch = 4});
  ASSERT_EQ(one.exit_codes[0], 0) << one.rank0_log;
  ASSERT_EQ(one.losses.size(), 4u);
  EXPECT_LT(one.losses.back(), one.losses.front());
  ExpectSameTraining(one, Launch("two", {.model = model, .world = 2, .batch = 2}), 1e-5);
}

// The "rank 0 holds ... (N bytes, ...)" figure of a rank's log.
int64_t FrozenShardBytes(const std::string& log) {
  std::smatch m;
  if (!std::regex_search(log, m, std::regex(R"(of frozen shards \((\d+) bytes)"))) return -1;
  return std::stoll(m[1]);
}

TEST_F(FsdpTest, EveryUnitIsShardedIncludingEmbeddingAndHead) {
  // A rank of two holds half of what an unsharded rank holds, the embedding
  // table and LM head (2 x 96 x 64 x 2 bytes, 24 KiB) included; padding is
  // at most 32 bytes per unit (2 layers + 2 edge units).
  const LaunchOptions o{.world = 2, .batch = 1, .dtype = "bf16", .steps = 1};
  LaunchOptions unsharded = o;
  unsharded.sharding = "no_shard";
  Outcome full = Launch("full", o), none = Launch("none", unsharded);
  ASSERT_EQ(full.exit_codes[0], 0) << full.rank0_log;
  ASSERT_EQ(none.exit_codes[0], 0) << none.rank0_log;
  const int64_t sharded = FrozenShardBytes(full.rank0_log), all = FrozenShardBytes(none.rank0_log);
  ASSERT_GT(sharded, 0) << full.rank0_log;
  EXPECT_GT(all, 2 * 2 * 96 * 64);
  EXPECT_NEAR(static_cast<double>(sharded), all / 2.0, 4 * 32);
}

TEST_F(FsdpTest, DeadRankEndsTheJobNamingIt) {
  Outcome o = Launch("dead", {.world = 2, .batch = 2, .kill_rank = 1, .steps = 100000});
  EXPECT_NE(o.exit_codes[1], 0);
  EXPECT_EQ(o.exit_codes[0], 1);
  EXPECT_THAT(o.rank0_log, ::testing::HasSubstr("rank 1"));
}

TEST_F(FsdpTest, HungRankEndsTheJobAfterTheTimeoutNamingIt) {
  // Rank 1 stops (SIGSTOP) without closing its connections: rank 0's next
  // collective can only end by its timeout, and the error names rank 1,
  // whose heartbeat stopped with it.
  Outcome o = Launch("hung", {.world = 2, .batch = 2, .stop_rank = 1, .timeout_seconds = 5,
                              .steps = 100000});
  EXPECT_EQ(o.exit_codes[0], 1);
  EXPECT_THAT(o.rank0_log, ::testing::HasSubstr("rank 1 stopped responding"));
}

}  // namespace
}  // namespace rigtune::testing
