#include "worker/train/trainer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "worker/model/model_builder.h"
#include "worker/plan/memory_plan.h"
#include "worker/profile/step_profiler.h"
#include "worker/train/activation_stash.h"

namespace rigtune::train {
namespace {

class ModelLayers : public LayerSource {
 public:
  explicit ModelLayers(model::LlamaModel* m) : model_(m) {}
  at::Tensor AcquireEmbedding(bool) override { return model_->embed_tokens; }
  void ReleaseEmbedding(bool) override {}
  HeadWeights AcquireHead() override { return {model_->norm, model_->lm_head}; }
  void ReleaseHead(bool) override {}
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

// A block-diagonal causal mask [B, 1, T, T] from the offsets of the packed
// examples in the flattened [B * T] tokens: a token attends to the earlier
// tokens of its own example.
at::Tensor MaskFromSeqlens(const at::Tensor& cu_seqlens, int64_t b, int64_t t) {
  const at::Tensor starts = cu_seqlens.to(at::kLong).narrow(0, 1, cu_seqlens.numel() - 2);
  at::Tensor marks = at::zeros({b * t}, starts.options());
  marks.index_fill_(0, starts, 1);
  const at::Tensor seg = marks.cumsum(0).view({b, t});
  const at::Tensor causal = at::ones({t, t}, seg.options().dtype(at::kBool)).tril();
  return (seg.unsqueeze(2) == seg.unsqueeze(1)).logical_and(causal).unsqueeze(1);
}

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
  at::Tensor h =
      model::EmbedTokens(model_->config, layers_->AcquireEmbedding(false), input_ids);
  layers_->ReleaseEmbedding(false);
  return h;
}

void Trainer::EmbedBackward(const at::Tensor& input_ids, const at::Tensor& grad) {
  c10::AutoGradMode grad_mode(true);
  model::EmbedTokens(model_->config, layers_->AcquireEmbedding(true), input_ids).backward(grad);
  layers_->ReleaseEmbedding(true);
}

model::AttentionInputs Trainer::Attention(const TrainBatch& batch) const {
  at::Tensor pos = batch.position_ids;
  if (!pos.defined()) {
    const int64_t b = batch.input_ids.size(0), t = batch.input_ids.size(1);
    pos = at::arange(t, batch.input_ids.options()).unsqueeze(0).expand({b, t});
  }
  at::Tensor mask = batch.attention_mask;
  const bool half = model_->dtype == at::kBFloat16 || model_->dtype == at::kHalf;
  if (!mask.defined() && batch.cu_seqlens.defined() && !(batch.input_ids.is_cuda() && half)) {
    mask = MaskFromSeqlens(batch.cu_seqlens, batch.input_ids.size(0), batch.input_ids.size(1));
  }
  return model::MakeAttentionInputs(model_->config, pos, model_->dtype, mask, batch.cu_seqlens,
                                    batch.max_seqlen);
}

Trainer::LabelledRows Trainer::FindLabelledRows(const at::Tensor& labels) {
  // Only positions with a target reach the LM head: logits of the rest would
  // be computed and thrown away. Row r of the [B × (T-1)] targets predicts
  // from row r + r / (T-1) of the [B × T] hidden states; reading (and in
  // training writing) those rows in place spares a [B × T, hidden] buffer
  // (and for B > 1 a copy of the hidden states): 0.67 GB each at 81,920
  // tokens of 8B.
  const int64_t t = labels.size(1);
  LabelledRows out;
  out.targets = labels.narrow(1, 1, t - 1).reshape({-1});
  out.rows = out.targets.ne(kIgnoreIndex).nonzero().squeeze(1);
  out.sources = out.rows + at::div(out.rows, t - 1, "floor");
  return out;
}

void Trainer::ForEachHeadChunk(
    const LabelledRows& labelled,
    const std::function<void(const at::Tensor& sources, const at::Tensor& targets)>& fn) const {
  const int64_t n = labelled.rows.numel(), chunk = HeadChunk();
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t len = std::min(chunk, n - start);
    fn(labelled.sources.narrow(0, start, len),
       labelled.targets.index_select(0, labelled.rows.narrow(0, start, len)));
  }
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
    normed = model::Norm(model_->config, x, head.norm);
  }
  const LabelledRows labelled = FindLabelledRows(labels);
  at::Tensor flat = normed.detach().view({b * t, h});
  at::Tensor normed_grad = at::zeros_like(normed);
  at::Tensor flat_grad = normed_grad.view({b * t, h});
  at::Tensor loss_sum = at::zeros({}, flat.options().dtype(at::kDouble));
  ForEachHeadChunk(labelled, [&](const at::Tensor& idx, const at::Tensor& targets) {
    at::Tensor xs = flat.index_select(0, idx).requires_grad_(true);
    c10::AutoGradMode grad(true);
    at::Tensor logits = model::HeadLogits(model_->config, xs, head.lm_head);
    at::Tensor loss =
        at::cross_entropy_loss(logits, targets, {}, at::Reduction::Sum, kIgnoreIndex);
    loss_sum += loss.detach();
    (loss / denominator).backward();
    flat_grad.index_add_(0, idx, xs.grad());
  });
  {
    c10::AutoGradMode grad(true);
    normed.backward(normed_grad);
  }
  layers_->ReleaseHead(true);
  return {loss_sum.item<double>(), x.grad()};
}

