#include "worker/model/block_expansion.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace rigtune::model {

std::vector<int64_t> ExpansionPlan::InsertedLayers() const {
  std::vector<int64_t> out;
  for (int64_t j = 0; j < size(); ++j) {
    if (inserted[j]) out.push_back(j);
  }
  return out;
}

absl::StatusOr<ExpansionPlan> PlanBlockExpansion(int64_t num_layers, int64_t every) {
  if (every < 1 || every > num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("train.expand_every: must be between 1 and the model's ", num_layers,
                     " layers (a copy is inserted after every expand_every-th layer), got ",
                     every));
  }
  ExpansionPlan plan;
  for (int64_t i = 0; i < num_layers; ++i) {
    plan.source.push_back(i);
    plan.inserted.push_back(false);
    if ((i + 1) % every == 0) {
      plan.source.push_back(i);
      plan.inserted.push_back(true);
    }
  }
  return plan;
}

absl::StatusOr<LlamaModel> BuildExpandedModel(ModelSource& source, ModelSource& dense_source,
                                              const ExpansionPlan& plan) {
  if (!source.config().sliding_layers.empty()) {
    return absl::InvalidArgumentError(
        "train.method llama_pro: this model mixes sliding-window and full-attention layers "
        "(layer_types), which block expansion would reorder; use lora or dora");
  }
  auto m = source.LoadShell();
  if (!m.ok()) return m.status();
  m->config.num_layers = plan.size();
  m->layers.clear();
  m->layers.resize(plan.size());
  c10::NoGradGuard no_grad;
  for (int64_t j = 0; j < plan.size(); ++j) {
    const int64_t i = plan.source[j];
    auto layer = plan.inserted[j] ? dense_source.LoadLayer(i) : source.LoadLayer(i);
    if (!layer.ok()) return layer.status();
    if (plan.inserted[j]) {
      // The identity start: both residual branches output exactly zero.
      for (int p : {kO, kDown}) {
        lora::QLoraLinear& lin = layer->proj[p];
        if (!lin.weight().is_dense()) {
          return absl::InternalError("block expansion: the copy's source is not dense");
        }
        at::Tensor w = lin.weight().dense();
        w.zero_();
        if (lin.bias().defined()) {
          at::Tensor b = lin.bias();
          b.zero_();
        }
      }
    }
    m->layers[j] = *std::move(layer);
  }
  return m;
}

}  // namespace rigtune::model
