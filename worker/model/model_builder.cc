#include "worker/model/model_builder.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace rigtune::model {

absl::Status ValidateLoraOptions(const LoraOptions& lora) {
  if (!lora.enabled) return absl::OkStatus();
  if (lora.r < 1) return absl::InvalidArgumentError(absl::StrCat("lora.r: must be >= 1, got ", lora.r));
  if (!(lora.alpha > 0)) return absl::InvalidArgumentError("lora.alpha: must be > 0");
  if (lora.dropout < 0 || lora.dropout >= 1) {
    return absl::InvalidArgumentError("lora.dropout: must be in [0, 1)");
  }
  return absl::OkStatus();
}

absl::Status ValidateLoraTargets(const LoraOptions& lora, const ModelConfig& config) {
  const bool fused = config.fused_projections;
  std::vector<std::string> names;
  for (int p = 0; p < kNumProj; ++p) {
    if (ProjPresent(p, fused)) names.push_back(ProjName(p, fused));
  }
  for (const std::string& t : lora.target_modules) {
    if (std::find(names.begin(), names.end(), t) == names.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("lora.target_modules: unknown module '", t, "' for ", config.architecture,
                       " (its linears: ", absl::StrJoin(names, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> ResolveTargetModules(const std::vector<std::string>& targets,
                                              const ModelConfig& config) {
  if (!config.fused_projections) return targets;
  std::vector<std::string> all, sorted = targets;
  for (int p = 0; p < kNumProj; ++p) all.push_back(ProjName(p));
  std::sort(all.begin(), all.end());
  std::sort(sorted.begin(), sorted.end());
  if (sorted != all) return targets;
  std::vector<std::string> fused;
  for (int p = 0; p < kNumProj; ++p) {
    if (ProjPresent(p, true)) fused.push_back(ProjName(p, true));
  }
  return fused;
}

lora::LoraSpec LoraSpecFor(const LoraOptions& lora, int proj, bool fused) {
  if (!lora.enabled || !ProjPresent(proj, fused)) return {};
  const auto& t = lora.target_modules;
  const bool targeted =
      t.empty() || std::find(t.begin(), t.end(), ProjName(proj, fused)) != t.end();
  if (!targeted) return {};
  const double denom = lora.use_rslora ? std::sqrt(static_cast<double>(lora.r)) : lora.r;
  return lora::LoraSpec{lora.r, lora.alpha / denom, lora.dropout, lora.dora};
}

uint64_t MixSeed(uint64_t seed, int64_t layer, int64_t proj, int64_t purpose) {
  // splitmix64 over the packed coordinates: distinct inputs, unrelated streams.
  uint64_t z = seed ^ (static_cast<uint64_t>(layer + 1) * 0x9E3779B97F4A7C15ULL) ^
               (static_cast<uint64_t>(proj + 1) << 48) ^ (static_cast<uint64_t>(purpose) << 40);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFFULL;
}

std::vector<int64_t> ProjShape(const ModelConfig& c, int proj) {
  const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  if (c.fused_projections) {
    switch (proj) {
      case kQ: return {q + 2 * kv, c.hidden_size};  // qkv_proj: rows [q; k; v]
      case kGate: return {2 * c.intermediate_size, c.hidden_size};  // gate_up_proj: [gate; up]
      case kK:
      case kV:
      case kUp: return {0, c.hidden_size};  // absent (ProjPresent)
      default: break;
    }
  }
  switch (proj) {
    case kQ: return {q, c.hidden_size};
    case kK:
    case kV: return {kv, c.hidden_size};
    case kO: return {c.hidden_size, q};
    case kGate:
    case kUp: return {c.intermediate_size, c.hidden_size};
    default: return {c.hidden_size, c.intermediate_size};
  }
}

void SetLayerKind(const ModelConfig& config, int64_t i, DecoderLayer* layer) {
  layer->sliding = config.IsSlidingLayer(i);
  layer->activation = config.activation;
}

bool ProjHasBias(const ModelConfig& c, int proj) {
  if (proj == kQ || proj == kK || proj == kV) return c.qkv_bias;
  if (proj == kO) return c.o_bias;
  return c.mlp_bias;
}

namespace {

enum SeedPurpose { kWeightSeed = 1, kLoraSeed = 2 };

at::Tensor RandomNormal(std::vector<int64_t> shape, uint64_t seed, double std, at::Device device,
                        at::ScalarType dtype) {
  at::Generator gen = at::globalContext().defaultGenerator(device).clone();
  gen.set_current_seed(seed);
  auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  return at::empty(shape, opts).normal_(0.0, std, gen).to(dtype);
}

// Weights drawn from a seed straight into the base format on the target device: the same
// model for any number of ranks, since every tensor has its own seed.
class RandomSource : public ModelSource {
 public:
  RandomSource(ModelConfig config, BuildOptions options)
      : config_(std::move(config)), options_(std::move(options)) {
    UseContextLength(&config_, options_.context_length);
  }

  const ModelConfig& config() const override { return config_; }

  absl::StatusOr<LlamaModel> LoadShell() override {
    LlamaModel m;
    m.config = config_;
    m.dtype = options_.dtype;
    const at::Device dev = options_.device;
    m.embed_tokens = RandomNormal({config_.vocab_size, config_.hidden_size},
                                  MixSeed(options_.seed, -1, 0, kWeightSeed), kStd, dev, m.dtype);
    m.lm_head = config_.tie_word_embeddings
                    ? m.embed_tokens
                    : RandomNormal({config_.vocab_size, config_.hidden_size},
                                   MixSeed(options_.seed, -1, 1, kWeightSeed), kStd, dev, m.dtype);
    m.norm = NormWeight(config_.hidden_size);
    m.layers.resize(config_.num_layers);
    return m;
  }

  absl::StatusOr<DecoderLayer> LoadLayer(int64_t i) override {
    DecoderLayer layer;
    layer.input_layernorm = NormWeight(config_.hidden_size);
    layer.post_attention_layernorm = NormWeight(config_.hidden_size);
    if (config_.sandwich_norms) {
      layer.pre_feedforward_layernorm = NormWeight(config_.hidden_size);
      layer.post_feedforward_layernorm = NormWeight(config_.hidden_size);
    }
    if (config_.qk_norm) {
      layer.q_norm = NormWeight(config_.head_dim);
      layer.k_norm = NormWeight(config_.head_dim);
    }
    SetLayerKind(config_, i, &layer);
    for (int p = 0; p < kNumProj; ++p) {
      if (!ProjPresent(p, config_.fused_projections)) continue;
      at::Tensor w = RandomNormal(ProjShape(config_, p), MixSeed(options_.seed, i, p, kWeightSeed),
                                  kStd, options_.device, options_.dtype);
      auto q = quant::FrozenWeight::Make(w, options_.base, options_.dtype);
      if (!q.ok()) return q.status();
      at::Tensor bias;
      if (ProjHasBias(config_, p)) bias = at::zeros({w.size(0)}, w.options());
      layer.proj[p] = lora::QLoraLinear(
          *std::move(q), bias, LoraSpecFor(options_.lora, p, config_.fused_projections),
          MixSeed(options_.seed, i, p, kLoraSeed));
    }
    return layer;
  }

 private:
  static constexpr double kStd = 0.02;
  // An identity norm: weight 1, or 0 for Gemma's (1 + weight).
  at::Tensor NormWeight(int64_t n) const {
    auto opts = at::TensorOptions().dtype(options_.dtype).device(options_.device);
    return config_.norm_plus_one ? at::zeros({n}, opts) : at::ones({n}, opts);
  }
  ModelConfig config_;
  BuildOptions options_;
};

}  // namespace

std::unique_ptr<ModelSource> RandomModelSource(const ModelConfig& config,
                                               const BuildOptions& options) {
  return std::make_unique<RandomSource>(config, options);
}

absl::StatusOr<std::unique_ptr<ModelSource>> ModelSource::Open(const std::string& source,
                                                               const BuildOptions& options) {
  if (auto s = ValidateLoraOptions(options.lora); !s.ok()) return s;
  if (IsRandomSource(source)) {
    auto config = RandomModelConfig(source);
    if (!config.ok()) return config.status();
    if (auto s = ValidateLoraTargets(options.lora, *config); !s.ok()) return s;
    return RandomModelSource(*config, options);
  }
  return HfModelSource(source, options);
}

absl::StatusOr<LlamaModel> BuildModel(ModelSource& source, const BuildOptions& options) {
  auto m = source.LoadShell();
  if (!m.ok()) return m.status();
  const int64_t end = options.layer_end < 0 ? m->config.num_layers : options.layer_end;
  for (int64_t i = options.layer_begin; i < end; ++i) {
    auto layer = source.LoadLayer(i);
    if (!layer.ok()) return layer.status();
    m->layers[i] = *std::move(layer);
  }
  return m;
}

absl::StatusOr<LlamaModel> BuildModel(const std::string& source, const BuildOptions& options) {
  auto src = ModelSource::Open(source, options);
  if (!src.ok()) return src.status();
  return BuildModel(**src, options);
}

absl::StatusOr<LlamaModel> BuildRandomModel(const ModelConfig& config,
                                            const BuildOptions& options) {
  if (auto s = ValidateLoraOptions(options.lora); !s.ok()) return s;
  if (auto s = ValidateLoraTargets(options.lora, config); !s.ok()) return s;
  auto src = RandomModelSource(config, options);
  return BuildModel(*src, options);
}

absl::StatusOr<LlamaModel> LoadHfModel(const std::string& model_dir,
                                       const BuildOptions& options) {
  if (auto s = ValidateLoraOptions(options.lora); !s.ok()) return s;
  auto src = HfModelSource(model_dir, options);
  if (!src.ok()) return src.status();
  return BuildModel(**src, options);
}

}  // namespace rigtune::model