int64_t Trainer::HeadChunk() const {
  if (options_.head_chunk_tokens > 0) return options_.head_chunk_tokens;
  return std::max<int64_t>(64, (64LL << 20) / model_->config.vocab_size);  // ~256 MB of fp32 logits
}

// Note [Row-tiled MLP]
// ~~~~~~~~~~~~~~~~~~~~
// At long context the MLP's [tokens, intermediate] tensors (the gate/up
// product, the activation and their gradients: 2.35 GB each in bf16 at
// 81,920 tokens of Llama-3.1-8B) are the step's peak. The MLP half of a
// decoder layer is per token, so the checkpointed step runs it over chunks
// of rows (plan::MlpChunkTokens picks how many):
//
// - no-grad forward: h = AttentionHalf(x); then for each chunk of rows,
//   MlpHalf(those rows) overwrites them in h (a row's output depends on
//   that row alone, and h is nobody else's: the stash keeps x).
// - recompute + backward: a = AttentionHalf(x) with its graph kept; for each
//   chunk, MlpHalf is recomputed with grad from a detached slice of a and
//   backpropagated with the same rows of the output gradient; the slice's
//   input gradient (the residual's identity part included) overwrites those
//   rows of the output gradient, which then is a's gradient, and a's graph
//   is backpropagated once. LoRA gradients of gate/up/down accumulate
//   across the chunks as they would across micro-batches.
// - evaluation (ForwardNoGrad): as the no-grad forward.
//
// LoRA dropout masks are drawn for the shape a projection is given (see
// QLoraLinear::Forward), so a chunk's mask is not the rows of the whole
// one; a layer whose MLP projections train with dropout runs untiled (the
// job file refuses an explicit train.mlp_chunk_tokens with lora.dropout > 0).
// Tiled and untiled steps then agree to rounding (trainer_test).

int64_t Trainer::MlpChunk(int64_t tokens) const {
  return plan::MlpChunkTokens(tokens, model_->config.intermediate_size,
                              static_cast<int64_t>(c10::elementSize(model_->dtype)),
                              options_.mlp_chunk_tokens);
}

bool Trainer::KeepsMlp(int64_t tokens, int64_t chunk) const {
  const model::ModelConfig& cfg = model_->config;
  const int64_t d = static_cast<int64_t>(c10::elementSize(model_->dtype));
  const int64_t host_bytes =
      cfg.num_layers *
      (plan::PinnedHostBytes(plan::GateUpProductBytes(tokens, cfg.intermediate_size, d)) +
       plan::PinnedHostBytes(tokens * cfg.hidden_size * d));
  return plan::KeepsMlpProducts(options_.recompute, options_.activation_offload, chunk, host_bytes,
                                options_.host_memory_bytes);
}

void Trainer::TiledMlpForward(const model::DecoderLayer& layer, at::Tensor& h, int64_t chunk,
                              bool training, uint64_t seed) {
  at::Tensor rows = h.view({-1, h.size(-1)});
  for (int64_t start = 0; start < rows.size(0); start += chunk) {
    at::Tensor slice = rows.narrow(0, start, std::min(chunk, rows.size(0) - start));
    slice.copy_(model::MlpHalf(layer, model_->config, slice, workspace_, training, seed));
  }
}

