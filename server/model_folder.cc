#include "server/model_folder.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace rigtune::server {

namespace {

namespace fs = std::filesystem;

// Larger files are not a config or tokenizer a worker could use either.
constexpr std::uintmax_t kMaxJsonBytes = 256u << 20;

absl::Status Bad(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("spec.model: ", what));
}

// The linear layers of the decoders the engine builds (Llama, Mistral, Qwen2,
// Qwen3, Gemma 2, Gemma 3 text: one set of names); LoRA targets are named
// after them as in PEFT.
const std::vector<std::string>& LlamaModules() {
  static const std::vector<std::string> modules = {"q_proj",    "k_proj",  "v_proj", "o_proj",
                                                    "gate_proj", "up_proj", "down_proj"};
  return modules;
}

// Phi-3 stores Q/K/V and gate/up fused; PEFT names its linears so.
const std::vector<std::string>& Phi3Modules() {
  static const std::vector<std::string> modules = {"qkv_proj", "o_proj", "gate_up_proj",
                                                    "down_proj"};
  return modules;
}

absl::StatusOr<nlohmann::json> ReadJson(const fs::path& path) {
  std::error_code error;
  if (!fs::is_regular_file(path, error)) return Bad(absl::StrCat(path.string(), ": missing"));
  if (fs::file_size(path, error) > kMaxJsonBytes) {
    return Bad(absl::StrCat(path.string(), ": larger than 256 MiB"));
  }
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) return Bad(absl::StrCat(path.string(), ": cannot read"));
  try {
    return nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::parse_error& e) {
    return Bad(absl::StrCat(path.string(), ": not valid JSON (byte ", e.byte, ")"));
  }
}

// The architecture config.json names, as the engine reads it
// (worker/model/config.cc): architectures[0], else model_type.
std::string Architecture(const nlohmann::json& config) {
  auto architectures = config.find("architectures");
  if (architectures != config.end() && architectures->is_array() && !architectures->empty() &&
      (*architectures)[0].is_string()) {
    return (*architectures)[0].get<std::string>();
  }
  auto type = config.find("model_type");
  if (type == config.end() || !type->is_string()) return "";
  const std::string t = type->get<std::string>();
  return t == "llama" ? "LlamaForCausalLM" : t == "mistral" ? "MistralForCausalLM"
       : t == "qwen2" ? "Qwen2ForCausalLM" : t == "qwen3" ? "Qwen3ForCausalLM"
       : t == "gemma2" ? "Gemma2ForCausalLM" : t == "gemma3_text" ? "Gemma3ForCausalLM"
       : t == "phi3"   ? "Phi3ForCausalLM"
                       : t;
}

// The architectures worker/model/config.cc loads.
bool Supported(const std::string& architecture) {
  for (const char* a : {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                        "Qwen3ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM",
                        "Phi3ForCausalLM"}) {
    if (architecture == a) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<ModelInfo> InspectModel(const std::string& model, bool needs_tokenizer) {
  if (absl::StartsWith(model, "random:phi3")) {
    return ModelInfo{"Phi3ForCausalLM", Phi3Modules(), /*fused=*/true};
  }
  if (absl::StartsWith(model, "random:")) return ModelInfo{"LlamaForCausalLM", LlamaModules()};
  const fs::path dir(model);
  std::error_code error;
  if (!fs::is_directory(dir, error)) {
    return Bad(absl::StrCat(model, " is not a folder; give a Hugging Face model folder "
                                   "(config.json, tokenizer.json, *.safetensors)"));
  }
  absl::StatusOr<nlohmann::json> config = ReadJson(dir / "config.json");
  if (!config.ok()) return config.status();
  if (!config->is_object()) return Bad(absl::StrCat(model, "/config.json: not a JSON object"));
  const std::string architecture = Architecture(*config);
  if (!Supported(architecture)) {
    return Bad(absl::StrCat(model, "/config.json: unsupported architecture '", architecture,
                            "' (supported: LlamaForCausalLM, MistralForCausalLM, "
                            "Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, "
                            "Gemma3ForCausalLM, Phi3ForCausalLM)"));
  }
  if (needs_tokenizer || fs::exists(dir / "tokenizer.json", error)) {
    absl::StatusOr<nlohmann::json> tokenizer = ReadJson(dir / "tokenizer.json");
    if (!tokenizer.ok()) return tokenizer.status();
    if (!tokenizer->is_object() || !tokenizer->contains("model")) {
      return Bad(absl::StrCat(model, "/tokenizer.json: not a tokenizers file (no \"model\")"));
    }
  }
  if (fs::exists(dir / "tokenizer_config.json", error)) {
    absl::StatusOr<nlohmann::json> tokenizer_config = ReadJson(dir / "tokenizer_config.json");
    if (!tokenizer_config.ok()) return tokenizer_config.status();
  }
  const bool fused = architecture == "Phi3ForCausalLM";
  return ModelInfo{architecture, fused ? Phi3Modules() : LlamaModules(), fused};
}

bool IsEveryLlamaLinear(const std::vector<std::string>& targets) {
  std::vector<std::string> given = targets, all = LlamaModules();
  std::sort(given.begin(), given.end());
  std::sort(all.begin(), all.end());
  return given == all;
}

}  // namespace rigtune::server
