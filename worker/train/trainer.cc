#include "worker/train/trainer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "worker/model/model_builder.h"
#include "worker/profile/step_profiler.h"
#include "worker/train/activation_stash.h"

namespace rigtune::train {
namespace {

class ModelLayers : public LayerSource {
 public:
  explicit ModelLayers(model::LlamaModel* m) : model_(m) {}
  at::Tensor AcquireEmbedding() override { return model_->embed_tokens; }
  void ReleaseEmbedding() override {}
  HeadWeights AcquireHead() override { return {model_->norm, model_->lm_head}; }
  void ReleaseHead() override {}
  const model::DecoderLayer& Acquire(int64_t i, bool) override { return model_->layers[i]; }
  void Release(int64_t, bool) override {}
  std::vector<at::Tensor> Parameters() override { return model_->LoraParameters(); }
  std::vector<at::Tensor> Gradients() override {
    std::vector<at::Tensor> grads;
    for (const at::Tensor& p : model_->LoraParameters()) grads.push_back(p.grad());
    return grads;
  }
  void ZeroGradients() override {
    for (const at::Tensor& p : model_->LoraParameters()) {
      if (p.grad().defined()) p.mutable_grad() = at::Tensor();
    }
  }

 private:
  model::LlamaModel* model_;
};

constexpr int64_t kIgnoreIndex = -100;

}  // namespace

int64_t CountTargets(const at::Tensor& labels) {
  const int64_t t = labels.size(1);
  if (t < 2) return 0;
  return labels.narrow(1, 1, t - 1).ne(kIgnoreIndex).sum().item<int64_t>();
}

Trainer::Trainer(model::LlamaModel* model, TrainerOptions options, LayerSource* layers)
    : model_(model), options_(options), layers_(layers) {
  if (layers_ == nullptr) {
    own_layers_ = std::make_unique<ModelLayers>(model_);
    layers_ = own_layers_.get();
  }
  optimizer_ = std::make_unique<AdamW>(layers_->Parameters(), options_.adamw);
}

Trainer::~Trainer() {
  try {
    layers_->WaitForUpdate();
  } catch (...) {
    // The job already ends with the error that stopped it.
  }
}

void Trainer::ZeroGrad() { layers_->ZeroGradients(); }

at::Tensor Trainer::Embed(const at::Tensor& input_ids) {
  c10::NoGradGuard no_grad;
  at::Tensor h = at::embedding(layers_->AcquireEmbedding(), input_ids);
  layers_->ReleaseEmbedding();
  return h;
}

model::AttentionInputs Trainer::Attention(const TrainBatch& batch) const {
  at::Tensor pos = batch.position_ids;
  if (!pos.defined()) {
    const int64_t b = batch.input_ids.size(0), t = batch.input_ids.size(1);
    pos = at::arange(t, batch.input_ids.options()).unsqueeze(0).expand({b, t});
  }
  return model::MakeAttentionInputs(model_->config, pos, model_->dtype, batch.attention_mask,
                                    batch.cu_seqlens, batch.max_seqlen);
}

std::pair<double, at::Tensor> Trainer::HeadLossAndGrad(const at::Tensor& hidden,
                                                       const at::Tensor& labels,
                                                       double denominator) {
  const int64_t b = hidden.size(0), t = hidden.size(1), h = hidden.size(2);
  profile::ScopedPhase phase(profile::Phase::kLoss, hidden);
  const HeadWeights head = layers_->AcquireHead();
  at::Tensor x = hidden.detach().requires_grad_(true);
  at::Tensor normed;
  {
    c10::AutoGradMode grad(true);
    normed = model::RmsNorm(x, head.norm, model_->config.rms_norm_eps);
  }
  // Only positions with a target reach the LM head: logits of the rest would
  // be computed and thrown away.
  at::Tensor targets = labels.narrow(1, 1, t - 1).reshape({-1});
  at::Tensor rows = targets.ne(kIgnoreIndex).nonzero().squeeze(1);
  at::Tensor flat = normed.detach().narrow(1, 0, t - 1).reshape({-1, h});
  at::Tensor flat_grad = at::zeros_like(flat);
  const int64_t chunk = HeadChunk();
  double loss_sum = 0;
  for (int64_t start = 0; start < rows.numel(); start += chunk) {
    at::Tensor idx = rows.narrow(0, start, std::min(chunk, rows.numel() - start));
    at::Tensor xs = flat.index_select(0, idx).requires_grad_(true);
    c10::AutoGradMode grad(true);
    at::Tensor logits = at::matmul(xs, head.lm_head.t()).to(at::kFloat);
    at::Tensor loss = at::cross_entropy_loss(logits, targets.index_select(0, idx), {},
                                             at::Reduction::Sum, kIgnoreIndex);
    loss_sum += loss.item<double>();
    (loss / denominator).backward();
    flat_grad.index_add_(0, idx, xs.grad());
  }
  at::Tensor normed_grad = at::zeros_like(normed);
  normed_grad.narrow(1, 0, t - 1).copy_(flat_grad.view({b, t - 1, h}));
  {
    c10::AutoGradMode grad(true);
    normed.backward(normed_grad);
  }
  layers_->ReleaseHead();
  return {loss_sum, x.grad()};
}

int64_t Trainer::HeadChunk() const {
  if (options_.head_chunk_tokens > 0) return options_.head_chunk_tokens;
  return std::max<int64_t>(64, (64LL << 20) / model_->config.vocab_size);  // ~256 MB of fp32 logits
}

double Trainer::MicroStep(const TrainBatch& batch, double denominator, uint64_t micro_index) {
  const model::ModelConfig& cfg = model_->config;
  const int64_t n = cfg.num_layers;
  model::AttentionInputs attn = Attention(batch);
  auto seed_of = [&](int64_t layer) {
    return model::MixSeed(options_.seed, layer, static_cast<int64_t>(micro_index), 3) *
           model::kNumProj;
  };
  at::Tensor h = Embed(batch.input_ids);
  if (options_.activation_checkpointing) {
    ActivationStash inputs(n, options_.activation_offload);
    {
      c10::NoGradGuard no_grad;
      profile::ScopedPhase forward(profile::Phase::kNoGradForward, h);
      for (int64_t i = 0; i < n; ++i) {
        inputs.Put(i, h);
        const model::DecoderLayer& layer = layers_->Acquire(i, false);
        h = model::DecoderLayerForward(layer, cfg, h, attn, workspace_, true, seed_of(i));
        layers_->Release(i, false);
      }
    }
    auto [loss_sum, grad] = HeadLossAndGrad(h, batch.labels, denominator);
    profile::ScopedPhase walk(profile::Phase::kRecomputeBackward, h);
    for (int64_t i = n - 1; i >= 0; --i) {
      const model::DecoderLayer& layer = layers_->Acquire(i, true);
      at::Tensor x = inputs.Take(i, h.device()).detach();
      if (i > 0) x.requires_grad_(true);
      {
        c10::AutoGradMode grad_mode(true);
        at::Tensor y = model::DecoderLayerForward(layer, cfg, x, attn, workspace_, true, seed_of(i));
        y.backward(grad);
      }
      if (i > 0) grad = x.grad();
      layers_->Release(i, true);
    }
    return loss_sum;
  }
  // Without checkpointing: one graph through every layer, one backward.
  c10::AutoGradMode grad_mode(true);
  for (int64_t i = 0; i < n; ++i) {
    const model::DecoderLayer& layer = layers_->Acquire(i, false);
    h = model::DecoderLayerForward(layer, cfg, h, attn, workspace_, true, seed_of(i));
  }
  auto [loss_sum, grad] = HeadLossAndGrad(h, batch.labels, denominator);
  h.backward(grad);
  for (int64_t i = n - 1; i >= 0; --i) layers_->Release(i, true);
  return loss_sum;
}

StepStats Trainer::ForwardBackward(const std::vector<TrainBatch>& micro_batches) {
  StepStats stats;
  int64_t targets = 0, inputs = 0;
  for (const TrainBatch& b : micro_batches) {
    targets += CountTargets(b.labels);
    inputs += b.input_ids.numel();
  }
  // Every rank divides by the global count, so the summed gradients are those
  // of the mean over the whole (all-rank) batch.
  stats.target_tokens = static_cast<int64_t>(layers_->SumOverRanks(static_cast<double>(targets)));
  stats.input_tokens = static_cast<int64_t>(layers_->SumOverRanks(static_cast<double>(inputs)));
  const double denominator = std::max<int64_t>(1, stats.target_tokens);
  // Dropout seeds follow (optimizer step, micro-batch): a resumed run draws
  // the same masks as an uninterrupted one.
  double loss_sum = 0;
  const uint64_t base = static_cast<uint64_t>(optimizer_->step()) * micro_batches.size();
  for (size_t k = 0; k < micro_batches.size(); ++k) {
    loss_sum += MicroStep(micro_batches[k], denominator, base + k);
  }
  stats.loss = layers_->SumOverRanks(loss_sum) / denominator;
  return stats;
}

StepStats Trainer::Step(const std::vector<TrainBatch>& micro_batches, double lr) {
  StepStats stats = ForwardBackward(micro_batches);
  std::vector<at::Tensor> grads = layers_->Gradients();
  profile::ScopedPhase phase(profile::Phase::kOptimizer, grads.empty() ? at::Tensor() : grads[0]);
  stats.grad_norm =
      GlobalGradNorm(grads, [this](double sq) { return layers_->SumGradSquares(sq); });
  // Clipping is folded into the update: no pass over the gradients.
  layers_->Update(*optimizer_, grads, lr,
                  ClipCoefficient(stats.grad_norm, options_.max_grad_norm));
  stats.learning_rate = lr;
  ZeroGrad();
  return stats;
}

at::Tensor Trainer::ForwardNoGrad(const TrainBatch& batch) {
  c10::NoGradGuard no_grad;
  model::AttentionInputs attn = Attention(batch);
  at::Tensor h = Embed(batch.input_ids);
  for (int64_t i = 0; i < model_->config.num_layers; ++i) {
    const model::DecoderLayer& layer = layers_->Acquire(i, false);
    h = model::DecoderLayerForward(layer, model_->config, h, attn, workspace_, false, 0);
    layers_->Release(i, false);
  }
  return h;
}

std::pair<double, int64_t> Trainer::LossSum(const TrainBatch& batch) {
  at::Tensor h = ForwardNoGrad(batch);
  c10::NoGradGuard no_grad;
  const int64_t t = h.size(1), hidden = h.size(2);
  const HeadWeights head = layers_->AcquireHead();
  at::Tensor normed = model::RmsNorm(h, head.norm, model_->config.rms_norm_eps);
  at::Tensor targets = batch.labels.narrow(1, 1, t - 1).reshape({-1});
  at::Tensor rows = targets.ne(kIgnoreIndex).nonzero().squeeze(1);
  at::Tensor flat = normed.narrow(1, 0, t - 1).reshape({-1, hidden});
  const int64_t chunk = HeadChunk();
  double loss_sum = 0;
  for (int64_t start = 0; start < rows.numel(); start += chunk) {
    at::Tensor idx = rows.narrow(0, start, std::min(chunk, rows.numel() - start));
    at::Tensor logits = at::matmul(flat.index_select(0, idx), head.lm_head.t()).to(at::kFloat);
    loss_sum += at::cross_entropy_loss(logits, targets.index_select(0, idx), {},
                                       at::Reduction::Sum, kIgnoreIndex)
                    .item<double>();
  }
  layers_->ReleaseHead();
  return {loss_sum, rows.numel()};
}

at::Tensor Trainer::Logits(const TrainBatch& batch) {
  at::Tensor h = ForwardNoGrad(batch);
  c10::NoGradGuard no_grad;
  const HeadWeights head = layers_->AcquireHead();
  h = model::RmsNorm(h, head.norm, model_->config.rms_norm_eps);
  at::Tensor logits = at::matmul(h, head.lm_head.t()).to(at::kFloat);
  layers_->ReleaseHead();
  return logits;
}

}  // namespace rigtune::train
