// Multi-process FSDP on the CPU (Gloo): N ranks must train exactly what one
// rank with N times the batch trains, for every sharding strategy; and a
// rank that dies must end the job with an error naming it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

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

TEST_F(FsdpTest, DeadRankEndsTheJobNamingIt) {
  Outcome o = Launch("dead", {.world = 2, .batch = 2, .kill_rank = 1, .steps = 100000});
  EXPECT_NE(o.exit_codes[1], 0);
  EXPECT_EQ(o.exit_codes[0], 1);
  EXPECT_THAT(o.rank0_log, ::testing::HasSubstr("rank 1"));
}

}  // namespace
}  // namespace rigtune::testing
