#include "worker/model/block_expansion.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <memory>
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

namespace {

class ExpandedSource : public ModelSource {
 public:
  ExpandedSource(ModelSource& source, ModelSource& dense_source, ExpansionPlan plan)
      : source_(source), dense_source_(dense_source), plan_(std::move(plan)),
        config_(source.config()) {
    config_.num_layers = plan_.size();
  }

  const ModelConfig& config() const override { return config_; }

  absl::StatusOr<LlamaModel> LoadShell() override {
    auto m = source_.LoadShell();
    if (!m.ok()) return m.status();
    m->config.num_layers = plan_.size();
    m->layers.clear();
    m->layers.resize(plan_.size());
    return m;
  }

  absl::StatusOr<DecoderLayer> LoadLayer(int64_t j) override {
    if (j < 0 || j >= plan_.size()) {
      return absl::InvalidArgumentError(absl::StrCat("no decoder layer ", j));
    }
    const int64_t i = plan_.source[j];
    if (!plan_.inserted[j]) return source_.LoadLayer(i);
    auto layer = dense_source_.LoadLayer(i);
    if (!layer.ok()) return layer.status();
    // The identity start: both residual branches output exactly zero.
    c10::NoGradGuard no_grad;
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
    return layer;
  }

 private:
  ModelSource& source_;
  ModelSource& dense_source_;
  ExpansionPlan plan_;
  ModelConfig config_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ModelSource>> ExpandedModelSource(ModelSource& source,
                                                                ModelSource& dense_source,
                                                                const ExpansionPlan& plan) {
  if (!source.config().sliding_layers.empty()) {
    return absl::InvalidArgumentError(
        "train.method llama_pro: this model mixes sliding-window and full-attention layers "
        "(layer_types), which block expansion would reorder; use lora or dora");
  }
  return std::unique_ptr<ModelSource>(new ExpandedSource(source, dense_source, plan));
}

absl::StatusOr<LlamaModel> BuildExpandedModel(ModelSource& source, ModelSource& dense_source,
                                              const ExpansionPlan& plan) {
  auto expanded = ExpandedModelSource(source, dense_source, plan);
  if (!expanded.ok()) return expanded.status();
  auto m = (*expanded)->LoadShell();
  if (!m.ok()) return m.status();
  for (int64_t j = 0; j < plan.size(); ++j) {
    auto layer = (*expanded)->LoadLayer(j);
    if (!layer.ok()) return layer.status();
    m->layers[j] = *std::move(layer);
  }
  return m;
}

}  // namespace rigtune::model
