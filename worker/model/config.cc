#include "worker/model/config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace rigtune::model {
namespace {

using json = nlohmann::json;

absl::Status FieldError(const std::string& origin, const std::string& field,
                        const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(origin, ": ", field, ": ", what));
}

// Reads an integer field; `required` fields must be present.
absl::Status ReadInt(const json& j, const std::string& origin, const char* field, bool required,
                     int64_t* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    return required ? FieldError(origin, field, "missing") : absl::OkStatus();
  }
  if (!it->is_number_integer()) return FieldError(origin, field, "must be an integer");
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

// Reads one rope parameter object (rope_parameters / rope_scaling, or one
// layer type's entry of Gemma 3's nested rope_parameters). `field` names it
// in errors.
absl::Status ReadRopeParams(const json& p, const std::string& origin, const std::string& field,
                            RopeConfig* rope) {
  if (auto it = p.find("rope_theta"); it != p.end() && it->is_number()) rope->theta = *it;
  std::string type = p.value("rope_type", p.value("type", std::string("default")));
  // Phi-3's early configs call longrope "su" (transformers renames it).
  if (type == "su") type = "longrope";
  if (type != "default" && type != "linear" && type != "llama3" && type != "longrope") {
    return FieldError(origin, field + ".rope_type",
                      absl::StrCat("unsupported rope type '", type,
                                   "' (supported: default, linear, llama3, longrope)"));
  }
  rope->type = type;
  if (type == "default") return absl::OkStatus();
  if (type == "longrope") {
    for (auto [name, out] : {std::pair{"short_factor", &rope->short_factor},
                             {"long_factor", &rope->long_factor}}) {
      auto it = p.find(name);
      if (it == p.end() || !it->is_array()) {
        return FieldError(origin, field + "." + name, "longrope needs a list of numbers");
      }
      out->clear();
      for (const json& v : *it) {
        if (!v.is_number() || !(v.get<double>() > 0)) {
          return FieldError(origin, field + "." + name, "must list positive numbers");
        }
        out->push_back(v.get<double>());
      }
    }
    // factor and attention_factor are derived in ReadRope when absent
    // (they depend on the top-level position counts); -1 marks absent.
    rope->factor = p.contains("factor") && p["factor"].is_number() ? p["factor"].get<double>() : -1;
    rope->attention_factor = p.contains("attention_factor") && p["attention_factor"].is_number()
                                 ? p["attention_factor"].get<double>()
                                 : -1;
    rope->original_max_position_embeddings = p.value("original_max_position_embeddings", -1);
    return absl::OkStatus();
  }
  rope->factor = p.value("factor", 1.0);
  if (!(rope->factor > 0)) return FieldError(origin, field + ".factor", "must be > 0");
  if (type == "llama3") {
    rope->low_freq_factor = p.value("low_freq_factor", 1.0);
    rope->high_freq_factor = p.value("high_freq_factor", 4.0);
    rope->original_max_position_embeddings = p.value("original_max_position_embeddings", 8192);
    if (rope->high_freq_factor <= rope->low_freq_factor) {
      return FieldError(origin, field + ".high_freq_factor", "must exceed low_freq_factor");
    }
  }
  return absl::OkStatus();
}