void Trainer::TiledMlpBackward(const model::DecoderLayer& layer, const at::Tensor& a,
                               at::Tensor& grad, int64_t chunk, uint64_t seed) {
  if (!grad.is_contiguous()) grad = grad.contiguous();
  at::Tensor rows = a.view({-1, a.size(-1)});
  at::Tensor grad_rows = grad.view({-1, grad.size(-1)});
  for (int64_t start = 0; start < rows.size(0); start += chunk) {
    const int64_t len = std::min(chunk, rows.size(0) - start);
    at::Tensor xs = rows.narrow(0, start, len).detach().requires_grad_(true);
    at::Tensor gs = grad_rows.narrow(0, start, len);
    model::MlpHalf(layer, model_->config, xs, workspace_, true, seed).backward(gs);
    gs.copy_(xs.grad());
  }
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
    const int64_t chunk = MlpChunk(h.size(0) * h.size(1));
    // What the stash keeps of a layer: its input, and with keep_mlp its
    // MLP's gate/up product (Note [Keeping the gate/up product]).
    enum Slot : int { kInput = 0, kGateUp, kNumSlots };
    const bool keep_mlp = KeepsMlp(h.size(0) * h.size(1), chunk);
    // Layers below the first trained one need no backward at all.
    const int64_t first = std::min(n - 1, std::max<int64_t>(0, layers_->FirstTrainedLayer()));
    ActivationStash stash(n, keep_mlp ? kNumSlots : 1, options_.activation_offload);
    // Layers from kept_from keep their product; from on_device it stays on
    // the device (Note [Where the kept products live]).
    const int64_t kept_from =
        std::max(first, options_.kept_mlp_layers < 0 ? 0 : n - options_.kept_mlp_layers);
    const int64_t on_device =
        options_.device_kept_mlp_layers < 0 ? n : n - options_.device_kept_mlp_layers;
    {
      c10::NoGradGuard no_grad;
      profile::ScopedPhase forward(profile::Phase::kNoGradForward, h);
      for (int64_t i = 0; i < n; ++i) {
        stash.Put(i, kInput, h);
        const model::DecoderLayer& layer = layers_->Acquire(i, false);
        if (chunk > 0 && model::MlpRowsIndependentOfTiling(layer, true)) {
          h = model::AttentionHalf(layer, cfg, h, attn, workspace_, true, seed_of(i));
          TiledMlpForward(layer, h, chunk, true, seed_of(i));
        } else if (keep_mlp && i >= kept_from && model::MlpKeepsGateUp(layer, cfg, true)) {
          at::Tensor gate_up;
          h = model::AttentionHalf(layer, cfg, h, attn, workspace_, true, seed_of(i));
          h = model::MlpHalf(layer, cfg, h, workspace_, true, seed_of(i), &gate_up);
          stash.Put(i, kGateUp, gate_up, /*may_offload=*/i < on_device);
          ++kept_products_;
          if (i >= on_device || !options_.activation_offload) ++device_kept_products_;
        } else {
          h = model::DecoderLayerForward(layer, cfg, h, attn, workspace_, true, seed_of(i));
        }
        layers_->Release(i, false);
      }
    }
    auto [loss_sum, grad] = HeadLossAndGrad(h, batch.labels, denominator);
    h = at::Tensor();  // the last layer's output: only its gradient is needed now
    profile::ScopedPhase walk(profile::Phase::kRecomputeBackward, grad);
    for (int64_t i = n - 1; i >= first; --i) {
      const model::DecoderLayer& layer = layers_->Acquire(i, true);
      at::Tensor x = stash.Take(i, kInput, grad.device()).detach();
      const bool needs_input_grad = i > first || layers_->TrainsEmbedding();
      if (needs_input_grad) x.requires_grad_(true);
      {
        c10::AutoGradMode grad_mode(true);
        if (chunk > 0 && model::MlpRowsIndependentOfTiling(layer, true)) {
          at::Tensor a = model::AttentionHalf(layer, cfg, x, attn, workspace_, true, seed_of(i));
          TiledMlpBackward(layer, a.detach(), grad, chunk, seed_of(i));
          // (Nothing to do when neither the first layer's input nor an
          // attention adapter needs a gradient.)
          if (a.requires_grad()) a.backward(grad);
        } else if (keep_mlp && stash.Has(i, kGateUp)) {
          // The attention half as in full; the MLP half rebuilt from the
          // kept product without its GEMMs.
          at::Tensor a = model::AttentionHalf(layer, cfg, x, attn, workspace_, true, seed_of(i));
          at::Tensor y = model::MlpHalfFromKept(
              layer, cfg, a, stash.Take(i, kGateUp, grad.device()), workspace_, seed_of(i));
          if (y.requires_grad()) y.backward(grad);
        } else {
          at::Tensor y =
              model::DecoderLayerForward(layer, cfg, x, attn, workspace_, true, seed_of(i));
          if (y.requires_grad()) y.backward(grad);
        }
      }
      if (needs_input_grad) grad = x.grad();
      layers_->Release(i, true);
    }
    if (layers_->TrainsEmbedding()) EmbedBackward(batch.input_ids, grad);
    return loss_sum;
  }
  // Without checkpointing: one graph through every layer, one backward.
  c10::AutoGradMode grad_mode(true);
  const at::Tensor embedded = h;
  if (layers_->TrainsEmbedding()) h.requires_grad_(true);
  for (int64_t i = 0; i < n; ++i) {
    const model::DecoderLayer& layer = layers_->Acquire(i, false);
    h = model::DecoderLayerForward(layer, cfg, h, attn, workspace_, true, seed_of(i));
  }
  auto [loss_sum, grad] = HeadLossAndGrad(h, batch.labels, denominator);
  h.backward(grad);
  for (int64_t i = n - 1; i >= 0; --i) layers_->Release(i, true);
  if (layers_->TrainsEmbedding()) EmbedBackward(batch.input_ids, embedded.grad());
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
  kept_products_ = device_kept_products_ = 0;
  for (size_t k = 0; k < micro_batches.size(); ++k) {
    loss_sum += MicroStep(micro_batches[k], denominator, base + k);
  }
  stats.loss = layers_->SumOverRanks(loss_sum) / denominator;
  stats.kept_mlp_products = kept_products_;
  stats.device_kept_mlp_products = device_kept_products_;
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
  // Evaluation at long context tiles the MLP as training does (no dropout
  // here, so rows are always independent).
  const int64_t chunk = MlpChunk(h.size(0) * h.size(1));
  for (int64_t i = 0; i < model_->config.num_layers; ++i) {
    const model::DecoderLayer& layer = layers_->Acquire(i, false);
    if (chunk > 0) {
      h = model::AttentionHalf(layer, model_->config, h, attn, workspace_, false, 0);
      TiledMlpForward(layer, h, chunk, false, 0);
    } else {
      h = model::DecoderLayerForward(layer, model_->config, h, attn, workspace_, false, 0);
    }
    layers_->Release(i, false);
  }
  return h;
}

