#include "worker/model/config.h"

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

absl::Status ReadRope(const json& j, const std::string& origin, RopeConfig* rope) {
  // transformers >= 5 writes rope_parameters (with rope_theta inside); older
  // files have a top-level rope_theta and an optional rope_scaling.
  const json* params = nullptr;
  if (auto it = j.find("rope_parameters"); it != j.end() && it->is_object()) params = &*it;
  if (auto it = j.find("rope_scaling"); params == nullptr && it != j.end() && it->is_object()) {
    params = &*it;
  }
  if (auto it = j.find("rope_theta"); it != j.end() && it->is_number()) rope->theta = *it;
  if (params == nullptr) return absl::OkStatus();
  const json& p = *params;
  if (auto it = p.find("rope_theta"); it != p.end() && it->is_number()) rope->theta = *it;
  std::string type = p.value("rope_type", p.value("type", std::string("default")));
  if (type != "default" && type != "linear" && type != "llama3") {
    return FieldError(origin, "rope_parameters.rope_type",
                      absl::StrCat("unsupported rope type '", type,
                                   "' (supported: default, linear, llama3)"));
  }
  rope->type = type;
  if (type == "default") return absl::OkStatus();
  rope->factor = p.value("factor", 1.0);
  if (!(rope->factor > 0)) return FieldError(origin, "rope_parameters.factor", "must be > 0");
  if (type == "llama3") {
    rope->low_freq_factor = p.value("low_freq_factor", 1.0);
    rope->high_freq_factor = p.value("high_freq_factor", 4.0);
    rope->original_max_position_embeddings = p.value("original_max_position_embeddings", 8192);
    if (rope->high_freq_factor <= rope->low_freq_factor) {
      return FieldError(origin, "rope_parameters.high_freq_factor", "must exceed low_freq_factor");
    }
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
  return absl::OkStatus();
}

}  // namespace

int64_t ModelConfig::NumParameters() const {
  const int64_t q = num_heads * head_dim, kv = num_kv_heads * head_dim;
  const int64_t per_layer = hidden_size * (q + 2 * kv) + q * hidden_size +
                            3 * hidden_size * intermediate_size + 2 * hidden_size;
  return num_layers * per_layer + vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2) +
         hidden_size;
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
    c.architecture = t == "qwen2" ? "Qwen2ForCausalLM"
                     : t == "mistral" ? "MistralForCausalLM"
                     : t == "llama"   ? "LlamaForCausalLM"
                                      : t;
  }
  const bool qwen2 = c.architecture == "Qwen2ForCausalLM";
  if (c.architecture != "LlamaForCausalLM" && c.architecture != "MistralForCausalLM" && !qwen2) {
    return FieldError(origin, "architectures",
                      absl::StrCat("unsupported architecture '", c.architecture,
                                   "' (supported: LlamaForCausalLM, MistralForCausalLM, "
                                   "Qwen2ForCausalLM)"));
  }
  std::string act = j.value("hidden_act", std::string("silu"));
  if (act != "silu") return FieldError(origin, "hidden_act", "only silu is supported");
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
  c.rms_norm_eps = j.value("rms_norm_eps", 1e-6);
  c.tie_word_embeddings = j.value("tie_word_embeddings", false);
  const bool attention_bias = j.value("attention_bias", false);
  c.qkv_bias = qwen2 || attention_bias;
  c.o_bias = !qwen2 && attention_bias;
  c.mlp_bias = j.value("mlp_bias", false);
  if (auto s = ReadRope(j, origin, &c.rope); !s.ok()) return s;
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
  auto preset = [&](int64_t v, int64_t h, int64_t i, int64_t l, int64_t n, int64_t kv,
                    double theta, int64_t max_pos) {
    c.vocab_size = v, c.hidden_size = h, c.intermediate_size = i, c.num_layers = l;
    c.num_heads = n, c.num_kv_heads = kv, c.head_dim = h / n, c.rope.theta = theta;
    c.max_position_embeddings = max_pos;
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
        c.rope = RopeConfig{500000, "llama3", 8.0, 1.0, 4.0, 8192};
      } else if (part == "llama3-70b") preset(128256, 8192, 28672, 80, 64, 8, 500000, 8192);
      else if (part == "mistral-7b") preset(32000, 4096, 14336, 32, 32, 8, 1000000, 32768);
      else {
        return absl::InvalidArgumentError(absl::StrCat(
            "model: unknown random preset '", part,
            "' (known: tiny, small, llama2-7b, llama2-13b, llama2-70b, llama3-8b, llama3.1-8b, "
            "llama3-70b, mistral-7b, or key=value sizes)"));
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
  if (c.num_heads > 0 && (c.head_dim == 0 || c.head_dim * c.num_heads != c.hidden_size)) {
    bool explicit_head_dim = spec.find("head_dim=") != std::string::npos;
    if (!explicit_head_dim) c.head_dim = c.hidden_size / c.num_heads;
  }
  if (auto s = Validate(c, "model (random:" + spec + ")"); !s.ok()) return s;
  return c;
}

}  // namespace rigtune::model
