// train.method full on one process: every tensor trains; float32 masters
// survive below the compute dtype's resolution; a stopped and resumed run
// trains exactly what the uninterrupted run trains (masters and AdamW
// moments in the checkpoint); a quantized base is refused.
// (Numerics against torch.optim.AdamW over transformers: tests/golden/
// test_full_finetune.py.)
#include "worker/train/full_finetune.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/worker/train/temp_root_test.h"
#include "worker/model/block_expansion.h"
#include "worker/model/model_builder.h"
#include "worker/train/checkpoint.h"
#include "worker/train/run_job.h"

namespace rigtune::train {
namespace {

using ::testing::HasSubstr;

constexpr char kModel[] = "random:layers=2,hidden=64,intermediate=128,heads=4,kv_heads=2,vocab=96";

absl::StatusOr<model::LlamaModel> Build(at::ScalarType dtype, quant::BaseFormat base) {
  auto config = model::RandomModelConfig(kModel);
  if (!config.ok()) return config.status();
  model::BuildOptions build;
  build.dtype = dtype;
  build.base = base;
  build.lora.enabled = false;
  return model::BuildRandomModel(*config, build);
}

std::vector<TrainBatch> Batches(int64_t vocab) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  TrainBatch b;
  b.input_ids = at::randint(vocab, {2, 12}, gen, at::kLong);
  b.labels = b.input_ids.clone();
  return {b};
}

TEST(FullModelLayersTest, EveryTensorTrains) {
  auto m = Build(at::kFloat, quant::BaseFormat::kBf16);
  ASSERT_TRUE(m.ok()) << m.status();
  auto full = FullModelLayers::Create(&*m);
  ASSERT_TRUE(full.ok()) << full.status();
  // embedding + 2 layers x (2 norms + 7 linears) + final norm (+ an untied LM head).
  EXPECT_EQ((*full)->tensors().size(), 1u + 2 * 9 + 1 + (m->config.tie_word_embeddings ? 0 : 1));
  Trainer trainer(&*m, TrainerOptions{}, full->get());
  trainer.ForwardBackward(Batches(m->config.vocab_size));
  for (const NamedTensor& t : (*full)->tensors()) {
    ASSERT_TRUE(t.tensor.grad().defined()) << t.name;
    EXPECT_GT(t.tensor.grad().abs().sum().item<double>(), 0) << t.name;
  }
}

TEST(FullModelLayersTest, Bf16WeightsAreRoundedMastersAndMastersKeepSmallUpdates) {
  auto m = Build(at::kBFloat16, quant::BaseFormat::kBf16);
  ASSERT_TRUE(m.ok()) << m.status();
  auto full = FullModelLayers::Create(&*m);
  ASSERT_TRUE(full.ok()) << full.status();
  const auto before = (*full)->MasterState();
  TrainerOptions options;
  Trainer trainer(&*m, options, full->get());
  // An update far below bf16's resolution for weights of size ~1 (the norms).
  trainer.Step(Batches(m->config.vocab_size), 1e-5);
  const auto after = (*full)->MasterState();
  int64_t moved_below_bf16 = 0;
  for (const NamedTensor& t : (*full)->tensors()) {
    const at::Tensor& master = after.at(t.name);
    EXPECT_EQ(master.scalar_type(), at::kFloat) << t.name;
    EXPECT_TRUE(at::equal(t.tensor.detach().cpu(), master.to(at::kBFloat16))) << t.name;
    if (!at::equal(master, before.at(t.name)) &&
        at::equal(master.to(at::kBFloat16), before.at(t.name).to(at::kBFloat16))) {
      ++moved_below_bf16;
    }
  }
  // The norms' weights (1.0) moved by ~1e-5 in float32 and not at all in bf16.
  EXPECT_GT(moved_below_bf16, 0);
}

TEST(FullModelLayersTest, QuantizedBaseIsRefused) {
  auto m = Build(at::kFloat, quant::BaseFormat::kNf4);
  ASSERT_TRUE(m.ok()) << m.status();
  auto full = FullModelLayers::Create(&*m);
  ASSERT_EQ(full.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(full.status().message(), HasSubstr("needs train.base bf16"));
}

JobConfig FullJob(const std::string& output_dir, const std::string& dtype) {
  JobConfig c;
  c.job_id = "full-test";
  c.model = kModel;
  c.output_dir = output_dir;
  c.train.method = "full";
  c.train.base = "bf16";
  c.optim.lr = 3e-3;
  c.optim.schedule = "cosine";
  c.optim.warmup_steps = 2;
  c.optim.weight_decay = 0.01;
  c.train.context_length = 16;
  c.train.batch_size = 2;
  c.train.grad_accum = 2;
  c.train.max_steps = 6;
  c.train.dtype = dtype;
  c.train.device = "cpu";
  c.train.seed = 3;
  c.checkpoint.every_steps = 2;
  c.checkpoint.keep_last = 10;
  return c;
}

struct JobRun {
  std::vector<double> losses;
  std::vector<CheckpointInfo> checkpoints;
  absl::StatusOr<RunResult> result = absl::UnknownError("not run");
};

JobRun Train(const JobConfig& job, size_t stop_after = 0) {
  JobRun t;
  RunCallbacks cb;
  cb.on_step = [&](const StepMetrics& m) { t.losses.push_back(m.loss); };
  cb.on_checkpoint = [&](const CheckpointInfo& info) { t.checkpoints.push_back(info); };
  cb.should_stop = [&] { return stop_after > 0 && t.losses.size() >= stop_after; };
  t.result = RunJob(job, cb);
  return t;
}

class FullResumeTest : public rigtune::testing::TempRootTest,
                       public ::testing::WithParamInterface<std::string> {};

TEST_P(FullResumeTest, StoppedAndResumedRunMatchesUninterruptedRun) {
  const std::string dtype = GetParam();
  JobRun whole = Train(FullJob(root_ + "/whole", dtype));
  ASSERT_TRUE(whole.result.ok()) << whole.result.status();
  ASSERT_EQ(whole.losses.size(), 6u);

  JobConfig paused = FullJob(root_ + "/paused", dtype);
  JobRun first = Train(paused, 3);
  ASSERT_TRUE(first.result.ok()) << first.result.status();
  ASSERT_EQ(first.checkpoints.size(), 2u);
  paused.resume_from = first.checkpoints.back().path;
  JobRun rest = Train(paused);
  ASSERT_TRUE(rest.result.ok()) << rest.result.status();
  ASSERT_EQ(rest.losses.size(), 3u);

  std::vector<double> joined = first.losses;
  joined.insert(joined.end(), rest.losses.begin(), rest.losses.end());
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(joined[i], whole.losses[i]) << "step " << i + 1;
  auto a = ReadCheckpoint(whole.checkpoints.back().path);
  auto b = ReadCheckpoint(rest.checkpoints.back().path);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(a->adapter.size(), b->adapter.size());
  EXPECT_TRUE(a->adapter.count("model.embed_tokens.weight"));
  EXPECT_TRUE(a->optimizer.count("model.layers.1.mlp.down_proj.weight.exp_avg_sq"));
  for (const auto& [k, t] : a->adapter) EXPECT_TRUE(at::equal(t, b->adapter.at(k))) << k;
  for (const auto& [k, t] : a->optimizer) EXPECT_TRUE(at::equal(t, b->optimizer.at(k))) << k;
}

INSTANTIATE_TEST_SUITE_P(Dtypes, FullResumeTest, ::testing::Values("fp32", "bf16"));

TEST(BlockExpansionTest, PlanInsertsACopyAfterEveryKthLayer) {
  auto plan = model::PlanBlockExpansion(4, 2);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->source, (std::vector<int64_t>{0, 1, 1, 2, 3, 3}));
  EXPECT_EQ(plan->InsertedLayers(), (std::vector<int64_t>{2, 5}));
  auto bad = model::PlanBlockExpansion(4, 5);
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("train.expand_every"));
}

