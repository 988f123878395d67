// Trainer: the explicit QLoRA training step on one process.
//
// With activation checkpointing (the default) a micro-step is a loop you can
// read: embed; run every layer under no-grad keeping only its input; compute
// the loss and its gradient through the final norm and a chunked LM head;
// then walk the layers backwards: recompute layer i with grad from its saved
// input, backpropagate, hand the input gradient to layer i-1. LoRA gradients
// accumulate in float32 on the adapters. After the last micro-batch of a step
// the gradients are clipped by global norm and AdamW updates the adapters.
//
// Layers are reached through a LayerSource so that FSDP can gather a layer
// just before use and free it afterwards; the single-device source just hands
// out the model's own layers.
#ifndef RIGTUNE_WORKER_TRAIN_TRAINER_H_
#define RIGTUNE_WORKER_TRAIN_TRAINER_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "worker/lora/qlora_linear.h"
#include "worker/model/llama.h"
#include "worker/plan/memory_plan.h"
#include "worker/train/optimizer.h"

namespace rigtune::train {

// One micro-batch. Labels follow the Hugging Face convention: labels[b, t] is
// the token at t; the loss compares the prediction made at t-1 with it, and
// -100 marks positions that are not trained on.
struct TrainBatch {
  at::Tensor input_ids;     // int64 [B, T]
  at::Tensor labels;        // int64 [B, T]
  at::Tensor position_ids;  // int64 [B, T]; undefined = 0..T-1 per row
  at::Tensor attention_mask;  // bool [B, 1, T, T]; undefined = causal
  // Packed rows: int32 example offsets in the flattened [B * T] tokens and
  // the longest example, for variable-length attention on CUDA.
  at::Tensor cu_seqlens;
  int64_t max_seqlen = 0;
};

struct TrainerOptions {
  bool activation_checkpointing = true;
  // With checkpointing on a GPU: keep each layer's saved input in pinned
  // host memory instead of on the device (copied back for its backward).
  bool activation_offload = false;
  double max_grad_norm = 1.0;
  AdamWOptions adamw;
  uint64_t seed = 42;  // dropout masks
  // Rows of the LM head evaluated at once (bounds the float32 logits buffer).
  int64_t head_chunk_tokens = 0;  // 0 = choose from the vocabulary size
  // Rows of the MLP run at once in the checkpointed step (long sequences;
  // Note [Row-tiled MLP] in trainer.cc). 0 = automatic: untiled unless the
  // micro-batch's MLP intermediates are large (plan::MlpChunkTokens).
  int64_t mlp_chunk_tokens = 0;
  // What the checkpointed step's recompute rebuilds (train.recompute): with
  // keep_mlp the no-grad forward keeps every grouped layer's MLP gate/up
  // product and the recompute skips the MLP's GEMMs (Note [Keeping the
  // gate/up product] in llama.cc); auto decides per micro-batch with
  // plan::KeepsMlpProducts.
  plan::Recompute recompute = plan::Recompute::kAuto;
  // With keep_mlp, how many of the top layers keep their product (-1: all),
  // and how many of those keep it on the device even with activation
  // offload (-1: none). run_job takes both from the memory plan (Note
  // [Where the kept products live] in memory_plan.cc).
  int64_t kept_mlp_layers = -1;
  int64_t device_kept_mlp_layers = -1;
  // This rank's share of the host's memory, for recompute auto; 0 = unknown.
  int64_t host_memory_bytes = 0;
};

struct StepStats {
  double loss = 0;             // mean over trained target tokens
  int64_t target_tokens = 0;   // positions that carried a label
  int64_t input_tokens = 0;    // non-padding input positions
  double grad_norm = 0;
  double learning_rate = 0;
  // Gate/up products the micro-batches' forwards kept (train.recompute
  // keep_mlp), and how many of them stayed on the device.
  int64_t kept_mlp_products = 0;
  int64_t device_kept_mlp_products = 0;
};

// The frozen weights after the last decoder layer.
struct HeadWeights {
  at::Tensor norm;     // [hidden]
  at::Tensor lm_head;  // [vocab, hidden]
};

// Where the trainer gets layer i (and the embedding and head) from, what the
// optimizer updates, and how numbers are summed across data-parallel ranks.
// The single-process source hands out the model's own tensors; FSDP
// (worker/dist) gathers a unit's shards before use, frees them after, and
// reduce-scatters LoRA gradients so that each rank updates only its shard.
class LayerSource {
 public:
  virtual ~LayerSource() = default;
  // The token embedding table [vocab, hidden] for one lookup; released
  // right after it (unless TrainsEmbedding(), backward never needs it).
  // `backward` marks the visit that backpropagates into the table: its
  // release hands the table's gradient over (FSDP reduce-scatters it).
  virtual at::Tensor AcquireEmbedding(bool backward) = 0;
  virtual void ReleaseEmbedding(bool backward) = 0;
  // Whether the embedding table trains (train.method full): then the
  // trainer backpropagates into it after the first layer's backward, with
  // the table acquired once more (requiring grad).
  virtual bool TrainsEmbedding() const { return false; }
  // The lowest decoder layer with anything to train: the backward walk
  // stops there (train.method llama_pro: the layers below the first new
  // block are frozen and need no input gradient).
  virtual int64_t FirstTrainedLayer() const { return 0; }
  // The final norm and LM head, for one micro-batch's loss and its backward.
  // `backward`: the loss was backpropagated through them (training, not
  // evaluation), so their gradients, where they train, are final.
  virtual HeadWeights AcquireHead() = 0;
  virtual void ReleaseHead(bool backward) = 0;
  // Called before layer i runs; `backward` marks the recompute+backward visit.
  virtual const model::DecoderLayer& Acquire(int64_t i, bool backward) = 0;
  // Called after the visit; in backward, the layer's LoRA gradients are final.
  virtual void Release(int64_t i, bool backward) = 0;
  // What AdamW updates (float32), and their gradients once a step's
  // micro-batches are done (same order).
  virtual std::vector<at::Tensor> Parameters() = 0;
  virtual std::vector<at::Tensor> Gradients() = 0;
  virtual void ZeroGradients() = 0;
  // Applies one AdamW step to Parameters() from `grads` times `grad_scale`
  // (the clipping coefficient). May return before the update is done (FSDP
  // with offload_optimizer updates on the host while the next step runs): a
  // later Acquire() of a layer waits for that layer's update, and
  // WaitForUpdate() for all of them.
  virtual void Update(AdamW& optimizer, const std::vector<at::Tensor>& grads, double lr,
                      double grad_scale) {
    optimizer.Step(grads, lr, grad_scale);
  }
  virtual void WaitForUpdate() {}
  // Sum over data-parallel ranks (identity for one process).
  virtual double SumOverRanks(double v) { return v; }
  // The global sum of squared gradient entries from this rank's share of
  // Gradients() (each entry counted once however the state is replicated).
  virtual double SumGradSquares(double local) { return local; }
};

class Trainer {
 public:
  // `model` must outlive the trainer. `layers` may be null: the model's own
  // layers and adapters are used.
  Trainer(model::LlamaModel* model, TrainerOptions options, LayerSource* layers = nullptr);
  ~Trainer();  // waits for an update still running (it uses the optimizer)

