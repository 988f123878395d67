// Exact resume on one process: a run stopped at step 3 (should_stop, as a
// pause does) and resumed from its checkpoint trains exactly what the
// uninterrupted run trains; the checkpoint's adapter loads as a PEFT adapter;
// a damaged checkpoint is refused.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "worker/model/model_builder.h"
#include "worker/model/safetensors.h"
#include "worker/train/adapter_export.h"
#include "worker/train/checkpoint.h"
#include "worker/train/run_job.h"
#include "tests/worker/train/temp_root_test.h"

namespace rigtune::train {
namespace {

using ::testing::HasSubstr;

constexpr char kModel[] = "random:layers=2,hidden=64,intermediate=128,heads=4,kv_heads=2,vocab=96";

JobConfig Job(const std::string& output_dir) {
  JobConfig c;
  c.job_id = "resume-test";
  c.model = kModel;
  c.output_dir = output_dir;
  c.lora.r = 4;
  c.lora.alpha = 8;
  c.lora.dropout = 0.1;  // masks must follow the step across a resume
  c.optim.lr = 0.01;
  c.optim.schedule = "cosine";  // and so must the learning rate
  c.optim.warmup_steps = 2;
  c.optim.weight_decay = 0.01;
  c.train.context_length = 16;
  c.train.batch_size = 2;
  c.train.grad_accum = 2;
  c.train.max_steps = 6;
  c.train.dtype = "fp32";
  c.train.device = "cpu";
  c.train.seed = 3;
  c.checkpoint.every_steps = 2;
  c.checkpoint.keep_last = 10;
  return c;
}

struct Trajectory {
  std::vector<double> losses;
  std::vector<CheckpointInfo> checkpoints;
  absl::StatusOr<RunResult> result = absl::UnknownError("not run");
};

Trajectory Train(const JobConfig& job, size_t stop_after = 0) {
  Trajectory t;
  RunCallbacks cb;
  cb.on_step = [&](const StepMetrics& m) { t.losses.push_back(m.loss); };
  cb.on_checkpoint = [&](const CheckpointInfo& info) { t.checkpoints.push_back(info); };
  cb.should_stop = [&] { return stop_after > 0 && t.losses.size() >= stop_after; };
  t.result = RunJob(job, cb);
  return t;
}

std::map<std::string, at::Tensor> ReadAdapter(const std::string& dir) {
  std::map<std::string, at::Tensor> out;
  auto f = model::SafetensorsFile::Open(dir + "/adapter_model.safetensors");
  EXPECT_TRUE(f.ok()) << f.status();
  if (!f.ok()) return out;
  for (const std::string& name : f->Names()) out[name] = *f->Read(name);
  return out;
}

using ResumeTest = rigtune::testing::TempRootTest;

TEST_F(ResumeTest, StoppedAndResumedRunMatchesUninterruptedRun) {
  Trajectory full = Train(Job(root_ + "/full"));
  ASSERT_TRUE(full.result.ok()) << full.result.status();
  ASSERT_EQ(full.losses.size(), 6u);

  const JobConfig paused_job = Job(root_ + "/paused");
  Trajectory first = Train(paused_job, 3);
  ASSERT_TRUE(first.result.ok()) << first.result.status();
  EXPECT_TRUE(first.result->stopped_early);
  // A stopped run leaves the final adapter/ folder alone: only the end writes it.
  EXPECT_TRUE(first.result->adapter_path.empty());
  EXPECT_FALSE(std::filesystem::exists(paused_job.output_dir + "/adapter"));
  ASSERT_EQ(first.losses.size(), 3u);
  // Every 2 steps, and where the stop happened.
  ASSERT_EQ(first.checkpoints.size(), 2u);
  EXPECT_EQ(first.checkpoints[0].step, 2);
  EXPECT_EQ(first.checkpoints[1].step, 3);
  EXPECT_EQ(first.checkpoints[1].path, CheckpointFolder(paused_job.output_dir, 3));
  EXPECT_DOUBLE_EQ(first.checkpoints[1].loss, first.losses[2]);

  JobConfig resumed_job = paused_job;  // rigtuned relaunches with the same folder
  resumed_job.resume_from = first.checkpoints[1].path;
  Trajectory rest = Train(resumed_job);
  ASSERT_TRUE(rest.result.ok()) << rest.result.status();
  EXPECT_FALSE(rest.result->stopped_early);
  EXPECT_EQ(rest.result->steps, 6);
  ASSERT_EQ(rest.losses.size(), 3u);
  ASSERT_EQ(rest.checkpoints.size(), 2u);
  EXPECT_EQ(rest.checkpoints[0].step, 4);
  EXPECT_EQ(rest.checkpoints[1].step, 6);

  std::vector<double> joined = first.losses;
  joined.insert(joined.end(), rest.losses.begin(), rest.losses.end());
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_NEAR(joined[i], full.losses[i], 1e-6 * std::abs(full.losses[i])) << "step " << i + 1;
  }
  auto a = ReadAdapter(full.result->adapter_path), b = ReadAdapter(rest.result->adapter_path);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  for (const auto& [k, t] : a) {
    ASSERT_TRUE(b.count(k)) << k;
    EXPECT_LT(((b[k] - t).norm() / t.norm()).item<double>(), 1e-6) << k;
  }
}

TEST_F(ResumeTest, CheckpointAdapterLoadsAsPeftAdapter) {
  const JobConfig job = Job(root_ + "/run");
  Trajectory t = Train(job, 2);
  ASSERT_TRUE(t.result.ok()) << t.result.status();
  ASSERT_FALSE(t.checkpoints.empty());
  model::BuildOptions build;
  build.dtype = at::kFloat;
  build.lora = model::LoraOptions{job.lora.r, job.lora.alpha, job.lora.dropout, job.lora.use_rslora,
                                  job.lora.target_modules};
  auto config = model::RandomModelConfig(kModel);
  ASSERT_TRUE(config.ok()) << config.status();
  auto m = model::BuildRandomModel(*config, build);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(LoadAdapter(t.checkpoints.back().path, &*m).ok());
  auto saved = ReadCheckpoint(t.checkpoints.back().path);
  ASSERT_TRUE(saved.ok()) << saved.status();
  for (const auto& [k, w] : AdapterTensors(*m)) {
    EXPECT_TRUE(at::equal(w, saved->adapter[k])) << k;
  }
}

TEST_F(ResumeTest, DamagedCheckpointIsRefusedNamingTheFile) {
  JobConfig job = Job(root_ + "/run");
  Trajectory t = Train(job, 2);
  ASSERT_TRUE(t.result.ok()) << t.result.status();
  ASSERT_FALSE(t.checkpoints.empty());
  const std::string dir = t.checkpoints.back().path;
  struct stat st;
  const std::string file = dir + "/optimizer.safetensors";
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  ASSERT_EQ(::truncate(file.c_str(), st.st_size - 1), 0);
  job.resume_from = dir;
  Trajectory resumed = Train(job);
  ASSERT_EQ(resumed.result.status().code(), absl::StatusCode::kDataLoss) << resumed.result.status();
  EXPECT_THAT(resumed.result.status().message(), HasSubstr("optimizer.safetensors"));
  EXPECT_TRUE(resumed.losses.empty());
}

}  // namespace
}  // namespace rigtune::train