using LlamaProTest = rigtune::testing::TempRootTest;

// The copies start as identities over an NF4 base, only they train, and a
// stopped run resumes exactly.
TEST_F(LlamaProTest, OnlyCopiesTrainAndAStoppedRunResumesExactly) {
  JobConfig job = FullJob(root_ + "/whole", "fp32");
  job.train.method = "llama_pro";
  job.train.base = "nf4";
  job.train.expand_every = 1;
  JobRun whole = Train(job);
  ASSERT_TRUE(whole.result.ok()) << whole.result.status();
  ASSERT_EQ(whole.losses.size(), 6u);
  auto saved = ReadCheckpoint(whole.checkpoints.back().path);
  ASSERT_TRUE(saved.ok()) << saved.status();
  for (const auto& [name, t] : saved->adapter) {
    // Layers 1 and 3 of the four are the copies of 0 and 1.
    EXPECT_TRUE(name.rfind("model.layers.1.", 0) == 0 || name.rfind("model.layers.3.", 0) == 0)
        << name;
  }
  EXPECT_GT(saved->adapter.at("model.layers.3.mlp.down_proj.weight").abs().sum().item<double>(),
            0);

  JobConfig paused = job;
  paused.output_dir = root_ + "/paused";
  JobRun first = Train(paused, 3);
  ASSERT_TRUE(first.result.ok()) << first.result.status();
  paused.resume_from = first.checkpoints.back().path;
  JobRun rest = Train(paused);
  ASSERT_TRUE(rest.result.ok()) << rest.result.status();
  std::vector<double> joined = first.losses;
  joined.insert(joined.end(), rest.losses.begin(), rest.losses.end());
  ASSERT_EQ(joined.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(joined[i], whole.losses[i]) << "step " << i + 1;
}

}  // namespace
}  // namespace rigtune::train
