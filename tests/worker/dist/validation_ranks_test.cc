// The validation loss under FSDP on the CPU (Gloo): every rank evaluates its
// share of the held-out rows and the sums are added over the ranks, so 1, 2
// and 4 ranks (and CPU offload) report the same loss over the same tokens.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "tests/worker/dist/fsdp_launcher.h"
#include "tests/worker/dist/tiny_hf_folder.h"

namespace rigtune::testing {
namespace {

using ValidationRanksTest = FsdpLauncher;

void ExpectSameValidation(const Outcome& a, const Outcome& b) {
  for (int c : b.exit_codes) ASSERT_EQ(c, 0) << b.rank0_log;
  ASSERT_EQ(a.validations.size(), b.validations.size()) << b.rank0_log;
  for (size_t i = 0; i < a.validations.size(); ++i) {
    const nlohmann::json &va = a.validations[i], &vb = b.validations[i];
    EXPECT_EQ(vb["step"], va["step"]);
    EXPECT_EQ(vb["tokens"], va["tokens"]);
    const double loss = va["loss"].get<double>();
    EXPECT_NEAR(vb["loss"].get<double>(), loss, 1e-5 * loss) << "evaluation " << i;
  }
}

TEST_F(ValidationRanksTest, OneTwoAndFourRanksReportTheSameLoss) {
  const std::string model = WriteTinyHfModel(root_ + "/model");
  const std::string data = WriteTextDataset(root_ + "/train.jsonl", 60);
  // eval_every 2 of 4 steps: evaluated at steps 2 and 4 (the end).
  Outcome one = Launch("one", {.model = model, .world = 1, .batch = 4, .dataset = data,
                               .validation_fraction = 0.25, .eval_every = 2});
  ASSERT_EQ(one.exit_codes[0], 0) << one.rank0_log;
  ASSERT_EQ(one.validations.size(), 2u) << one.rank0_log;
  EXPECT_EQ(one.validations[0]["step"], 2);
  EXPECT_EQ(one.validations[1]["step"], 4);
  EXPECT_GT(one.validations[0]["tokens"].get<int64_t>(), 0);
  const double loss = one.validations[1]["loss"].get<double>();
  EXPECT_NEAR(one.validations[1]["perplexity"].get<double>(), std::exp(loss), 1e-9 * loss);
  {
    SCOPED_TRACE("two ranks");
    ExpectSameValidation(one, Launch("two", {.model = model, .world = 2, .batch = 2,
                                             .dataset = data, .validation_fraction = 0.25,
                                             .eval_every = 2}));
  }
  {
    SCOPED_TRACE("four ranks");
    ExpectSameValidation(one, Launch("four", {.model = model, .world = 4, .batch = 1,
                                              .dataset = data, .validation_fraction = 0.25,
                                              .eval_every = 2}));
  }
  {
    SCOPED_TRACE("two ranks, shards in host memory");
    ExpectSameValidation(one, Launch("offload", {.model = model, .world = 2, .batch = 2,
                                                 .cpu_offload = true, .dataset = data,
                                                 .validation_fraction = 0.25, .eval_every = 2}));
  }
}

TEST_F(ValidationRanksTest, EndOfTrainingIsAlwaysEvaluated) {
  const std::string model = WriteTinyHfModel(root_ + "/model");
  const std::string data = WriteTextDataset(root_ + "/train.jsonl", 40);
  Outcome o = Launch("end", {.model = model, .world = 2, .batch = 2, .steps = 3, .dataset = data,
                             .validation_fraction = 0.2});
  ASSERT_EQ(o.exit_codes[0], 0) << o.rank0_log;
  ASSERT_EQ(o.validations.size(), 1u) << o.rank0_log;
  EXPECT_EQ(o.validations[0]["step"], 3);
}

}  // namespace
}  // namespace rigtune::testing
