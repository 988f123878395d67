// The validation loss on GPUs (bf16): two NCCL ranks report what one rank
// reports, with packed validation rows going through variable-length
// attention on CUDA. bf16 rounds differently per batch shape, so the
// tolerance is bf16's (see fsdp_gpu_test.cc); a sharding or reduction error
// (rows counted twice or not at all) shows in the token count and is off by
// order 1 in the loss.
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <string>

#include "tests/worker/dist/fsdp_launcher.h"
#include "tests/worker/dist/tiny_hf_folder.h"

namespace rigtune::testing {
namespace {

class ValidationNcclTest : public FsdpLauncher {
 protected:
  void SetUp() override {
    if (!at::hasCUDA() || at::getNumGPUs() < 2) GTEST_SKIP() << "needs two CUDA devices";
    FsdpLauncher::SetUp();
  }
};

TEST_F(ValidationNcclTest, TwoRanksBf16ReportTheLossOfOneRank) {
  const std::string model = WriteTinyHfModel(root_ + "/model");
  const std::string data = WriteTextDataset(root_ + "/train.jsonl", 60);
  LaunchOptions o{.model = model, .world = 1, .batch = 4, .device = "cuda", .dtype = "bf16",
                  .dataset = data, .validation_fraction = 0.25, .eval_every = 2};
  Outcome one = Launch("one", o);
  ASSERT_EQ(one.exit_codes[0], 0) << one.rank0_log;
  o.world = 2;
  o.batch = 2;
  Outcome two = Launch("two", o);
  for (int c : two.exit_codes) ASSERT_EQ(c, 0) << two.rank0_log;
  ASSERT_EQ(one.validations.size(), 2u) << one.rank0_log;
  ASSERT_EQ(two.validations.size(), 2u) << two.rank0_log;
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(two.validations[i]["tokens"], one.validations[i]["tokens"]);
    const double loss = one.validations[i]["loss"].get<double>();
    EXPECT_NEAR(two.validations[i]["loss"].get<double>(), loss, 1e-2 * loss) << i;
  }
}

}  // namespace
}  // namespace rigtune::testing
