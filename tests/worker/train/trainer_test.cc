#include "worker/train/trainer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "worker/model/model_builder.h"

namespace rigtune::train {
namespace {

model::LlamaModel TinyModel(uint64_t seed = 5, double dropout = 0.0) {
  model::BuildOptions opts;
  opts.dtype = at::kFloat;
  opts.seed = seed;
  opts.lora.r = 4;
  opts.lora.alpha = 8;
  opts.lora.dropout = dropout;
  auto config = model::RandomModelConfig("random:layers=2,hidden=32,intermediate=64,heads=4,kv_heads=2,vocab=50");
  EXPECT_TRUE(config.ok());
  auto m = model::BuildRandomModel(*config, opts);
  EXPECT_TRUE(m.ok()) << m.status();
  // Non-zero B so that every LoRA gradient is informative.
  c10::NoGradGuard no_grad;
  at::manual_seed(seed);
  for (at::Tensor& p : m->LoraParameters()) p.normal_(0, 0.1);
  return *std::move(m);
}

TrainBatch Batch(int64_t rows, int64_t seq, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor ids = at::randint(50, {rows, seq}, at::kLong);
  at::Tensor labels = ids.clone();
  labels.narrow(1, 0, 3).fill_(-100);
  TrainBatch b;
  b.input_ids = ids;
  b.labels = labels;
  return b;
}

std::vector<at::Tensor> Grads(model::LlamaModel& m) {
  std::vector<at::Tensor> g;
  for (const at::Tensor& p : m.LoraParameters()) g.push_back(p.grad().clone());
  return g;
}

void ExpectClose(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, double tol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_LT(((a[i] - b[i]).norm() / b[i].norm()).item<double>(), tol) << "param " << i;
  }
}

TEST(TrainerTest, CheckpointingGivesTheSameLossAndGradients) {
  model::LlamaModel m1 = TinyModel(), m2 = TinyModel();
  TrainerOptions on, off;
  off.activation_checkpointing = false;
  Trainer t1(&m1, on), t2(&m2, off);
  TrainBatch b = Batch(2, 12, 1);
  StepStats s1 = t1.ForwardBackward({b}), s2 = t2.ForwardBackward({b});
  EXPECT_NEAR(s1.loss, s2.loss, 1e-6);
  ExpectClose(Grads(m1), Grads(m2), 1e-5);
}

TEST(TrainerTest, GradientAccumulationEqualsOneLargeBatch) {
  model::LlamaModel m1 = TinyModel(), m2 = TinyModel();
  Trainer t1(&m1, {}), t2(&m2, {});
  TrainBatch both = Batch(2, 10, 2);
  TrainBatch first, second;
  first.input_ids = both.input_ids.narrow(0, 0, 1);
  first.labels = both.labels.narrow(0, 0, 1);
  second.input_ids = both.input_ids.narrow(0, 1, 1);
  second.labels = both.labels.narrow(0, 1, 1);
  StepStats whole = t1.ForwardBackward({both});
  StepStats split = t2.ForwardBackward({first, second});
  EXPECT_NEAR(whole.loss, split.loss, 1e-6);
  EXPECT_EQ(whole.target_tokens, split.target_tokens);
  ExpectClose(Grads(m1), Grads(m2), 1e-5);
}

TEST(TrainerTest, LossMatchesLogitsCrossEntropy) {
  model::LlamaModel m = TinyModel();
  Trainer t(&m, {});
  TrainBatch b = Batch(2, 9, 3);
  at::Tensor logits = t.Logits(b);
  at::Tensor ref = at::cross_entropy_loss(logits.narrow(1, 0, 8).reshape({-1, 50}),
                                          b.labels.narrow(1, 1, 8).reshape({-1}), {},
                                          at::Reduction::Mean, -100);
  EXPECT_NEAR(t.ForwardBackward({b}).loss, ref.item<double>(), 1e-5);
}

TEST(TrainerTest, TrainingReducesLoss) {
  model::LlamaModel m = TinyModel();
  Trainer t(&m, {});
  TrainBatch b = Batch(2, 16, 4);
  const double first = t.Step({b}, 1e-2).loss;
  double last = first;
  for (int i = 0; i < 30; ++i) last = t.Step({b}, 1e-2).loss;
  EXPECT_LT(last, first - 0.25);  // ln(50) = 3.9 to below 3.7
  EXPECT_EQ(t.steps_done(), 31);
}

TEST(TrainerTest, SameSeedSameTrajectoryWithDropout) {
  model::LlamaModel m1 = TinyModel(5, 0.3), m2 = TinyModel(5, 0.3);
  Trainer t1(&m1, {}), t2(&m2, {});
  TrainBatch b = Batch(2, 8, 5);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(t1.Step({b}, 1e-2).loss, t2.Step({b}, 1e-2).loss);
  }
}

