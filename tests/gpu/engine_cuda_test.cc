// The engine on CUDA against the CPU path: the same random model and batch
// give the same loss and LoRA gradients (fp32 tightly, bf16 within bf16
// tolerance), with plain causal attention and with a packed (masked) batch,
// with the MLP row-tiled on the GPU, and with the MLP's gate/up products kept
// from the forward (on the device or through pinned host memory).
#include <algorithm>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include "tests/gpu/skip_without_cuda.h"
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

// The GPU side runs with `gpu` (e.g. the MLP row-tiled, Note [Row-tiled
// MLP], or the gate/up products kept and offloaded) against the CPU's
// untiled full-recompute reference; returns the GPU step's stats.
StepStats Compare(at::ScalarType dtype, bool packed, double loss_tol, double grad_tol,
                  const TrainerOptions& gpu_options = {}) {
  if (!at::hasCUDA()) return {};
  model::LlamaModel cpu = Build(at::kCPU, at::kFloat), gpu = Build(at::Device(at::kCUDA, 0), dtype);
  TrainerOptions reference;
  reference.recompute = plan::Recompute::kFull;
  Trainer tc(&cpu, reference), tg(&gpu, gpu_options);
  const double lc = tc.ForwardBackward({Batch(at::kCPU, packed)}).loss;
  const StepStats sg = tg.ForwardBackward({Batch(at::Device(at::kCUDA, 0), packed)});
  const double lg = sg.loss;
  EXPECT_NEAR(lg, lc, loss_tol * lc);
  auto pc = cpu.LoraParameters(), pg = gpu.LoraParameters();
  EXPECT_EQ(pc.size(), pg.size());
  for (size_t i = 0; i < std::min(pc.size(), pg.size()); ++i) EXPECT_LT(Rel(pg[i].grad(), pc[i].grad()), grad_tol) << i;
  return sg;
}

TrainerOptions Tiled(int64_t rows) {
  TrainerOptions o;
  o.mlp_chunk_tokens = rows;
  return o;
}

// train.recompute keep_mlp on the GPU (Note [Keeping the gate/up product]):
// `kept` top layers keep their product, `on_device` of them stay on the
// device, the others travel through pinned host memory on the copy stream.
TrainerOptions Kept(int64_t kept, int64_t on_device) {
  TrainerOptions o;
  o.recompute = plan::Recompute::kKeepMlp;
  o.activation_offload = true;
  o.kept_mlp_layers = kept;
  o.device_kept_mlp_layers = on_device;
  return o;
}

TEST(EngineCudaTest, Fp32MatchesCpu) {
  SKIP_WITHOUT_CUDA();
  Compare(at::kFloat, false, 1e-4, 1e-3);
}
TEST(EngineCudaTest, Bf16MatchesCpuWithinBf16Tolerance) {
  SKIP_WITHOUT_CUDA();
  Compare(at::kBFloat16, false, 1e-2, 6e-2);
}
TEST(EngineCudaTest, PackedBf16MatchesCpu) {
  SKIP_WITHOUT_CUDA();
  Compare(at::kBFloat16, true, 1e-2, 6e-2);
}
// 256 tokens in chunks of 96 (96, 96, 64), straddling the two rows.
TEST(EngineCudaTest, TiledMlpFp32MatchesCpu) {
  SKIP_WITHOUT_CUDA();
  Compare(at::kFloat, false, 1e-4, 1e-3, Tiled(96));
}
TEST(EngineCudaTest, TiledMlpPackedBf16MatchesCpu) {
  SKIP_WITHOUT_CUDA();
  Compare(at::kBFloat16, true, 1e-2, 6e-2, Tiled(96));
}
// Both layers keep their product; the first one's goes to the host and
// back (the last layer's always stays).
TEST(EngineCudaTest, KeptProductsThroughTheHostFp32MatchCpu) {
  SKIP_WITHOUT_CUDA();
  const StepStats s = Compare(at::kFloat, false, 1e-4, 1e-3, Kept(-1, 0));
  EXPECT_EQ(s.kept_mlp_products, 2);
  EXPECT_EQ(s.device_kept_mlp_products, 0);
}
// Only the top layer keeps its product, on the device; the first layer
// recomputes its MLP in full. In bf16, on a packed batch.
TEST(EngineCudaTest, TopLayerKeptOnTheDevicePackedBf16MatchesCpu) {
  SKIP_WITHOUT_CUDA();
  const StepStats s = Compare(at::kBFloat16, true, 1e-2, 6e-2, Kept(1, 1));
  EXPECT_EQ(s.kept_mlp_products, 1);
  EXPECT_EQ(s.device_kept_mlp_products, 1);
}

}  // namespace
}  // namespace rigtune::train