  // Forward + backward over `micro_batches` (gradient accumulation: the loss
  // is the mean over all their target tokens, on all ranks), then clip by
  // global norm and AdamW at `lr`.
  StepStats Step(const std::vector<TrainBatch>& micro_batches, double lr);

  // Forward + backward only; gradients stay on the adapters (tests, FSDP).
  StepStats ForwardBackward(const std::vector<TrainBatch>& micro_batches);

  // float32 logits [B, T, vocab] without gradients (evaluation, tests).
  at::Tensor Logits(const TrainBatch& batch);

  // Forward only, without dropout or gradients: the summed cross-entropy of
  // `batch`'s targets and their count, on this rank alone (the validation
  // loss; see evaluator.h). The LM head runs in chunks, as in training.
  std::pair<double, int64_t> LossSum(const TrainBatch& batch);
  // Sum over data-parallel ranks (collective under FSDP).
  double SumOverRanks(double v) { return layers_->SumOverRanks(v); }

  AdamW& optimizer() { return *optimizer_; }
  void ZeroGrad();
  int64_t steps_done() const { return optimizer_->step(); }
  lora::DequantWorkspace& workspace() { return workspace_; }
  model::LlamaModel& model() { return *model_; }

 private:
  // Returns the summed loss of one micro-batch, backpropagated with 1/denominator.
  double MicroStep(const TrainBatch& batch, double denominator, uint64_t micro_index);
  at::Tensor Embed(const at::Tensor& input_ids);
  // With a trained embedding: backpropagates `grad` (the first layer's
  // input gradient) into the embedding table.
  void EmbedBackward(const at::Tensor& input_ids, const at::Tensor& grad);
  // Every decoder layer without grad or dropout: the last layer's output.
  at::Tensor ForwardNoGrad(const TrainBatch& batch);
  int64_t HeadChunk() const;  // LM head rows per chunk
  // The positions of a [B, T] label batch that carry a target: `targets`
  // [B × (T-1)] (the label predicted at each position), `rows` the indices
  // into it that are not ignored, `sources` the matching rows of the
  // flattened [B × T] hidden states.
  struct LabelledRows {
    at::Tensor targets, rows, sources;
  };
  static LabelledRows FindLabelledRows(const at::Tensor& labels);
  // Calls `fn` for each chunk of at most HeadChunk() labelled rows, with
  // their hidden-state rows and their targets (training and evaluation
  // share it).
  void ForEachHeadChunk(
      const LabelledRows& labelled,
      const std::function<void(const at::Tensor& sources, const at::Tensor& targets)>& fn) const;
  // Rows per MLP chunk for a micro-batch of `tokens`, 0 = untiled.
  int64_t MlpChunk(int64_t tokens) const;
  // Whether a micro-batch of `tokens` (MLP chunks of `chunk` rows) keeps the
  // layers' gate/up products (options_.recompute resolved).
  bool KeepsMlp(int64_t tokens, int64_t chunk) const;
  // What MicroStep kept this step (StepStats::kept_mlp_products).
  int64_t kept_products_ = 0;
  int64_t device_kept_products_ = 0;
  // The MLP half of `layer` over `h` ([B, T, hidden], the attention half's
  // output), chunk by chunk, in place; no grad.
  void TiledMlpForward(const model::DecoderLayer& layer, at::Tensor& h, int64_t chunk,
                       bool training, uint64_t seed);
  // Recomputes and backpropagates the MLP half chunk by chunk from `a` (the
  // attention half's output, detached); `grad` (the layer output's
  // gradient) becomes a's gradient in place; LoRA gradients accumulate.
  void TiledMlpBackward(const model::DecoderLayer& layer, const at::Tensor& a, at::Tensor& grad,
                        int64_t chunk, uint64_t seed);
  model::AttentionInputs Attention(const TrainBatch& batch) const;
  // Loss sum of the head over `hidden` ([B,T,H], final layer output) and its
  // gradient scaled by 1/denominator.
  std::pair<double, at::Tensor> HeadLossAndGrad(const at::Tensor& hidden, const at::Tensor& labels,
                                                double denominator);

  model::LlamaModel* model_;
  TrainerOptions options_;
  LayerSource* layers_;
  std::unique_ptr<LayerSource> own_layers_;
  std::unique_ptr<AdamW> optimizer_;
  lora::DequantWorkspace workspace_;
};

// Number of positions whose label is trained on (labels[:, 1:] != -100).
int64_t CountTargets(const at::Tensor& labels);

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_TRAINER_H_