TEST(TrainerTest, DropoutRecomputeMatchesNoCheckpointing) {
  // The recompute in backward must draw the same dropout masks as the forward.
  model::LlamaModel m1 = TinyModel(5, 0.3), m2 = TinyModel(5, 0.3);
  TrainerOptions off;
  off.activation_checkpointing = false;
  Trainer t1(&m1, {}), t2(&m2, off);
  TrainBatch b = Batch(2, 8, 6);
  EXPECT_NEAR(t1.ForwardBackward({b}).loss, t2.ForwardBackward({b}).loss, 1e-6);
  ExpectClose(Grads(m1), Grads(m2), 1e-5);
}

TEST(TrainerTest, BlockDiagonalMaskIsolatesPackedExamples) {
  // Two examples packed in one row with restarting positions and a
  // block-diagonal mask give the losses of the two examples run alone.
  model::LlamaModel m1 = TinyModel(), m2 = TinyModel();
  Trainer t1(&m1, {}), t2(&m2, {});
  TrainBatch a = Batch(1, 6, 7), b = Batch(1, 5, 8);
  TrainBatch packed;
  packed.input_ids = at::cat({a.input_ids, b.input_ids}, 1);
  packed.labels = at::cat({a.labels, b.labels}, 1);
  packed.position_ids = at::cat({at::arange(6, at::kLong), at::arange(5, at::kLong)}).unsqueeze(0);
  at::Tensor seg = at::cat({at::zeros({6}, at::kLong), at::ones({5}, at::kLong)});
  at::Tensor causal = at::ones({11, 11}, at::kBool).tril();
  packed.attention_mask = (seg.unsqueeze(1) == seg.unsqueeze(0)).logical_and(causal).view({1, 1, 11, 11});
  const double packed_loss = t1.ForwardBackward({packed}).loss;
  const double separate = t2.ForwardBackward({a, b}).loss;
  EXPECT_NEAR(packed_loss, separate, 1e-5);
}

// A micro-batch of two examples per row, packed: restarting positions and a
// block-diagonal causal mask (rows of `seq` tokens, the first `split` of
// each row one example).
TrainBatch PackedBatch(int64_t rows, int64_t seq, int64_t split, uint64_t seed) {
  TrainBatch b = Batch(rows, seq, seed);
  b.position_ids = at::cat({at::arange(split, at::kLong), at::arange(seq - split, at::kLong)})
                       .unsqueeze(0)
                       .expand({rows, seq})
                       .contiguous();
  at::Tensor seg = at::cat({at::zeros({split}, at::kLong), at::ones({seq - split}, at::kLong)});
  at::Tensor causal = at::ones({seq, seq}, at::kBool).tril();
  b.attention_mask = (seg.unsqueeze(1) == seg.unsqueeze(0))
                         .logical_and(causal)
                         .view({1, 1, seq, seq})
                         .expand({rows, 1, seq, seq})
                         .contiguous();
  return b;
}

