// ModelConfig: the shape of a Llama-family decoder, read from a Hugging Face
// config.json or named by a `random:` source.
//
// Supported architectures: LlamaForCausalLM, MistralForCausalLM,
// Qwen2ForCausalLM. Anything else is an error naming the architecture.
//
// Example:
//   ASSIGN_OR_RETURN(ModelConfig c, LoadModelConfig("/models/llama-3-8b"));
//   ASSIGN_OR_RETURN(ModelConfig t, RandomModelConfig("llama2-7b"));
#ifndef RIGTUNE_WORKER_MODEL_CONFIG_H_
#define RIGTUNE_WORKER_MODEL_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace rigtune::model {

struct RopeConfig {
  double theta = 10000.0;
  std::string type = "default";  // default | linear | llama3
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct ModelConfig {
  std::string architecture = "LlamaForCausalLM";
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2: q/k/v projections carry a bias
  bool o_bias = false;    // Llama attention_bias: o_proj too
  bool mlp_bias = false;
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;

  // Parameters of the frozen base (embeddings + norms + linears).
  int64_t NumParameters() const;
};

// Reads `<model_dir>/config.json`. Errors name the file and the field.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);
// Parses config.json text; `origin` names the source in error messages.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& origin);

// Shapes for `random:<spec>` sources. <spec> is a preset name (tiny, small,
// llama2-7b, llama2-13b, llama2-70b, llama3-8b, llama3.1-8b (131,072 positions,
// llama3 RoPE scaling), llama3-70b, mistral-7b) or
// explicit sizes "layers=2,hidden=64,intermediate=128,heads=4,kv_heads=2,vocab=256",
// optionally after a preset: "llama2-70b,layers=4".
absl::StatusOr<ModelConfig> RandomModelConfig(const std::string& spec);

// The config of a job's model source: RandomModelConfig for "random:<spec>",
// else LoadModelConfig of the folder.
absl::StatusOr<ModelConfig> SourceModelConfig(const std::string& source);

// True when `source` names a random model ("random:...").
bool IsRandomSource(const std::string& source);

}  // namespace rigtune::model

#endif  // RIGTUNE_WORKER_MODEL_CONFIG_H_