// longrope's values that transformers derives from the top-level config:
// the pre-training length (original_max_position_embeddings, in the rope
// parameters or beside them), factor = max positions / that length, and the
// attention factor sqrt(1 + ln(factor) / ln(length)) (1 when factor <= 1).
absl::Status FinishLongRope(const json& j, const std::string& origin, const std::string& field,
                            ModelConfig* c) {
  RopeConfig& rope = c->rope;
  if (rope.original_max_position_embeddings <= 0) {
    auto it = j.find("original_max_position_embeddings");
    if (it == j.end() || !it->is_number_integer() || it->get<int64_t>() <= 0) {
      return FieldError(origin, "original_max_position_embeddings",
                        "longrope needs the pre-training context length (a positive integer)");
    }
    rope.original_max_position_embeddings = it->get<int64_t>();
  }
  const double original = static_cast<double>(rope.original_max_position_embeddings);
  if (rope.factor <= 0) rope.factor = static_cast<double>(c->max_position_embeddings) / original;
  if (rope.attention_factor <= 0) {
    rope.attention_factor =
        rope.factor <= 1.0 ? 1.0 : std::sqrt(1.0 + std::log(rope.factor) / std::log(original));
  }
  const size_t half = static_cast<size_t>(c->RotaryDim() / 2);
  for (auto [name, factors] : {std::pair{"short_factor", &rope.short_factor},
                               {"long_factor", &rope.long_factor}}) {
    if (factors->size() != half) {
      return FieldError(origin, absl::StrCat(field, ".", name),
                        absl::StrCat("has ", factors->size(), " entries; the rotary dimension ",
                                     c->RotaryDim(), " needs ", half));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadRope(const json& j, const std::string& origin, ModelConfig* c) {
  // transformers >= 5 writes rope_parameters (with rope_theta inside); older
  // files have a top-level rope_theta and an optional rope_scaling. Gemma 3
  // nests one entry per layer type (full_attention, sliding_attention); its
  // older files give the local theta as rope_local_base_freq.
  RopeConfig* rope = &c->rope;
  if (auto it = j.find("rope_theta"); it != j.end() && it->is_number()) rope->theta = *it;
  if (c->has_local_rope) {
    if (auto it = j.find("rope_local_base_freq"); it != j.end() && it->is_number()) {
      c->local_rope.theta = *it;
    }
  }
  const json* params = nullptr;
  std::string field = "rope_parameters";
  if (auto it = j.find("rope_parameters"); it != j.end() && it->is_object()) params = &*it;
  if (auto it = j.find("rope_scaling"); params == nullptr && it != j.end() && it->is_object()) {
    params = &*it;
    field = "rope_scaling";
  }
  if (params == nullptr) return absl::OkStatus();
  const json& p = *params;
  const bool nested = p.contains("full_attention") || p.contains("sliding_attention");
  if (!nested) {
    if (auto s = ReadRopeParams(p, origin, field, rope); !s.ok()) return s;
    return rope->type == "longrope" ? FinishLongRope(j, origin, field, c) : absl::OkStatus();
  }
  if (!c->has_local_rope) {
    return FieldError(origin, field,
                      "per-layer-type rope parameters are only supported for Gemma 3");
  }
  if (auto it = p.find("full_attention"); it != p.end() && it->is_object()) {
    if (auto s = ReadRopeParams(*it, origin, field + ".full_attention", rope); !s.ok()) return s;
  }
  if (auto it = p.find("sliding_attention"); it != p.end() && it->is_object()) {
    if (auto s = ReadRopeParams(*it, origin, field + ".sliding_attention", &c->local_rope);
        !s.ok()) {
      return s;
    }
  }
  if (rope->type == "longrope" || c->local_rope.type == "longrope") {
    return FieldError(origin, field, "longrope is only supported as the model's one rope type");
  }
  return absl::OkStatus();
}

// An optional boolean: `fallback` when absent or null (transformers writes
// null for unset options), false for anything that is not true.
bool Flag(const json& j, const char* field, bool fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  return it->is_boolean() && it->get<bool>();
}

// Reads an optional number; null or absent keeps `*out`.
absl::Status ReadDouble(const json& j, const std::string& origin, const char* field,
                        double* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return FieldError(origin, field, "must be a number");
  *out = it->get<double>();
  return absl::OkStatus();
}

// Sliding-window layers from `layer_types` ("full_attention" |
// "sliding_attention" per layer), or the architecture's default pattern.
absl::Status ReadLayerTypes(const json& j, const std::string& origin, ModelConfig* c) {
  if (auto it = j.find("sliding_window"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() <= 0) {
      return FieldError(origin, "sliding_window", "must be a positive integer or null");
    }
    c->sliding_window = it->get<int64_t>();
  } else if (it != j.end()) {
    c->sliding_window = 0;  // null: no window
  }
  auto it = j.find("layer_types");
  if (it != j.end() && !it->is_null()) {
    if (!it->is_array() || static_cast<int64_t>(it->size()) != c->num_layers) {
      return FieldError(origin, "layer_types",
                        absl::StrCat("must list one type per layer (", c->num_layers, ")"));
    }
    c->sliding_layers.assign(c->num_layers, false);
    for (int64_t i = 0; i < c->num_layers; ++i) {
      const json& t = (*it)[i];
      const std::string type = t.is_string() ? t.get<std::string>() : "";
      if (type != "full_attention" && type != "sliding_attention") {
        return FieldError(origin, absl::StrCat("layer_types[", i, "]"),
                          "must be \"full_attention\" or \"sliding_attention\"");
      }
      c->sliding_layers[i] = type == "sliding_attention";
    }
  } else if (c->architecture == "Gemma2ForCausalLM" || c->architecture == "Gemma3ForCausalLM") {
    // transformers' defaults: Gemma 2 alternates (sliding first); Gemma 3
    // has one full layer every sliding_window_pattern layers.
    int64_t pattern = c->architecture == "Gemma2ForCausalLM" ? 2 : 6;
    if (c->architecture == "Gemma3ForCausalLM") {
      if (auto s = ReadInt(j, origin, "sliding_window_pattern", false, &pattern); !s.ok()) return s;
    }
    if (pattern <= 0) return FieldError(origin, "sliding_window_pattern", "must be > 0");
    c->sliding_layers.assign(c->num_layers, false);
    for (int64_t i = 0; i < c->num_layers; ++i) c->sliding_layers[i] = (i + 1) % pattern != 0;
  } else if ((c->architecture == "Qwen2ForCausalLM" || c->architecture == "Qwen3ForCausalLM") &&
             Flag(j, "use_sliding_window", false)) {
    // transformers' Qwen default: layers from max_window_layers on slide.
    int64_t full_layers = 28;
    if (auto s = ReadInt(j, origin, "max_window_layers", false, &full_layers); !s.ok()) return s;
    c->sliding_layers.assign(c->num_layers, false);
    for (int64_t i = full_layers; i < c->num_layers; ++i) c->sliding_layers[i] = true;
  } else if ((c->architecture == "MistralForCausalLM" || c->architecture == "Phi3ForCausalLM") &&
             c->sliding_window > 0) {
    c->sliding_layers.assign(c->num_layers, true);  // Mistral, Phi-3: every layer
  }
  if (c->architecture == "Qwen2ForCausalLM" || c->architecture == "Qwen3ForCausalLM") {
    // Qwen's layer_types mark sliding layers only when use_sliding_window.
    if (!Flag(j, "use_sliding_window", false)) c->sliding_layers.clear();
  }
  bool any = false;
  for (bool s : c->sliding_layers) any |= s;
  if (!any) c->sliding_layers.clear();
  if (any && c->sliding_window <= 0) {
    return FieldError(origin, "sliding_window",
                      "layer_types has sliding_attention layers but no window size");
  }
  if (Flag(j, "use_bidirectional_attention", false)) {
    return FieldError(origin, "use_bidirectional_attention",
                      "bidirectional attention is not supported (causal LM training only)");
  }
  return absl::OkStatus();
}

absl::Status Validate(const ModelConfig& c, const std::string& origin) {
  auto positive = [&](int64_t v, const char* name) {
    return v > 0 ? absl::OkStatus() : FieldError(origin, name, "must be > 0");
  };
  for (auto [v, name] : {std::pair{c.vocab_size, "vocab_size"}, {c.hidden_size, "hidden_size"},
                         {c.intermediate_size, "intermediate_size"},
                         {c.num_layers, "num_hidden_layers"},
                         {c.num_heads, "num_attention_heads"},
                         {c.num_kv_heads, "num_key_value_heads"}, {c.head_dim, "head_dim"}}) {
    if (auto s = positive(v, name); !s.ok()) return s;
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return FieldError(origin, "num_key_value_heads", "must divide num_attention_heads");
  }
  if (c.head_dim % 2 != 0) return FieldError(origin, "head_dim", "must be even (rotary)");
  if (c.RotaryDim() % 2 != 0 || c.RotaryDim() > c.head_dim) {
    return FieldError(origin, "partial_rotary_factor",
                      absl::StrCat("gives a rotary dimension of ", c.RotaryDim(),
                                   ", which must be even and at most head_dim (", c.head_dim,
                                   ")"));
  }
  return absl::OkStatus();
}

}  // namespace

int64_t ModelConfig::NumParameters() const {
  const int64_t q = num_heads * head_dim, kv = num_kv_heads * head_dim;
  const int64_t per_layer = hidden_size * (q + 2 * kv) + q * hidden_size +
                            3 * hidden_size * intermediate_size +
                            (sandwich_norms ? 4 : 2) * hidden_size + (qk_norm ? 2 * head_dim : 0);
  return num_layers * per_layer + vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2) +
         hidden_size;
}

void UseContextLength(ModelConfig* config, int64_t context) {
  RopeConfig& rope = config->rope;
  if (rope.type == "longrope") {
    rope.use_long_factor = context > rope.original_max_position_embeddings;
  }
}

bool IsRandomSource(const std::string& source) { return absl::StartsWith(source, "random:"); }

absl::StatusOr<ModelConfig> SourceModelConfig(const std::string& source) {
  return IsRandomSource(source) ? RandomModelConfig(source) : LoadModelConfig(source);
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& origin) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": not a JSON object"));
  }
  ModelConfig c;
  if (auto it = j.find("architectures"); it != j.end() && it->is_array() && !it->empty()) {
    c.architecture = (*it)[0].get<std::string>();
  } else if (auto mt = j.find("model_type"); mt != j.end() && mt->is_string()) {
    const std::string t = *mt;
    c.architecture = t == "qwen2"         ? "Qwen2ForCausalLM"
                     : t == "qwen3"       ? "Qwen3ForCausalLM"
                     : t == "mistral"     ? "MistralForCausalLM"
                     : t == "llama"       ? "LlamaForCausalLM"
                     : t == "gemma2"      ? "Gemma2ForCausalLM"
                     : t == "gemma3_text" ? "Gemma3ForCausalLM"
                     : t == "phi3"        ? "Phi3ForCausalLM"
                                          : t;
  }
  const std::string& arch = c.architecture;
  const bool qwen2 = arch == "Qwen2ForCausalLM", qwen3 = arch == "Qwen3ForCausalLM";
  const bool gemma2 = arch == "Gemma2ForCausalLM", gemma3 = arch == "Gemma3ForCausalLM";
  const bool gemma = gemma2 || gemma3;
  const bool phi3 = arch == "Phi3ForCausalLM";
  if (arch != "LlamaForCausalLM" && arch != "MistralForCausalLM" && !qwen2 && !qwen3 && !gemma &&
      !phi3) {
    return FieldError(origin, "architectures",
                      absl::StrCat("unsupported architecture '", arch,
                                   "' (supported: LlamaForCausalLM, MistralForCausalLM, "
                                   "Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, "
                                   "Gemma3ForCausalLM (text-only), Phi3ForCausalLM)"));
  }
  if (gemma3 && j.contains("text_config")) {
    return FieldError(origin, "text_config",
                      "a multimodal Gemma 3 checkpoint; only text-only Gemma3ForCausalLM "
                      "checkpoints are supported");
  }
  // Gemma names its activation hidden_activation (hidden_act in old files).
  const char* act_field = gemma && j.contains("hidden_activation") ? "hidden_activation"
                                                                  : "hidden_act";
  std::string act = gemma ? "gelu_pytorch_tanh" : "silu";
  if (auto it = j.find(act_field); it != j.end() && !it->is_null()) {
    if (!it->is_string()) return FieldError(origin, act_field, "must be a string");
    act = it->get<std::string>();
  }
  if (!gemma && act != "silu") {
    return FieldError(origin, act_field, absl::StrCat("'", act, "' is not supported (silu)"));
  }
  if (gemma && act != "gelu_pytorch_tanh") {
    return FieldError(origin, act_field,
                      absl::StrCat("'", act, "' is not supported (gelu_pytorch_tanh)"));
  }
  c.activation = gemma ? Activation::kGeluTanh : Activation::kSilu;
  // transformers' defaults for fields a file may leave out.
  if (gemma || qwen3) c.head_dim = gemma ? 256 : 128;
  for (auto [field, out, required] :
       {std::tuple{"vocab_size", &c.vocab_size, true}, {"hidden_size", &c.hidden_size, true},
        {"intermediate_size", &c.intermediate_size, true},
        {"num_hidden_layers", &c.num_layers, true}, {"num_attention_heads", &c.num_heads, true},
        {"num_key_value_heads", &c.num_kv_heads, false}, {"head_dim", &c.head_dim, false},
        {"max_position_embeddings", &c.max_position_embeddings, false},
        {"bos_token_id", &c.bos_token_id, false}, {"eos_token_id", &c.eos_token_id, false}}) {
    if (auto s = ReadInt(j, origin, field, required, out); !s.ok()) return s;
  }
  if (c.num_kv_heads == 0) c.num_kv_heads = c.num_heads;
  if (c.head_dim == 0 && c.num_heads > 0) c.head_dim = c.hidden_size / c.num_heads;
  if (auto s = ReadDouble(j, origin, "rms_norm_eps", &c.rms_norm_eps); !s.ok()) return s;
  c.tie_word_embeddings = Flag(j, "tie_word_embeddings", gemma);
  const bool attention_bias = Flag(j, "attention_bias", false);
  c.qkv_bias = qwen2 || attention_bias;
  c.o_bias = !qwen2 && attention_bias;
  c.mlp_bias = Flag(j, "mlp_bias", false);
  c.qk_norm = qwen3 || gemma3;
  if (gemma) {
    c.norm_plus_one = true;
    c.sandwich_norms = true;
    c.embed_scale = std::sqrt(static_cast<double>(c.hidden_size));
    double scalar = 256;
    if (auto s = ReadDouble(j, origin, "query_pre_attn_scalar", &scalar); !s.ok()) return s;
    if (!(scalar > 0)) return FieldError(origin, "query_pre_attn_scalar", "must be > 0");
    c.attention_scale = 1.0 / std::sqrt(scalar);
    c.sliding_window = 4096;
    if (gemma2) c.attn_softcap = 50.0, c.final_softcap = 30.0;
    for (auto [field, out] : {std::pair{"attn_logit_softcapping", &c.attn_softcap},
                              {"final_logit_softcapping", &c.final_softcap}}) {
      auto it = j.find(field);
      if (it != j.end() && it->is_null()) *out = 0.0;  // explicitly off
      if (auto s = ReadDouble(j, origin, field, out); !s.ok()) return s;
      if (*out < 0) return FieldError(origin, field, "must be > 0 or null");
    }
  }
  if (gemma3) {
    c.has_local_rope = true;
    c.rope.theta = 1000000.0;
    c.local_rope.theta = 10000.0;
  }
  if (phi3) {
    c.fused_projections = true;
    for (const char* field : {"resid_pdrop", "embd_pdrop", "attention_dropout"}) {
      double p = 0.0;
      if (auto s = ReadDouble(j, origin, field, &p); !s.ok()) return s;
      if (p != 0.0) {
        return FieldError(origin, field,
                          "dropout inside the base model is not supported (set it to 0.0)");
      }
    }
  }
  // Phi-4-mini: rotary over the first fraction of each head. transformers
  // reads it beside the rope parameters or inside them.
  double partial = 1.0;
  if (auto s = ReadDouble(j, origin, "partial_rotary_factor", &partial); !s.ok()) return s;
  const char* partial_field = "partial_rotary_factor";
  for (const char* rp : {"rope_parameters", "rope_scaling"}) {
    auto it = j.find(rp);
    if (it == j.end() || !it->is_object()) continue;
    if (auto p = it->find("partial_rotary_factor"); p != it->end() && p->is_number()) {
      partial = p->get<double>();
      partial_field = rp;
    }
    break;
  }
  if (!(partial > 0 && partial <= 1)) {
    return FieldError(origin, partial_field, "partial_rotary_factor must be in (0, 1]");
  }
  if (partial < 1) c.rotary_dim = static_cast<int64_t>(static_cast<double>(c.head_dim) * partial);
  if (auto s = ReadLayerTypes(j, origin, &c); !s.ok()) return s;
  if (auto s = ReadRope(j, origin, &c); !s.ok()) return s;
  if (auto s = Validate(c, origin); !s.ok()) return s;
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open (is '", model_dir, "' a Hugging Face model folder?)"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseModelConfig(ss.str(), path);
}

