// The checkpoint folder format: round trip, damage detection (DATA_LOSS
// naming the file, never loaded), interrupted writes and retention.
#include "worker/train/checkpoint.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <thread>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "worker/train/evaluator.h"
#include "tests/worker/train/temp_root_test.h"

namespace rigtune::train {
namespace {

using ::testing::HasSubstr;

constexpr char kKeyA[] = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
constexpr char kKeyB[] = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";

TrainingCheckpoint Sample(int64_t step, double loss) {
  at::manual_seed(step);
  TrainingCheckpoint c;
  c.state.step = step;
  c.state.total_steps = 10;
  c.state.loss = loss;
  c.state.world_size = 2;
  c.state.data_positions = {R"({"epoch":0,"index":3})", R"({"epoch":0,"index":3})"};
  c.state.seed = 7;
  c.state.job_id = "job-1";
  c.adapter[kKeyA] = at::randn({4, 16});
  c.adapter[kKeyB] = at::randn({16, 4});
  for (const char* key : {kKeyA, kKeyB}) {
    c.optimizer[std::string(key) + ".exp_avg"] = at::randn(c.adapter[key].sizes());
    c.optimizer[std::string(key) + ".exp_avg_sq"] = at::rand(c.adapter[key].sizes());
  }
  return c;
}

LoraConfig Lora() {
  LoraConfig l;
  l.r = 4;
  l.alpha = 8;
  return l;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

class CheckpointTest : public rigtune::testing::TempRootTest {
 protected:
  std::string Write(int64_t step, double loss = 1.0) {
    auto dir = WriteCheckpoint(root_, Sample(step, loss), Lora(), "random:tiny");
    EXPECT_TRUE(dir.ok()) << dir.status();
    return dir.ok() ? *dir : "";
  }
  std::vector<int64_t> Steps() const {
    std::vector<int64_t> steps;
    for (const CheckpointEntry& e : ListCheckpoints(root_)) steps.push_back(e.step);
    return steps;
  }
};

TEST_F(CheckpointTest, RoundTripsEveryPart) {
  const TrainingCheckpoint c = Sample(3, 2.5);
  auto dir = WriteCheckpoint(root_, c, Lora(), "random:tiny");
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(*dir, root_ + "/checkpoints/step-3");
  for (const char* f : {"adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors",
                        "trainer_state.json", "manifest.json"}) {
    EXPECT_TRUE(Exists(*dir + "/" + f)) << f;
  }
  auto back = ReadCheckpoint(*dir);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->state.step, 3);
  EXPECT_EQ(back->state.total_steps, 10);
  EXPECT_DOUBLE_EQ(back->state.loss, 2.5);
  EXPECT_EQ(back->state.world_size, 2);
  EXPECT_EQ(back->state.data_positions, c.state.data_positions);
  EXPECT_EQ(back->state.seed, 7u);
  EXPECT_EQ(back->state.job_id, "job-1");
  ASSERT_EQ(back->adapter.size(), 2u);
  ASSERT_EQ(back->optimizer.size(), 4u);
  for (const auto& [k, t] : c.adapter) EXPECT_TRUE(at::equal(back->adapter[k], t)) << k;
  for (const auto& [k, t] : c.optimizer) EXPECT_TRUE(at::equal(back->optimizer[k], t)) << k;
}

void FlipByte(const std::string& path, long offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  char b = 0;
  f.read(&b, 1);
  b = static_cast<char>(b ^ 0x40);
  f.seekp(offset);
  f.write(&b, 1);
}

TEST_F(CheckpointTest, CorruptedFileIsDataLossNamingIt) {
  const std::string dir = Write(1);
  struct stat st;
  ASSERT_EQ(::stat((dir + "/optimizer.safetensors").c_str(), &st), 0);
  FlipByte(dir + "/optimizer.safetensors", st.st_size - 5);  // inside the tensor data
  auto back = ReadCheckpoint(dir);
  ASSERT_EQ(back.status().code(), absl::StatusCode::kDataLoss) << back.status();
  EXPECT_THAT(back.status().message(), HasSubstr("optimizer.safetensors"));
  EXPECT_THAT(back.status().message(), HasSubstr("CRC"));
}

TEST_F(CheckpointTest, TruncatedFileIsDataLossNamingIt) {
  const std::string dir = Write(1);
  const std::string file = dir + "/adapter_model.safetensors";
  struct stat st;
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  ASSERT_EQ(::truncate(file.c_str(), st.st_size / 2), 0);
  auto back = ReadCheckpoint(dir);
  ASSERT_EQ(back.status().code(), absl::StatusCode::kDataLoss) << back.status();
  EXPECT_THAT(back.status().message(), HasSubstr("adapter_model.safetensors"));
  EXPECT_THAT(back.status().message(), HasSubstr("truncated"));
}

TEST_F(CheckpointTest, MissingFileIsDataLossNamingIt) {
  const std::string dir = Write(1);
  ASSERT_EQ(::unlink((dir + "/trainer_state.json").c_str()), 0);
  auto s = VerifyCheckpoint(dir);
  ASSERT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(s.message(), HasSubstr("trainer_state.json"));
}

TEST_F(CheckpointTest, FolderWithoutManifestIsDataLoss) {
  const std::string dir = Write(1);
  ASSERT_EQ(::unlink((dir + "/manifest.json").c_str()), 0);
  auto s = VerifyCheckpoint(dir);
  ASSERT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(s.message(), HasSubstr("manifest.json"));
  EXPECT_TRUE(ListCheckpoints(root_).empty());
}

TEST_F(CheckpointTest, MissingFolderIsNotFound) {
  EXPECT_EQ(ReadCheckpoint(root_ + "/checkpoints/step-9").status().code(),
            absl::StatusCode::kNotFound);
}

// A crash between two files of step 2 leaves step-2.tmp/ with some of them.
TEST_F(CheckpointTest, InterruptedWriteKeepsPreviousCheckpoint) {
  const std::string first = Write(1);
  const std::string tmp = root_ + "/checkpoints/step-2.tmp";
  ASSERT_EQ(::mkdir(tmp.c_str(), 0755), 0);
  std::ofstream(tmp + "/adapter_model.safetensors") << "half of a file";
  std::ofstream(tmp + "/adapter_config.json") << "{}";

  EXPECT_EQ(Steps(), std::vector<int64_t>{1});
  auto back = ReadCheckpoint(first);
  EXPECT_TRUE(back.ok()) << back.status();

  // A leftover of an older crash too: the next save clears both.
  ASSERT_EQ(::mkdir((root_ + "/checkpoints/step-7.tmp").c_str(), 0755), 0);
  const std::string second = Write(2);
  EXPECT_FALSE(Exists(tmp + "/adapter_config.json"));
  EXPECT_FALSE(Exists(root_ + "/checkpoints/step-7.tmp"));
  EXPECT_EQ(Steps(), (std::vector<int64_t>{1, 2}));
  EXPECT_TRUE(ReadCheckpoint(second).ok());
  EXPECT_TRUE(ReadCheckpoint(first).ok());
}

TEST_F(CheckpointTest, ProcessKilledBetweenFilesLeavesPreviousCheckpointLoadable) {
  const std::string first = Write(1);
  // Step 2 carries a large optimizer file, so the writer is still busy with
  // it when the parent sees the adapter land in step-2.tmp and kills it.
  TrainingCheckpoint big = Sample(2, 0.5);
  big.optimizer["padding.exp_avg"] = at::randn({64, 1024, 1024});  // 256 MiB
  const std::string tmp_adapter = root_ + "/checkpoints/step-2.tmp/adapter_model.safetensors";
  const pid_t child = fork();
  if (child == 0) {
    auto dir = WriteCheckpoint(root_, big, Lora(), "random:tiny");
    _exit(dir.ok() ? 0 : 1);
  }
  ASSERT_GT(child, 0);
  bool seen = false;
  for (int i = 0; i < 6000 && !seen; ++i) {
    seen = Exists(tmp_adapter);
    if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(seen) << "the writer never produced its first file";
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the write finished before the kill";

  EXPECT_FALSE(Exists(root_ + "/checkpoints/step-2"));
  EXPECT_EQ(Steps(), std::vector<int64_t>{1});
  EXPECT_TRUE(VerifyCheckpoint(first).ok());
  auto back = ReadCheckpoint(first);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->state.step, 1);
  // The next save clears the debris and lands normally.
  Write(3);
  EXPECT_FALSE(Exists(root_ + "/checkpoints/step-2.tmp"));
  EXPECT_EQ(Steps(), (std::vector<int64_t>{1, 3}));
}

TEST_F(CheckpointTest, RewritingAStepReplacesIt) {
  Write(4, 1.0);
  const std::string dir = Write(4, 0.5);
  auto back = ReadCheckpoint(dir);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_DOUBLE_EQ(back->state.loss, 0.5);
}

TEST_F(CheckpointTest, RetentionKeepsExactlyLast) {
  CheckpointConfig keep;
  keep.keep_last = 2;
  for (int64_t step = 1; step <= 5; ++step) {
    Write(step, 1.0 / step);
    ASSERT_TRUE(ApplyRetention(root_, keep).ok());
  }
  EXPECT_EQ(Steps(), (std::vector<int64_t>{4, 5}));
}

TEST_F(CheckpointTest, RetentionKeepsLastAndBest) {
  CheckpointConfig keep;
  keep.keep_last = 2;
  keep.keep_best = true;
  const double losses[] = {3.0, 0.5, 2.0, 1.5, 1.0, 0.9};
  for (int64_t step = 1; step <= 6; ++step) {
    Write(step, losses[step - 1]);
    ASSERT_TRUE(ApplyRetention(root_, keep).ok());
  }
  EXPECT_EQ(Steps(), (std::vector<int64_t>{2, 5, 6}));
}

TEST_F(CheckpointTest, RetentionWithBestAmongLastKeepsOnlyLast) {
  CheckpointConfig keep;
  keep.keep_last = 2;
  keep.keep_best = true;
  for (int64_t step = 1; step <= 4; ++step) {
    Write(step, 10.0 - step);  // the newest is the best
    ASSERT_TRUE(ApplyRetention(root_, keep).ok());
  }
  EXPECT_EQ(Steps(), (std::vector<int64_t>{3, 4}));
}

TEST_F(CheckpointTest, ValidationStateRoundTrips) {
  TrainingCheckpoint c = Sample(3, 2.5);
  c.state.validation_loss = 1.25;
  c.state.best_validation_loss = 1.25;
  c.state.best_validation_step = 3;
  c.state.evals_since_best = 0;
  auto dir = WriteCheckpoint(root_, c, Lora(), "random:tiny");
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto back = ReadCheckpoint(*dir);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_DOUBLE_EQ(back->state.validation_loss, 1.25);
  EXPECT_DOUBLE_EQ(back->state.best_validation_loss, 1.25);
  EXPECT_EQ(back->state.best_validation_step, 3);
  // A checkpoint without validation keeps the fields unset.
  auto plain = ReadCheckpoint(Write(4));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE(std::isnan(plain->state.validation_loss));
  EXPECT_TRUE(std::isinf(plain->state.best_validation_loss));
}

TEST_F(CheckpointTest, KeepBestRanksByValidationLossWhenThereIsOne) {
  CheckpointConfig keep;
  keep.keep_last = 1;
  keep.keep_best = true;
  // Step 2 has the lowest training loss, step 3 the lowest validation loss;
  // steps 1 and 5 were saved between evaluations (no validation loss).
  const double train[] = {0.9, 0.1, 0.8, 0.7, 0.6};
  const double validation[] = {NAN, 2.0, 1.0, 1.5, NAN};
  for (int64_t step = 1; step <= 5; ++step) {
    TrainingCheckpoint c = Sample(step, train[step - 1]);
    c.state.validation_loss = validation[step - 1];
    ASSERT_TRUE(WriteCheckpoint(root_, c, Lora(), "random:tiny").ok());
    ASSERT_TRUE(ApplyRetention(root_, keep).ok());
  }
  EXPECT_EQ(Steps(), (std::vector<int64_t>{3, 5}));
}

TEST(ValidationTrackerTest, CountsEvaluationsWithoutANewBest) {
  ValidationTracker t;
  EXPECT_TRUE(t.Record({2, 3.0, 0, 10}));
  EXPECT_TRUE(t.Record({4, 2.5, 0, 10}));
  EXPECT_FALSE(t.Record({6, 2.5, 0, 10}));  // a tie is no improvement
  EXPECT_FALSE(t.Exhausted(2));
  EXPECT_FALSE(t.Record({8, 2.7, 0, 10}));
  EXPECT_TRUE(t.Exhausted(2));
  EXPECT_FALSE(t.Exhausted(0));  // 0: no early stopping
  EXPECT_EQ(t.best_step, 4);
  EXPECT_DOUBLE_EQ(t.best, 2.5);
}

}  // namespace
}  // namespace rigtune::train