double RelativeDiff(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

// Row-tiled MLP (Note [Row-tiled MLP]) against the one-call layer, in fp32:
// the same loss and LoRA gradients to rounding (1e-6 relative), with a chunk
// that does not divide the 2 × 13 = 26 tokens (7, 7, 7, 5).
TEST(TrainerTest, TiledMlpGivesTheSameLossAndGradients) {
  model::LlamaModel m1 = TinyModel(), m2 = TinyModel();
  TrainerOptions tiled, untiled;
  tiled.mlp_chunk_tokens = 7;
  Trainer t1(&m1, tiled), t2(&m2, untiled);
  TrainBatch b = Batch(2, 13, 11);
  StepStats s1 = t1.ForwardBackward({b}), s2 = t2.ForwardBackward({b});
  EXPECT_LT(RelativeDiff(s1.loss, s2.loss), 1e-6) << s1.loss << " vs " << s2.loss;
  ExpectClose(Grads(m1), Grads(m2), 1e-6);
}

TEST(TrainerTest, TiledMlpWithPackedExamplesMatchesUntiled) {
  model::LlamaModel m1 = TinyModel(9), m2 = TinyModel(9);
  TrainerOptions tiled, untiled;
  tiled.mlp_chunk_tokens = 5;  // chunks straddle the rows and the packed examples
  Trainer t1(&m1, tiled), t2(&m2, untiled);
  TrainBatch b = PackedBatch(2, 11, 6, 12);
  StepStats s1 = t1.ForwardBackward({b}), s2 = t2.ForwardBackward({b});
  EXPECT_LT(RelativeDiff(s1.loss, s2.loss), 1e-6) << s1.loss << " vs " << s2.loss;
  ExpectClose(Grads(m1), Grads(m2), 1e-6);
}

TEST(TrainerTest, TiledMlpTrainsTheSameTrajectoryOverSteps) {
  // Three optimizer steps with two micro-batches each: the adapters that the
  // tiled steps produce feed the next step, so a difference would compound.
  model::LlamaModel m1 = TinyModel(3), m2 = TinyModel(3);
  TrainerOptions tiled, untiled;
  tiled.mlp_chunk_tokens = 4;
  Trainer t1(&m1, tiled), t2(&m2, untiled);
  for (int step = 0; step < 3; ++step) {
    std::vector<TrainBatch> micro = {Batch(1, 10, 20 + step), Batch(2, 9, 30 + step)};
    const double l1 = t1.Step(micro, 1e-2).loss, l2 = t2.Step(micro, 1e-2).loss;
    EXPECT_LT(RelativeDiff(l1, l2), 1e-6) << "step " << step;
  }
  ExpectClose(m1.LoraParameters(), m2.LoraParameters(), 1e-6);
}

TEST(TrainerTest, TiledMlpEvaluatesTheSameLossAndLogits) {
  model::LlamaModel m1 = TinyModel(8), m2 = TinyModel(8);
  TrainerOptions tiled, untiled;
  tiled.mlp_chunk_tokens = 5;
  Trainer t1(&m1, tiled), t2(&m2, untiled);
  TrainBatch b = PackedBatch(2, 11, 4, 14);
  auto [s1, n1] = t1.LossSum(b);
  auto [s2, n2] = t2.LossSum(b);
  EXPECT_EQ(n1, n2);
  EXPECT_LT(RelativeDiff(s1, s2), 1e-6) << s1 << " vs " << s2;
  EXPECT_TRUE(at::allclose(t1.Logits(b), t2.Logits(b), 1e-5, 1e-5));
}

TEST(TrainerTest, TiledMlpRunsUntiledWhenMlpDropoutIsOn) {
  // A chunk's dropout mask is not the rows of the whole one, so a layer with
  // MLP dropout runs untiled and draws exactly the untiled masks.
  model::LlamaModel m1 = TinyModel(5, 0.3), m2 = TinyModel(5, 0.3);
  TrainerOptions tiled, untiled;
  tiled.mlp_chunk_tokens = 3;
  Trainer t1(&m1, tiled), t2(&m2, untiled);
  TrainBatch b = Batch(2, 8, 6);
  EXPECT_EQ(t1.ForwardBackward({b}).loss, t2.ForwardBackward({b}).loss);
  std::vector<at::Tensor> g1 = Grads(m1), g2 = Grads(m2);
  for (size_t i = 0; i < g1.size(); ++i) EXPECT_TRUE(at::equal(g1[i], g2[i])) << "param " << i;
}

TEST(TrainerTest, MaskFromExampleOffsetsMatchesTheDenseMask) {
  // On a GPU the data pipeline hands over only the example offsets (no
  // [B, 1, T, T] mask); where variable-length attention does not apply the
  // trainer builds the block-diagonal mask from them.
  model::LlamaModel m1 = TinyModel(6), m2 = TinyModel(6);
  Trainer t1(&m1, {}), t2(&m2, {});
  TrainBatch dense = PackedBatch(2, 11, 6, 13);
  TrainBatch offsets = dense;
  offsets.attention_mask = at::Tensor();
  offsets.cu_seqlens = at::tensor(std::vector<int32_t>{0, 6, 11, 17, 22}, at::kInt);
  offsets.max_seqlen = 6;
  EXPECT_EQ(t1.ForwardBackward({dense}).loss, t2.ForwardBackward({offsets}).loss);
  std::vector<at::Tensor> g1 = Grads(m1), g2 = Grads(m2);
  for (size_t i = 0; i < g1.size(); ++i) EXPECT_TRUE(at::equal(g1[i], g2[i])) << "param " << i;
}

TEST(TrainerTest, LayerHalvesComposeToTheLayerAndTheMlpTilesByRows) {
  model::LlamaModel m = TinyModel(4);
  c10::NoGradGuard no_grad;
  at::manual_seed(2);
  at::Tensor x = at::randn({2, 9, 32});
  at::Tensor pos = at::arange(9, at::kLong).unsqueeze(0).expand({2, 9});
  model::AttentionInputs attn = model::MakeAttentionInputs(m.config, pos, at::kFloat);
  lora::DequantWorkspace ws;
  const model::DecoderLayer& layer = m.layers[1];
  at::Tensor whole = model::DecoderLayerForward(layer, m.config, x, attn, ws, true, 17);
  at::Tensor a = model::AttentionHalf(layer, m.config, x, attn, ws, true, 17);
  EXPECT_TRUE(at::equal(model::MlpHalf(layer, m.config, a, ws, true, 17), whole));
  at::Tensor rows = a.reshape({-1, 32});
  at::Tensor slice = model::MlpHalf(layer, m.config, rows.narrow(0, 5, 6), ws, true, 17);
  EXPECT_TRUE(at::allclose(slice, whole.reshape({-1, 32}).narrow(0, 5, 6), 1e-6, 1e-6));
}

// train.recompute keep_mlp (Note [Keeping the gate/up product]) against the
// full recompute, in fp32, across the family's MLP variants.
struct KeepCase {
  const char* name;
  const char* spec;          // random: model
  double dropout = 0.0;      // lora.dropout
  bool dora = false;         // train.method dora
  bool mlp_bias = false;     // biases on gate/up/down (they then do not group)
  bool keeps = true;         // whether the layers keep their gate/up product
};

void PrintTo(const KeepCase& c, std::ostream* os) { *os << c.name; }

model::LlamaModel KeepModel(const KeepCase& c, uint64_t seed) {
  model::BuildOptions opts;
  opts.dtype = at::kFloat;
  opts.seed = seed;
  opts.lora.r = 4;
  opts.lora.alpha = 8;
  opts.lora.dropout = c.dropout;
  opts.lora.dora = c.dora;
  auto config = model::RandomModelConfig(c.spec);
  EXPECT_TRUE(config.ok()) << config.status();
  config->mlp_bias = c.mlp_bias;
  auto m = model::BuildRandomModel(*config, opts);
  EXPECT_TRUE(m.ok()) << m.status();
  c10::NoGradGuard no_grad;
  at::manual_seed(seed);
  for (at::Tensor& p : m->LoraParameters()) p.normal_(0, 0.1);
  return *std::move(m);
}

class KeepMlpTest : public ::testing::TestWithParam<KeepCase> {};

TEST_P(KeepMlpTest, LayersKeepTheProductExactlyWhenGateUpRunAsOneProduct) {
  model::LlamaModel m = KeepModel(GetParam(), 3);
  for (const model::DecoderLayer& layer : m.layers) {
    EXPECT_EQ(model::MlpKeepsGateUp(layer, m.config, true), GetParam().keeps);
  }
}

// The gate/up product the no-grad forward keeps of `layer` for input `a`.
at::Tensor KeptProduct(const model::LlamaModel& m, const model::DecoderLayer& layer,
                       const at::Tensor& a, lora::DequantWorkspace& ws, uint64_t seed) {
  c10::NoGradGuard no_grad;
  at::Tensor gate_up;
  model::MlpHalf(layer, m.config, a, ws, true, seed, &gate_up);
  return gate_up;
}

// One layer's MLP half: rebuilt from the kept product it gives the input
// gradient and the LoRA gradients of the recomputed MlpHalf (to fp32
// rounding), and its value is MlpHalf's only where a sandwich norm reads
// down_proj's output (elsewhere down_proj's GEMM is skipped).
TEST_P(KeepMlpTest, MlpHalfFromKeptBackpropagatesAsMlpHalf) {
  const KeepCase& c = GetParam();
  if (!c.keeps) GTEST_SKIP() << "the layer does not keep its product";
  model::LlamaModel m = KeepModel(c, 4);
  const model::DecoderLayer& layer = m.layers[1];
  lora::DequantWorkspace ws;
  at::manual_seed(8);
  const at::Tensor a = at::randn({2, 7, m.config.hidden_size});
  const at::Tensor g = at::randn({2, 7, m.config.hidden_size});
  auto run = [&](bool keep) {
    for (const at::Tensor& p : m.LoraParameters()) p.mutable_grad() = at::Tensor();
    at::Tensor x = a.clone().requires_grad_(true);
    at::Tensor y;
    if (keep) {
      const at::Tensor gate_up = KeptProduct(m, layer, a, ws, 21);
      EXPECT_TRUE(gate_up.defined());
      EXPECT_EQ(gate_up.size(-1), 2 * m.config.intermediate_size);
      y = model::MlpHalfFromKept(layer, m.config, x, gate_up, ws, 21);
    } else {
      y = model::MlpHalf(layer, m.config, x, ws, true, 21);
    }
    const at::Tensor value = y.detach().clone();
    y.backward(g);
    std::vector<at::Tensor> grads = {x.grad()};
    for (const at::Tensor& p : m.LoraParameters()) {
      if (p.grad().defined()) grads.push_back(p.grad().clone());
    }
    return std::make_pair(value, grads);
  };
  auto [full_value, full_grads] = run(false);
  auto [kept_value, kept_grads] = run(true);
  ASSERT_EQ(kept_grads.size(), full_grads.size());
  // x, then A and B of gate, up (or the fused gate_up) and down.
  EXPECT_EQ(full_grads.size(), m.config.fused_projections ? 5u : 7u);
  ExpectClose(kept_grads, full_grads, 1e-6);
  if (m.config.sandwich_norms) {
    EXPECT_TRUE(at::allclose(kept_value, full_value, 1e-6, 1e-6));
  } else {
    // The stand-in: the residual plus a zero branch, not the layer's output.
    EXPECT_TRUE(at::equal(kept_value, a));
    EXPECT_FALSE(at::allclose(kept_value, full_value));
  }
}

TEST_P(KeepMlpTest, TheKeptProductIsWhatTheBackwardReads) {
  // A different product changes the gradients: the rebuilt MLP reads the
  // kept values rather than recomputing them.
  const KeepCase& c = GetParam();
  if (!c.keeps) GTEST_SKIP() << "the layer does not keep its product";
  model::LlamaModel m = KeepModel(c, 5);
  const model::DecoderLayer& layer = m.layers[0];
  lora::DequantWorkspace ws;
  at::manual_seed(9);
  const at::Tensor a = at::randn({1, 5, m.config.hidden_size});
  const at::Tensor gate_up = KeptProduct(m, layer, a, ws, 3);
  auto input_grad = [&](const at::Tensor& kept) {
    at::Tensor x = a.clone().requires_grad_(true);
    model::MlpHalfFromKept(layer, m.config, x, kept, ws, 3).sum().backward();
    return x.grad();
  };
  // Each backward writes its gradient over the product it was given (Note
  // [SwiGLU's gradient over its input]): both get their own copy.
  const at::Tensor scaled = gate_up * 1.5;
  const at::Tensor as_kept = input_grad(gate_up.clone());
  EXPECT_FALSE(at::allclose(as_kept, input_grad(scaled)));
}

TEST_P(KeepMlpTest, StepMatchesTheFullRecompute) {
  const KeepCase& c = GetParam();
  for (bool offload : {false, true}) {
    model::LlamaModel m1 = KeepModel(c, 6), m2 = KeepModel(c, 6);
    TrainerOptions keep, full;
    keep.recompute = plan::Recompute::kKeepMlp;
    keep.activation_offload = offload;  // on the CPU: the stash keeps them in place
    full.recompute = plan::Recompute::kFull;
    Trainer t1(&m1, keep), t2(&m2, full);
    TrainBatch b = Batch(2, 9, 15);
    // Two micro-batches: the stash is rebuilt for each.
    TrainBatch b2 = Batch(1, 11, 16);
    StepStats s1 = t1.ForwardBackward({b, b2}), s2 = t2.ForwardBackward({b, b2});
    EXPECT_EQ(s1.loss, s2.loss) << "offload " << offload;  // the same forward
    ExpectClose(Grads(m1), Grads(m2), 1e-6);
  }
}

TEST_P(KeepMlpTest, StepsTrainTheSameTrajectory) {
  const KeepCase& c = GetParam();
  model::LlamaModel m1 = KeepModel(c, 7), m2 = KeepModel(c, 7);
  TrainerOptions keep, full;
  keep.recompute = plan::Recompute::kKeepMlp;
  full.recompute = plan::Recompute::kFull;
  Trainer t1(&m1, keep), t2(&m2, full);
  for (int step = 0; step < 3; ++step) {
    const std::vector<TrainBatch> micro = {Batch(2, 8, 40 + step)};
    const double l1 = t1.Step(micro, 1e-2).loss, l2 = t2.Step(micro, 1e-2).loss;
    EXPECT_LT(RelativeDiff(l1, l2), 1e-6) << "step " << step;
  }
  ExpectClose(m1.LoraParameters(), m2.LoraParameters(), 1e-6);
}

constexpr const char* kSizes = "layers=2,hidden=32,intermediate=64,heads=4,kv_heads=2,vocab=50";

INSTANTIATE_TEST_SUITE_P(
    Family, KeepMlpTest,
    ::testing::Values(
        KeepCase{"llama", "layers=2,hidden=32,intermediate=64,heads=4,kv_heads=2,vocab=50"},
        // q/k/v biases: attention does not group, gate/up still do.
        KeepCase{"qwen2", "qwen2.5-7b,layers=2,hidden=32,intermediate=64,heads=4,kv_heads=2,"
                          "vocab=50"},
        // Sandwich norms read down_proj's output: its real forward runs.
        KeepCase{"gemma3", "gemma3-1b,layers=2,hidden=32,intermediate=64,heads=4,kv_heads=2,"
                           "vocab=50,head_dim=8"},
        KeepCase{"gemma2", "gemma2-9b,layers=2,hidden=32,intermediate=64,heads=4,kv_heads=2,"
                           "vocab=50,head_dim=8"},
        // One fused gate_up_proj.
        KeepCase{"phi3", "phi3-mini,layers=2,hidden=32,intermediate=64,heads=4,kv_heads=4,"
                         "vocab=50"},
        // Neither groups: the full recompute runs, with the same result.
        KeepCase{"dora", kSizes, 0.0, /*dora=*/true, false, /*keeps=*/false},
        KeepCase{"dropout", kSizes, 0.3, false, false, /*keeps=*/false},
        KeepCase{"mlp_bias", kSizes, 0.0, false, /*mlp_bias=*/true, /*keeps=*/false}),
    [](const ::testing::TestParamInfo<KeepCase>& info) { return std::string(info.param.name); });

TEST(KeepMlpPolicyTest, AutoKeepsOnlyWithOffloadAnUntiledMlpAndHostRoom) {
  using plan::Recompute;
  EXPECT_FALSE(plan::KeepsMlpProducts(Recompute::kFull, true, 0, 1, 100));
  EXPECT_TRUE(plan::KeepsMlpProducts(Recompute::kKeepMlp, false, 0, 1, 100));
  EXPECT_FALSE(plan::KeepsMlpProducts(Recompute::kKeepMlp, true, 4608, 1, 100));  // tiled
  EXPECT_TRUE(plan::KeepsMlpProducts(Recompute::kAuto, true, 0, 50, 100));
  EXPECT_FALSE(plan::KeepsMlpProducts(Recompute::kAuto, true, 0, 51, 100));   // half the host
  EXPECT_TRUE(plan::KeepsMlpProducts(Recompute::kAuto, true, 0, 51, 0));      // unknown host
  EXPECT_FALSE(plan::KeepsMlpProducts(Recompute::kAuto, false, 0, 1, 100));  // no offload
  EXPECT_FALSE(plan::KeepsMlpProducts(Recompute::kAuto, true, 4608, 1, 100));
}

TEST(KeepMlpPolicyTest, AutoWithOffloadMatchesTheFullRecompute) {
  // auto resolves to keep_mlp with activation offload: same step as full.
  model::LlamaModel m1 = TinyModel(2), m2 = TinyModel(2);
  TrainerOptions autoo, full;
  autoo.activation_offload = true;
  full.recompute = plan::Recompute::kFull;
  Trainer t1(&m1, autoo), t2(&m2, full);
  TrainBatch b = Batch(2, 10, 17);
  EXPECT_EQ(t1.ForwardBackward({b}).loss, t2.ForwardBackward({b}).loss);
  ExpectClose(Grads(m1), Grads(m2), 1e-6);
}

TEST(KeepMlpPolicyTest, TheTopLayersKeepTheirsWhereThePlanSaysSo) {
  // Note [Where the kept products live]: kept_mlp_layers of the top layers
  // keep their product, device_kept_mlp_layers of those stay on the device;
  // the others recompute in full. Same gradients either way.
  struct Split {
    int64_t kept, on_device;
    bool offload;
    int64_t want_kept, want_on_device;  // per micro-batch, of 3 layers
  };
  for (const Split& s : {Split{1, -1, false, 1, 1}, Split{2, 1, true, 2, 1},
                         Split{-1, 0, true, 3, 0}, Split{0, 0, false, 0, 0}}) {
    const KeepCase three{"llama3", "layers=3,hidden=32,intermediate=64,heads=4,kv_heads=2,vocab=50"};
    model::LlamaModel m1 = KeepModel(three, 4), m2 = KeepModel(three, 4);
    TrainerOptions keep, full;
    keep.recompute = plan::Recompute::kKeepMlp;
    keep.kept_mlp_layers = s.kept;
    keep.device_kept_mlp_layers = s.on_device;
    keep.activation_offload = s.offload;
    full.recompute = plan::Recompute::kFull;
    Trainer t1(&m1, keep), t2(&m2, full);
    const std::vector<TrainBatch> micro = {Batch(2, 9, 19), Batch(1, 7, 20)};
    const StepStats k = t1.ForwardBackward(micro), f = t2.ForwardBackward(micro);
    EXPECT_EQ(k.loss, f.loss);
    EXPECT_EQ(k.kept_mlp_products, 2 * s.want_kept) << s.kept;
    EXPECT_EQ(k.device_kept_mlp_products, 2 * s.want_on_device) << s.kept;
    EXPECT_EQ(f.kept_mlp_products, 0);
    ExpectClose(Grads(m1), Grads(m2), 1e-6);
  }
}

TEST(KeepMlpPolicyTest, ARowTiledMlpKeepsTheTiledRecompute) {
  // keep_mlp with a tiled MLP: the tiled recompute runs (as for full).
  model::LlamaModel m1 = TinyModel(3), m2 = TinyModel(3);
  TrainerOptions keep, full;
  keep.recompute = plan::Recompute::kKeepMlp;
  keep.mlp_chunk_tokens = full.mlp_chunk_tokens = 5;
  full.recompute = plan::Recompute::kFull;
  Trainer t1(&m1, keep), t2(&m2, full);
  TrainBatch b = Batch(2, 9, 18);
  EXPECT_EQ(t1.ForwardBackward({b}).loss, t2.ForwardBackward({b}).loss);
  std::vector<at::Tensor> g1 = Grads(m1), g2 = Grads(m2);
  for (size_t i = 0; i < g1.size(); ++i) EXPECT_TRUE(at::equal(g1[i], g2[i])) << "param " << i;
}

}  // namespace
}  // namespace rigtune::train