absl::StatusOr<ModelConfig> RandomModelConfig(const std::string& spec_in) {
  std::string spec(absl::StripPrefix(spec_in, "random:"));
  ModelConfig c;
  c.rms_norm_eps = 1e-5;
  bool preset_head_dim = false;  // a preset whose head_dim is not hidden / heads
  auto preset = [&](int64_t v, int64_t h, int64_t i, int64_t l, int64_t n, int64_t kv,
                    double theta, int64_t max_pos) {
    c.vocab_size = v, c.hidden_size = h, c.intermediate_size = i, c.num_layers = l;
    c.num_heads = n, c.num_kv_heads = kv, c.head_dim = h / n, c.rope.theta = theta;
    c.max_position_embeddings = max_pos;
    preset_head_dim = false;
  };
  std::vector<std::string> parts = absl::StrSplit(spec, ',', absl::SkipEmpty());
  for (const std::string& part : parts) {
    if (part.find('=') == std::string::npos) {
      if (part == "tiny") preset(256, 64, 128, 2, 4, 2, 10000, 2048);
      else if (part == "small") preset(4096, 512, 1376, 4, 8, 4, 10000, 4096);
      else if (part == "llama2-7b") preset(32000, 4096, 11008, 32, 32, 32, 10000, 4096);
      else if (part == "llama2-13b") preset(32000, 5120, 13824, 40, 40, 40, 10000, 4096);
      else if (part == "llama2-70b") preset(32000, 8192, 28672, 80, 64, 8, 10000, 4096);
      else if (part == "llama3-8b") preset(128256, 4096, 14336, 32, 32, 8, 500000, 8192);
      else if (part == "llama3.1-8b") {
        // Llama 3.1: the 8B shape with 131,072 positions through llama3 RoPE
        // scaling of the 8,192 it was pre-trained on.
        preset(128256, 4096, 14336, 32, 32, 8, 500000, 131072);
        c.rope = RopeConfig();
        c.rope.theta = 500000, c.rope.type = "llama3", c.rope.factor = 8.0;
        c.rope.low_freq_factor = 1.0, c.rope.high_freq_factor = 4.0;
        c.rope.original_max_position_embeddings = 8192;
      } else if (part == "llama3.2-1b") {
        // Llama 3.2 1B: tied embeddings, llama3 RoPE scaling by 32 of 8,192.
        preset(128256, 2048, 8192, 16, 32, 8, 500000, 131072);
        c.rope = RopeConfig();
        c.rope.theta = 500000, c.rope.type = "llama3", c.rope.factor = 32.0;
        c.rope.low_freq_factor = 1.0, c.rope.high_freq_factor = 4.0;
        c.rope.original_max_position_embeddings = 8192;
        c.tie_word_embeddings = true;
      } else if (part == "llama3-70b") preset(128256, 8192, 28672, 80, 64, 8, 500000, 8192);
      else if (part == "mistral-7b") preset(32000, 4096, 14336, 32, 32, 8, 1000000, 32768);
      else if (part == "mistral-nemo-12b") {
        // head_dim 128 with 32 heads: q is 4096 wide on a 5120 residual.
        preset(131072, 5120, 14336, 40, 32, 8, 1000000, 131072);
        c.architecture = "MistralForCausalLM", c.head_dim = 128, preset_head_dim = true;
      } else if (part == "qwen2.5-7b") {
        preset(152064, 3584, 18944, 28, 28, 4, 1000000, 32768);
        c.architecture = "Qwen2ForCausalLM", c.qkv_bias = true;
      } else if (part == "qwen3-8b") {
        preset(151936, 4096, 12288, 36, 32, 8, 1000000, 40960);
        c.architecture = "Qwen3ForCausalLM", c.head_dim = 128, c.qk_norm = true;
        preset_head_dim = true;
      } else if (part == "gemma2-9b" || part == "gemma3-1b") {
        const bool g2 = part == "gemma2-9b";
        if (g2) preset(256000, 3584, 14336, 42, 16, 8, 10000, 8192);
        else preset(262144, 1152, 6912, 26, 4, 1, 1000000, 32768);
        c.architecture = g2 ? "Gemma2ForCausalLM" : "Gemma3ForCausalLM";
        c.head_dim = 256, c.activation = Activation::kGeluTanh, c.norm_plus_one = true;
        preset_head_dim = true;
        c.sandwich_norms = true, c.tie_word_embeddings = true;
        c.attention_scale = 1.0 / 16.0;  // query_pre_attn_scalar 256
        c.sliding_window = g2 ? 4096 : 512;
        c.attn_softcap = g2 ? 50.0 : 0.0, c.final_softcap = g2 ? 30.0 : 0.0;
        c.qk_norm = !g2, c.has_local_rope = !g2, c.local_rope.theta = 10000;
        c.sliding_layers.assign(c.num_layers, false);
        for (int64_t i = 0; i < c.num_layers; ++i) c.sliding_layers[i] = (i + 1) % (g2 ? 2 : 6);
      } else if (part == "phi3-mini") {
        // Phi-3-mini (3.8B): fused qkv_proj / gate_up_proj, 32 heads of 96.
        preset(32064, 3072, 8192, 32, 32, 32, 10000, 4096);
        c.architecture = "Phi3ForCausalLM", c.fused_projections = true;
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            "model: unknown random preset '", part,
            "' (known: tiny, small, llama2-7b, llama2-13b, llama2-70b, llama3-8b, llama3.1-8b, "
            "llama3.2-1b, llama3-70b, mistral-7b, mistral-nemo-12b, qwen2.5-7b, qwen3-8b, gemma2-9b, "
            "gemma3-1b, phi3-mini, or key=value sizes)"));
      }
      continue;
    }
    std::pair<std::string, std::string> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    int64_t v = 0;
    if (!absl::SimpleAtoi(kv.second, &v) || v <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("model: random:", kv.first, " must be a positive integer"));
    }
    if (kv.first == "layers") c.num_layers = v;
    else if (kv.first == "hidden") c.hidden_size = v;
    else if (kv.first == "intermediate") c.intermediate_size = v;
    else if (kv.first == "heads") c.num_heads = v;
    else if (kv.first == "kv_heads") c.num_kv_heads = v;
    else if (kv.first == "vocab") c.vocab_size = v;
    else if (kv.first == "head_dim") c.head_dim = v;
    else if (kv.first == "tied") c.tie_word_embeddings = true;  // the LM head is the embedding
    else {
      return absl::InvalidArgumentError(absl::StrCat(
          "model: unknown random size '", kv.first,
          "' (known: layers, hidden, intermediate, heads, kv_heads, vocab, head_dim, tied=1)"));
    }
  }
  if (c.num_kv_heads == 0) c.num_kv_heads = c.num_heads;
  // hidden / heads unless the spec or its preset sets head_dim; a size
  // override of a preset with its own head_dim (Gemma, Qwen3) keeps it.
  const bool explicit_head_dim = spec.find("head_dim=") != std::string::npos;
  if (c.num_heads > 0 && !explicit_head_dim && (c.head_dim == 0 || !preset_head_dim)) {
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (static_cast<int64_t>(c.sliding_layers.size()) != c.num_layers) {
    // "layers=N" after a sliding-window preset: extend its pattern.
    std::vector<bool> pattern = c.sliding_layers;
    c.sliding_layers.clear();
    if (!pattern.empty()) {
      const int64_t period = c.architecture == "Gemma2ForCausalLM" ? 2 : 6;
      for (int64_t i = 0; i < c.num_layers; ++i) c.sliding_layers.push_back((i + 1) % period != 0);
    }
  }
  if (c.norm_plus_one) {  // Gemma
    c.embed_scale = std::sqrt(static_cast<double>(c.hidden_size));
  }
  if (auto s = Validate(c, "model (random:" + spec + ")"); !s.ok()) return s;
  return c;
}

}  // namespace rigtune::model
