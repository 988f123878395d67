// The engine on CUDA against the CPU path: the same random model and batch
// give the same loss and LoRA gradients (fp32 tightly, bf16 within bf16
// tolerance), with plain causal attention and with a packed (masked) batch,
// and with the MLP row-tiled on the GPU.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include "worker/model/model_builder.h"
#include "worker/train/trainer.h"

namespace rigtune::train {
namespace {

// Random weights depend on the device's generator, so the model is drawn on
// the CPU and copied to the GPU: both sides compute with the same weights.
model::LlamaModel Build(at::Device device, at::ScalarType dtype) {
  model::BuildOptions o;
  o.device = at::kCPU;
  o.dtype = at::kFloat;
  o.lora.r = 8;
  o.lora.alpha = 16;
  auto c = model::RandomModelConfig("random:layers=2,hidden=256,intermediate=512,heads=4,"
                                    "kv_heads=2,vocab=512");
  auto m = model::BuildRandomModel(*c, o);
  EXPECT_TRUE(m.ok()) << m.status();
  c10::NoGradGuard no_grad;
  at::Generator gen = at::globalContext().defaultGenerator(at::kCPU).clone();
  gen.set_current_seed(11);
  for (at::Tensor& p : m->LoraParameters()) {
    p.copy_(at::empty(p.sizes(), at::kFloat).normal_(0, 0.05, gen));
  }
  if (device.is_cpu()) return *std::move(m);
  model::LlamaModel g;
  g.config = m->config;
  g.dtype = dtype;
  g.embed_tokens = m->embed_tokens.to(device, dtype);
  g.lm_head = m->lm_head.to(device, dtype);
  g.norm = m->norm.to(device, dtype);
  for (const model::DecoderLayer& l : m->layers) {
    model::DecoderLayer d;
    d.input_layernorm = l.input_layernorm.to(device, dtype);
    d.post_attention_layernorm = l.post_attention_layernorm.to(device, dtype);
    for (int p = 0; p < model::kNumProj; ++p) {
      const lora::QLoraLinear& q = l.proj[p];
      d.proj[p] = lora::QLoraLinear(q.weight().To(device), at::Tensor(), q.spec(),
                                    q.lora_a().detach().to(device).requires_grad_(true),
                                    q.lora_b().detach().to(device).requires_grad_(true));
    }
    g.layers.push_back(std::move(d));
  }
  return g;
}

TrainBatch Batch(at::Device device, bool packed) {
  at::Generator gen = at::globalContext().defaultGenerator(at::kCPU).clone();
  gen.set_current_seed(5);
  at::Tensor ids = at::randint(512, {2, 128}, gen, at::kLong);
  TrainBatch b;
  b.input_ids = ids.to(device);
  b.labels = ids.to(device);
  if (packed) {  // two examples of 64 per row, block-diagonal
    at::Tensor pos = at::arange(64, at::kLong).repeat({2}).unsqueeze(0).repeat({2, 1});
    at::Tensor seg = at::cat({at::zeros({64}, at::kLong), at::ones({64}, at::kLong)});
    at::Tensor mask = (seg.unsqueeze(1) == seg.unsqueeze(0)).logical_and(at::ones({128, 128}, at::kBool).tril());
    b.position_ids = pos.to(device);
    b.attention_mask = mask.view({1, 1, 128, 128}).expand({2, 1, 128, 128}).contiguous().to(device);
    // On CUDA in bf16 the engine takes the variable-length path instead.
    b.cu_seqlens = at::tensor(std::vector<int32_t>{0, 64, 128, 192, 256}, at::kInt).to(device);
    b.max_seqlen = 64;
    at::Tensor labels = ids.clone();
    labels.select(1, 64).fill_(-100);
    b.labels = labels.to(device);
  }
  return b;
}

double Rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a.cpu().to(at::kDouble) - b.cpu().to(at::kDouble)).norm() /
          b.cpu().to(at::kDouble).norm())
      .item<double>();
}

// `gpu_mlp_chunk` > 0 runs the GPU side's MLP row-tiled (Note [Row-tiled
// MLP]) against the CPU's untiled reference.
void Compare(at::ScalarType dtype, bool packed, double loss_tol, double grad_tol,
             int64_t gpu_mlp_chunk = 0) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  model::LlamaModel cpu = Build(at::kCPU, at::kFloat), gpu = Build(at::Device(at::kCUDA, 0), dtype);
  TrainerOptions tiled;
  tiled.mlp_chunk_tokens = gpu_mlp_chunk;
  Trainer tc(&cpu, {}), tg(&gpu, tiled);
  const double lc = tc.ForwardBackward({Batch(at::kCPU, packed)}).loss;
  const double lg = tg.ForwardBackward({Batch(at::Device(at::kCUDA, 0), packed)}).loss;
  EXPECT_NEAR(lg, lc, loss_tol * lc);
  auto pc = cpu.LoraParameters(), pg = gpu.LoraParameters();
  ASSERT_EQ(pc.size(), pg.size());
  for (size_t i = 0; i < pc.size(); ++i) EXPECT_LT(Rel(pg[i].grad(), pc[i].grad()), grad_tol) << i;
}

TEST(EngineCudaTest, Fp32MatchesCpu) { Compare(at::kFloat, false, 1e-4, 1e-3); }
TEST(EngineCudaTest, Bf16MatchesCpuWithinBf16Tolerance) { Compare(at::kBFloat16, false, 1e-2, 6e-2); }
TEST(EngineCudaTest, PackedBf16MatchesCpu) { Compare(at::kBFloat16, true, 1e-2, 6e-2); }
// 256 tokens in chunks of 96 (96, 96, 64), straddling the two rows.
TEST(EngineCudaTest, TiledMlpFp32MatchesCpu) { Compare(at::kFloat, false, 1e-4, 1e-3, 96); }
TEST(EngineCudaTest, TiledMlpPackedBf16MatchesCpu) { Compare(at::kBFloat16, true, 1e-2, 6e-2, 96); }

}  // namespace
}  // namespace rigtune::train
