// HfModelSource: a Hugging Face model folder as a ModelSource.
//
// Each tensor is read from the memory-mapped safetensors files only when it
// is needed, moved to the target device in its stored dtype and quantized
// there, so host memory holds one tensor at a time. Linears already stored in
// bitsandbytes' 4-bit layout ("bnb-4bit" checkpoints) are taken as they are.
#include <ATen/ATen.h>

#include <map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/model/model_builder.h"
#include "worker/model/safetensors.h"

namespace rigtune::model {
namespace {

constexpr const char* kBnbStateSuffix = ".weight.quant_state.bitsandbytes__nf4";

class HfSource : public ModelSource {
 public:
  HfSource(ModelConfig config, SafetensorsModel files, BuildOptions options)
      : config_(std::move(config)), files_(std::move(files)), options_(std::move(options)) {
    UseContextLength(&config_, options_.context_length);
  }

  const ModelConfig& config() const override { return config_; }

  absl::StatusOr<LlamaModel> LoadShell() override {
    LlamaModel m;
    m.config = config_;
    m.dtype = options_.dtype;
    auto embed = ReadTo("model.embed_tokens.weight");
    if (!embed.ok()) return embed.status();
    m.embed_tokens = *embed;
    if (config_.tie_word_embeddings) {
      m.lm_head = m.embed_tokens;
    } else {
      auto head = ReadTo("lm_head.weight");
      if (!head.ok()) return head.status();
      m.lm_head = *head;
    }
    auto norm = ReadTo("model.norm.weight");
    if (!norm.ok()) return norm.status();
    m.norm = *norm;
    m.layers.resize(config_.num_layers);
    return m;
  }

  absl::StatusOr<DecoderLayer> LoadLayer(int64_t i) override {
    const std::string base = absl::StrCat("model.layers.", i, ".");
    DecoderLayer layer;
    auto in_norm = ReadTo(base + "input_layernorm.weight");
    if (!in_norm.ok()) return in_norm.status();
    auto post_norm = ReadTo(base + "post_attention_layernorm.weight");
    if (!post_norm.ok()) return post_norm.status();
    layer.input_layernorm = *in_norm;
    layer.post_attention_layernorm = *post_norm;
    std::vector<std::pair<std::string, at::Tensor*>> extra;
    if (config_.sandwich_norms) {
      extra.emplace_back("pre_feedforward_layernorm.weight", &layer.pre_feedforward_layernorm);
      extra.emplace_back("post_feedforward_layernorm.weight", &layer.post_feedforward_layernorm);
    }
    if (config_.qk_norm) {
      extra.emplace_back("self_attn.q_norm.weight", &layer.q_norm);
      extra.emplace_back("self_attn.k_norm.weight", &layer.k_norm);
    }
    for (auto& [name, out] : extra) {
      auto t = ReadTo(base + name);
      if (!t.ok()) return t.status();
      *out = *t;
    }
    SetLayerKind(config_, i, &layer);
    const bool fused = config_.fused_projections;
    for (int p = 0; p < kNumProj; ++p) {
      if (!ProjPresent(p, fused)) continue;
      const std::string prefix = base + ProjPath(p, fused);
      auto w = ReadLinear(prefix);
      if (!w.ok()) return w.status();
      if (w->shape() != ProjShape(config_, p)) {
        return absl::InvalidArgumentError(absl::StrCat(
            prefix, ".weight: shape ", c10::str(c10::IntArrayRef(w->shape())),
            " does not match config.json (expected ",
            c10::str(c10::IntArrayRef(ProjShape(config_, p))), ")"));
      }
      at::Tensor bias;
      if (ProjHasBias(config_, p)) {
        auto b = ReadTo(prefix + ".bias");
        if (!b.ok()) return b.status();
        bias = *b;
      }
      layer.proj[p] = lora::QLoraLinear(*std::move(w), bias, LoraSpecFor(options_.lora, p, fused),
                                        MixSeed(options_.seed, i, p, /*kLoraSeed=*/2));
    }
    return layer;
  }

 private:
  absl::StatusOr<at::Tensor> ReadTo(const std::string& name) const {
    auto t = files_.Read(name);
    if (!t.ok()) return t.status();
    return t->to(options_.device).to(options_.dtype);
  }

  absl::StatusOr<quant::FrozenWeight> ReadLinear(const std::string& prefix) const {
    if (files_.Contains(prefix + kBnbStateSuffix)) {
      if (options_.base != quant::BaseFormat::kNf4) {
        return absl::InvalidArgumentError(absl::StrCat(
            prefix, ".weight: stored in bitsandbytes 4-bit, which only train.base nf4 can use ",
            "(train.base is ", quant::BaseFormatName(options_.base),
            "); point model at the unquantized checkpoint"));
      }
      std::map<std::string, at::Tensor> state;
      for (const char* suffix : {".weight", ".weight.absmax", ".weight.quant_map",
                                 ".weight.nested_absmax", ".weight.nested_quant_map",
                                 kBnbStateSuffix}) {
        const std::string key = prefix + suffix;
        if (!files_.Contains(key)) continue;
        auto t = files_.Read(key);
        if (!t.ok()) return t.status();
        state[key] = *t;
      }
      auto w = quant::Nf4Tensor::FromStateDict(state, prefix);
      if (!w.ok()) return w.status();
      return quant::FrozenWeight(w->To(options_.device));
    }
    auto w = files_.Read(prefix + ".weight");
    if (!w.ok()) return w.status();
    return quant::FrozenWeight::Make(w->to(options_.device), options_.base, options_.dtype);
  }

  ModelConfig config_;
  SafetensorsModel files_;
  BuildOptions options_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ModelSource>> HfModelSource(const std::string& model_dir,
                                                           const BuildOptions& options) {
  auto config = LoadModelConfig(model_dir);
  if (!config.ok()) return config.status();
  if (auto s = ValidateLoraTargets(options.lora, *config); !s.ok()) return s;
  auto files = SafetensorsModel::Open(model_dir);
  if (!files.ok()) return files.status();
  return std::unique_ptr<ModelSource>(
      std::make_unique<HfSource>(*std::move(config), *std::move(files), options));
}

}  // namespace rigtune::model
