// Full fine-tuning (train.method full): every tensor of the model trains.
//
// FullModelLayers is the LayerSource of a job that trains the whole model on
// one process. Every tensor (token embedding, every decoder layer's norms,
// linear weights and biases, the final norm, the LM head; a tied head is the
// embedding and trains once) becomes an autograd leaf in the compute dtype,
// and the linears' dense base weights multiply through at::linear (see
// QLoraLinear::weight_trains), so one backward leaves a gradient on each.
// AdamW updates float32 masters: with an fp32 compute dtype the tensors are
// their own masters; otherwise each has a float32 copy that AdamW updates
// and that is rounded back into the compute-dtype tensor after every step
// (Note [Masters for full fine-tuning] in full_finetune.cc).
//
// The state is keyed by Hugging Face tensor names ("model.embed_tokens.weight",
// "model.layers.3.mlp.down_proj.weight", ...), which is what checkpoints and
// the output folder (WriteModelFolder, model_folder.h) use.
//
//   ASSIGN_OR_RETURN(auto full, FullModelLayers::Create(&model));
//   Trainer trainer(&model, options, full.get());
#ifndef RIGTUNE_WORKER_TRAIN_FULL_FINETUNE_H_
#define RIGTUNE_WORKER_TRAIN_FULL_FINETUNE_H_

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/llama.h"
#include "worker/train/trainer.h"

namespace rigtune::train {

// One tensor of the model by its Hugging Face name.
struct NamedTensor {
  std::string name;
  at::Tensor tensor;  // shares storage (and autograd state) with the model's
};

// Every tensor of `model` by its Hugging Face name, in a fixed order: the
// embedding, each layer's norms, q/k norms, projection weights and biases,
// the final norm, then lm_head.weight unless the head is tied. Only the
// layers present in `model` (all of them for a whole model).
std::vector<NamedTensor> NamedModelTensors(const model::LlamaModel& model);
// The tensors of decoder layer i alone, named as NamedModelTensors names them.
std::vector<NamedTensor> NamedLayerTensors(const model::LlamaModel& model, int64_t i);

class FullModelLayers : public LayerSource {
 public:
  // Makes every tensor of `model` trainable. FAILED_PRECONDITION when a
  // linear is quantized (full fine-tuning needs train.base bf16) or carries
  // an adapter. `model` must outlive the result.
  static absl::StatusOr<std::unique_ptr<FullModelLayers>> Create(model::LlamaModel* model);
  // Only decoder layers `layers` (ascending) train, fully, in the compute
  // dtype; everything else stays frozen in whatever format it has
  // (train.method llama_pro: the inserted blocks). Those layers must be dense.
  static absl::StatusOr<std::unique_ptr<FullModelLayers>> CreateForLayers(
      model::LlamaModel* model, const std::vector<int64_t>& layers);

  at::Tensor AcquireEmbedding(bool) override { return model_->embed_tokens; }
  void ReleaseEmbedding(bool) override {}
  HeadWeights AcquireHead() override { return {model_->norm, model_->lm_head}; }
  void ReleaseHead(bool) override {}
  const model::DecoderLayer& Acquire(int64_t i, bool) override { return model_->layers[i]; }
  void Release(int64_t, bool) override {}
  bool TrainsEmbedding() const override { return trains_embedding_; }
  int64_t FirstTrainedLayer() const override { return first_layer_; }
  std::vector<at::Tensor> Parameters() override { return masters_; }
  std::vector<at::Tensor> Gradients() override;
  void ZeroGradients() override;
  void Update(AdamW& optimizer, const std::vector<at::Tensor>& grads, double lr,
              double grad_scale) override;

  // The trained tensors, in Parameters() order.
  const std::vector<NamedTensor>& tensors() const { return tensors_; }
  // The float32 masters by name, copied to the CPU (checkpoints).
  std::map<std::string, at::Tensor> MasterState() const;
  // The inverse: copies each master from `state` (any device, float32) and
  // rounds it into the compute-dtype tensor. INVALID_ARGUMENT names a
  // missing tensor or a shape that differs from the model's.
  absl::Status LoadMasterState(const std::map<std::string, at::Tensor>& state);

 private:
  explicit FullModelLayers(model::LlamaModel* model) : model_(model) {}
  // Marks tensors_ as autograd leaves and makes their masters.
  void MakeTrainable();
  // Rounds every master into its compute-dtype tensor (no-op for fp32).
  void CopyMastersToModel();

  model::LlamaModel* model_;
  bool trains_embedding_ = true;
  int64_t first_layer_ = 0;
  std::vector<NamedTensor> tensors_;  // compute dtype, autograd leaves
  std::vector<at::Tensor> masters_;   // float32; tensors_[k].tensor itself in fp32
};

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_FULL_FINETUNE_H_
