#include "worker/train/full_finetune.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/model/config.h"

namespace rigtune::train {

// Note [Masters for full fine-tuning]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// The forward and backward run in the compute dtype (bf16 on GPUs), so the
// tensors the layers read are compute-dtype autograd leaves and their
// gradients arrive in that dtype. AdamW needs float32: an update of 1e-5 on a
// weight of 1 vanishes in bf16's 8-bit mantissa. So each tensor has a
// float32 master that AdamW updates (its gradient widened to float32 first),
// and after the step the master is rounded into the compute-dtype tensor in
// place, so the next forward sees it. This is mixed-precision training as
// PyTorch's FSDP MixedPrecision does it (bf16 params for compute, float32
// for the optimizer). In fp32 the tensor is its own master (no copy). A
// checkpoint stores the masters, so a resumed run continues from the exact
// float32 values, not from their rounding.

std::vector<NamedTensor> NamedLayerTensors(const model::LlamaModel& m, int64_t i) {
  std::vector<NamedTensor> out;
  const model::DecoderLayer& layer = m.layers[i];
  const std::string base = absl::StrCat("model.layers.", i, ".");
  auto add = [&](const char* name, const at::Tensor& t) {
    if (t.defined()) out.push_back({base + name, t});
  };
  add("input_layernorm.weight", layer.input_layernorm);
  add("post_attention_layernorm.weight", layer.post_attention_layernorm);
  add("pre_feedforward_layernorm.weight", layer.pre_feedforward_layernorm);
  add("post_feedforward_layernorm.weight", layer.post_feedforward_layernorm);
  add("self_attn.q_norm.weight", layer.q_norm);
  add("self_attn.k_norm.weight", layer.k_norm);
  const bool fused = m.config.fused_projections;
  for (int p = 0; p < model::kNumProj; ++p) {
    if (!model::ProjPresent(p, fused)) continue;  // Phi-3: k, v and up live in the fused slots
    const lora::QLoraLinear& lin = layer.proj[p];
    const std::string path = model::ProjPath(p, fused);
    if (lin.weight().is_dense()) out.push_back({base + path + ".weight", lin.weight().dense()});
    if (lin.bias().defined()) out.push_back({base + path + ".bias", lin.bias()});
  }
  return out;
}

std::vector<NamedTensor> NamedModelTensors(const model::LlamaModel& m) {
  std::vector<NamedTensor> out;
  out.push_back({"model.embed_tokens.weight", m.embed_tokens});
  for (int64_t i = 0; i < static_cast<int64_t>(m.layers.size()); ++i) {
    std::vector<NamedTensor> layer = NamedLayerTensors(m, i);
    out.insert(out.end(), layer.begin(), layer.end());
  }
  out.push_back({"model.norm.weight", m.norm});
  if (!m.lm_head.is_same(m.embed_tokens)) out.push_back({"lm_head.weight", m.lm_head});
  return out;
}

namespace {

// FAILED_PRECONDITION unless every linear of layer i is dense and bare.
absl::Status CheckTrainable(const model::LlamaModel& m, int64_t i) {
  const bool fused = m.config.fused_projections;
  for (int p = 0; p < model::kNumProj; ++p) {
    if (!model::ProjPresent(p, fused)) continue;
    const lora::QLoraLinear& lin = m.layers[i].proj[p];
    if (!lin.weight().is_dense()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "layer ", i, " ", model::ProjPath(p, fused), " is stored as ",
          quant::BaseFormatName(lin.weight().format()),
          "; training a weight itself needs it dense (train.method full needs train.base bf16)"));
    }
    if (lin.has_adapter()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "layer ", i, " ", model::ProjPath(p, fused),
          " carries a LoRA adapter; build the model without adapters (LoraOptions::enabled)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<FullModelLayers>> FullModelLayers::CreateForLayers(
    model::LlamaModel* m, const std::vector<int64_t>& layers) {
  std::unique_ptr<FullModelLayers> out(new FullModelLayers(m));
  out->trains_embedding_ = false;
  out->first_layer_ = layers.empty() ? static_cast<int64_t>(m->layers.size()) : layers.front();
  for (int64_t i : layers) {
    if (i < 0 || i >= static_cast<int64_t>(m->layers.size())) {
      return absl::InvalidArgumentError(absl::StrCat("no decoder layer ", i));
    }
    if (auto s = CheckTrainable(*m, i); !s.ok()) return s;
    std::vector<NamedTensor> named = NamedLayerTensors(*m, i);
    out->tensors_.insert(out->tensors_.end(), named.begin(), named.end());
  }
  out->MakeTrainable();
  return out;
}

void FullModelLayers::MakeTrainable() {
  for (NamedTensor& t : tensors_) {
    // Loaded tensors are plain leaves; they become trainable here (every
    // holder of the tensor shares the flag).
    t.tensor.set_requires_grad(true);
    masters_.push_back(t.tensor.scalar_type() == at::kFloat
                           ? t.tensor
                           : t.tensor.detach().to(at::kFloat).contiguous());
  }
}

absl::StatusOr<std::unique_ptr<FullModelLayers>> FullModelLayers::Create(model::LlamaModel* m) {
  for (int64_t i = 0; i < static_cast<int64_t>(m->layers.size()); ++i) {
    if (auto s = CheckTrainable(*m, i); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("train.method full: ", s.message()));
    }
  }
  std::unique_ptr<FullModelLayers> layers(new FullModelLayers(m));
  layers->tensors_ = NamedModelTensors(*m);
  layers->MakeTrainable();
  return layers;
}

std::vector<at::Tensor> FullModelLayers::Gradients() {
  std::vector<at::Tensor> grads;
  grads.reserve(tensors_.size());
  for (size_t k = 0; k < tensors_.size(); ++k) {
    const at::Tensor& g = tensors_[k].tensor.grad();
    if (!g.defined()) {
      grads.push_back(at::zeros_like(masters_[k]));
    } else {
      grads.push_back(g.scalar_type() == at::kFloat ? g : g.to(at::kFloat));
    }
  }
  return grads;
}

void FullModelLayers::ZeroGradients() {
  for (NamedTensor& t : tensors_) {
    if (t.tensor.grad().defined()) t.tensor.mutable_grad() = at::Tensor();
  }
}

void FullModelLayers::CopyMastersToModel() {
  c10::NoGradGuard no_grad;
  for (size_t k = 0; k < tensors_.size(); ++k) {
    if (!masters_[k].is_same(tensors_[k].tensor)) tensors_[k].tensor.copy_(masters_[k]);
  }
}

void FullModelLayers::Update(AdamW& optimizer, const std::vector<at::Tensor>& grads, double lr,
                             double grad_scale) {
  optimizer.Step(grads, lr, grad_scale);
  CopyMastersToModel();
}

std::map<std::string, at::Tensor> FullModelLayers::MasterState() const {
  std::map<std::string, at::Tensor> out;
  for (size_t k = 0; k < tensors_.size(); ++k) {
    out[tensors_[k].name] = masters_[k].detach().to(at::kCPU).clone();
  }
  return out;
}

absl::Status FullModelLayers::LoadMasterState(const std::map<std::string, at::Tensor>& state) {
  c10::NoGradGuard no_grad;
  for (size_t k = 0; k < tensors_.size(); ++k) {
    auto it = state.find(tensors_[k].name);
    if (it == state.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(tensors_[k].name, ": missing (was the checkpoint written by another "
                                         "train.method or model?)"));
    }
    if (it->second.sizes() != masters_[k].sizes()) {
      return absl::InvalidArgumentError(
          absl::StrCat(tensors_[k].name, " has shape ", c10::str(it->second.sizes()),
                       ", the model expects ", c10::str(masters_[k].sizes())));
    }
    masters_[k].copy_(it->second);
  }
  CopyMastersToModel();
  return absl::OkStatus();
}

}  // namespace rigtune::train
