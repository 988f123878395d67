// Early stopping and keep_best on one process: with a learning rate too small
// to move the fp32 adapter, every evaluation ties the first one, so
// train.early_stopping_patience = 2 ends a 10-step job after step 3, as a
// success with a log line saying why, and keep_best has saved (and kept) the
// step-1 checkpoint with its validation loss.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "tests/worker/dist/tiny_hf_folder.h"
#include "worker/train/checkpoint.h"
#include "worker/train/run_job.h"
#include "tests/worker/train/temp_root_test.h"

namespace rigtune::train {
namespace {

using ::testing::HasSubstr;

using EarlyStoppingTest = rigtune::testing::TempRootTest;

TEST_F(EarlyStoppingTest, StopsAfterPatienceEvaluationsWithoutANewBest) {
  JobConfig c;
  c.job_id = "early-stop";
  c.model = rigtune::testing::WriteTinyHfModel(root_ + "/model");
  c.dataset.path = rigtune::testing::WriteTextDataset(root_ + "/train.jsonl", 40);
  c.dataset.format = "text";
  c.dataset.validation_fraction = 0.2;
  c.output_dir = root_ + "/out";
  c.lora.r = 4;
  c.optim.lr = 1e-30;
  c.optim.schedule = "constant";
  c.train.context_length = 16;
  c.train.batch_size = 2;
  c.train.max_steps = 10;
  c.train.dtype = "fp32";
  c.train.device = "cpu";
  c.train.eval_every_steps = 1;
  c.train.early_stopping_patience = 2;
  c.checkpoint.keep_last = 1;
  c.checkpoint.keep_best = true;

  std::vector<ValidationMetrics> validations;
  std::vector<std::string> logs;
  RunCallbacks cb;
  cb.on_validation = [&](const ValidationMetrics& v) { validations.push_back(v); };
  cb.on_log = [&](const std::string& line) { logs.push_back(line); };
  auto result = RunJob(c, cb);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->steps, 3);
  EXPECT_FALSE(result->stopped_early);  // a finished job, not a pause
  ASSERT_EQ(validations.size(), 3u);
  EXPECT_EQ(validations[2].loss, validations[0].loss);
  EXPECT_THAT(logs.back(), HasSubstr("adapter written"));
  bool said_why = false;
  for (const std::string& line : logs) {
    said_why = said_why || line.find("early stopping at step 3") != std::string::npos;
  }
  EXPECT_TRUE(said_why);

  // The best (step 1) and the latest (step 3) checkpoints remain.
  std::vector<int64_t> steps;
  for (const CheckpointEntry& e : ListCheckpoints(c.output_dir)) steps.push_back(e.step);
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 3}));
  auto best = ReadCheckpoint(CheckpointFolder(c.output_dir, 1));
  ASSERT_TRUE(best.ok()) << best.status();
  EXPECT_DOUBLE_EQ(best->state.validation_loss, validations[0].loss);
  EXPECT_EQ(best->state.best_validation_step, 1);
}

}  // namespace
}  // namespace rigtune::train
