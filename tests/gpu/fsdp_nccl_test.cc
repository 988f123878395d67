// FSDP over NCCL on two GPUs: two ranks in bf16 train what one rank with
// twice the batch trains, within bf16 tolerance, with and without CPU offload.
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include "tests/worker/dist/fsdp_launcher.h"

namespace rigtune::testing {
namespace {

class FsdpNcclTest : public FsdpLauncher {
 protected:
  void SetUp() override {
    if (!at::hasCUDA() || at::getNumGPUs() < 2) GTEST_SKIP() << "needs two CUDA devices";
    FsdpLauncher::SetUp();
  }
};

TEST_F(FsdpNcclTest, TwoRanksBf16MatchOneRank) {
  Outcome one = Launch("one", {.world = 1, .batch = 4, .device = "cuda", .dtype = "bf16"});
  ASSERT_EQ(one.exit_codes[0], 0) << one.rank0_log;
  for (const char* sharding : {"full_shard", "shard_grad_op", "no_shard"}) {
    SCOPED_TRACE(sharding);
    ExpectSameTraining(one,
                       Launch(std::string("two_") + sharding,
                              {.world = 2, .batch = 2, .sharding = sharding, .device = "cuda",
                               .dtype = "bf16"}),
                       2e-2);
  }
  ExpectSameTraining(one,
                     Launch("two_offload", {.world = 2, .batch = 2, .device = "cuda",
                                            .dtype = "bf16", .cpu_offload = true}),
                     2e-2);
}

}  // namespace
}  // namespace rigtune::testing
