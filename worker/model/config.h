// ModelConfig: the shape of a Llama-family decoder, read from a Hugging Face
// config.json or named by a `random:` source.
//
// Supported architectures: LlamaForCausalLM, MistralForCausalLM (including
// Mistral-Nemo's head_dim != hidden/heads), Qwen2ForCausalLM (Qwen2, Qwen2.5),
// Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM (text) and
// Phi3ForCausalLM (Phi-3, Phi-3.5, Phi-4-mini: fused projections, partial
// rotary, longrope). The
// variations between them are fields of ModelConfig (norm style, activation,
// q/k norms, soft-capping, sliding-window layers) so that one decoder serves
// all. Anything else, or a config feature outside these, is an
// InvalidArgument naming the architecture or field.
//
// Example:
//   ASSIGN_OR_RETURN(ModelConfig c, LoadModelConfig("/models/llama-3-8b"));
//   ASSIGN_OR_RETURN(ModelConfig t, RandomModelConfig("llama2-7b"));
#ifndef RIGTUNE_WORKER_MODEL_CONFIG_H_
#define RIGTUNE_WORKER_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace rigtune::model {

struct RopeConfig {
  double theta = 10000.0;
  std::string type = "default";  // default | linear | llama3 | longrope
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3, longrope
  // longrope (Phi-3): per-frequency divisors for contexts up to
  // original_max_position_embeddings (short) and beyond (long), and the
  // factor cos and sin are multiplied by. `use_long_factor` picks the set; the
  // job sets it from its context length (UseContextLength).
  std::vector<double> short_factor, long_factor;
  double attention_factor = 1.0;
  bool use_long_factor = false;
};

// The MLP's gate activation: SwiGLU (silu) or GeGLU with the tanh
// approximation of GELU (Gemma's gelu_pytorch_tanh).
enum class Activation { kSilu, kGeluTanh };

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

  Activation activation = Activation::kSilu;
  // Gemma's RMSNorm: x / rms(x) · (1 + weight), multiplied in float32 then
  // cast (Llama casts first, then multiplies by weight). Stored weights are
  // the checkpoint's (centred on 0).
  bool norm_plus_one = false;
  // Embeddings multiplied by this (rounded to the compute dtype, as
  // transformers does); 1 = none. Gemma: sqrt(hidden_size).
  double embed_scale = 1.0;
  // Gemma 2/3: a norm on the attention and MLP outputs too
  // (post_attention_layernorm, pre_/post_feedforward_layernorm).
  bool sandwich_norms = false;
  // Qwen3, Gemma 3: RMSNorm over each q and k head (weight [head_dim]) before
  // the rotary embedding.
  bool qk_norm = false;
  // Attention scale; 0 = 1/sqrt(head_dim). Gemma: query_pre_attn_scalar^-1/2.
  double attention_scale = 0.0;
  // tanh soft-capping, cap·tanh(x/cap); 0 = none. Gemma 2: attention scores
  // (attn_logit_softcapping) and final logits (final_logit_softcapping).
  double attn_softcap = 0.0;
  double final_softcap = 0.0;
  // Sliding-window layers attend to the last `sliding_window` positions
  // (key j visible from query i when i - window < j <= i). One flag per layer
  // (config layer_types); empty = every layer attends to the whole row.
  int64_t sliding_window = 0;
  std::vector<bool> sliding_layers;
  // Gemma 3: the rotary embedding of sliding-window layers
  // (rope_local_base_freq); `rope` applies to the others.
  bool has_local_rope = false;
  RopeConfig local_rope;

  // Phi-3: the checkpoint stores Q/K/V as one qkv_proj and gate/up as one
  // gate_up_proj. Each fused linear is quantized and adapted whole; it lives
  // in the kQ (kGate) slot of a layer with the fused out-features, and the
  // kK, kV, kUp slots stay empty (see ProjPresent in llama.h).
  bool fused_projections = false;
  // Rotary embedding over the first `rotary_dim` features of each head only
  // (Phi-4-mini's partial_rotary_factor); the rest pass through. = head_dim
  // when the whole head rotates.
  int64_t rotary_dim = 0;

  int64_t RotaryDim() const { return rotary_dim > 0 ? rotary_dim : head_dim; }

  bool IsSlidingLayer(int64_t i) const {
    return i >= 0 && i < static_cast<int64_t>(sliding_layers.size()) && sliding_layers[i];
  }

  // Parameters of the frozen base (embeddings + norms + linears).
  int64_t NumParameters() const;
};

// Reads `<model_dir>/config.json`. Errors name the file and the field.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);
// Parses config.json text; `origin` names the source in error messages.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& origin);

// Sets what depends on the job's context length (tokens per row): longrope
// uses its long factors when the context exceeds the pre-training length
// (original_max_position_embeddings), its short factors otherwise.
void UseContextLength(ModelConfig* config, int64_t context);

// Shapes for `random:<spec>` sources. <spec> is a preset name (tiny, small,
// llama2-7b, llama2-13b, llama2-70b, llama3-8b, llama3.1-8b (131,072 positions,
// llama3 RoPE scaling), llama3-70b, mistral-7b, mistral-nemo-12b (head_dim
// 128 with hidden 5120 and 32 heads), qwen2.5-7b, qwen3-8b, gemma2-9b,
// gemma3-1b, phi3-mini (3.8B: fused projections, 32 heads of 96)) or
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