std::pair<double, int64_t> Trainer::LossSum(const TrainBatch& batch) {
  at::Tensor h = ForwardNoGrad(batch);
  c10::NoGradGuard no_grad;
  const HeadWeights head = layers_->AcquireHead();
  at::Tensor normed = model::Norm(model_->config, h, head.norm);
  at::Tensor flat = normed.reshape({h.size(0) * h.size(1), h.size(2)});
  const LabelledRows labelled = FindLabelledRows(batch.labels);
  at::Tensor loss_sum = at::zeros({}, flat.options().dtype(at::kDouble));
  ForEachHeadChunk(labelled, [&](const at::Tensor& idx, const at::Tensor& targets) {
    at::Tensor logits = model::HeadLogits(model_->config, flat.index_select(0, idx), head.lm_head);
    loss_sum += at::cross_entropy_loss(logits, targets, {}, at::Reduction::Sum, kIgnoreIndex);
  });
  layers_->ReleaseHead(false);
  return {loss_sum.item<double>(), labelled.rows.numel()};
}

at::Tensor Trainer::Logits(const TrainBatch& batch) {
  at::Tensor h = ForwardNoGrad(batch);
  c10::NoGradGuard no_grad;
  const HeadWeights head = layers_->AcquireHead();
  h = model::Norm(model_->config, h, head.norm);
  at::Tensor logits = model::HeadLogits(model_->config, h, head.lm_head);
  layers_->ReleaseHead(false);
  return logits;
}

}  // namespace rigtune::train
