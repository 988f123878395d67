// The Llama-family decoder (Llama 2/3, Mistral, Qwen2) with NF4 linears and
// LoRA adapters: RMSNorm, rotary embeddings (default, linear, llama3 scaling),
// grouped-query attention through scaled-dot-product attention, SwiGLU MLP.
// Embeddings, final norm and LM head stay in the compute dtype and are frozen.
//
// The numerics follow Hugging Face transformers' LlamaForCausalLM: RMSNorm in
// float32 then cast, rotary tables in float32 then cast, attention scale
// 1/sqrt(head_dim). tests/golden checks logits, loss and LoRA gradients.
#ifndef RIGTUNE_WORKER_MODEL_LLAMA_H_
#define RIGTUNE_WORKER_MODEL_LLAMA_H_

#include <ATen/core/Tensor.h>

#include <array>
#include <string>
#include <vector>

#include "worker/lora/qlora_linear.h"
#include "worker/model/config.h"

namespace rigtune::model {

// The seven linears of a decoder layer, in a fixed order.
enum Proj : int { kQ = 0, kK, kV, kO, kGate, kUp, kDown, kNumProj };
// "q_proj", ..., "down_proj" (PEFT's target_modules names).
const char* ProjName(int proj);
// "self_attn.q_proj", ..., "mlp.down_proj" (the key inside a layer).
std::string ProjPath(int proj);

struct DecoderLayer {
  at::Tensor input_layernorm;           // [hidden]
  at::Tensor post_attention_layernorm;  // [hidden]
  std::array<lora::QLoraLinear, kNumProj> proj;
};

struct LlamaModel {
  ModelConfig config;
  at::ScalarType dtype = at::kFloat;  // compute dtype
  at::Tensor embed_tokens;            // [vocab, hidden]
  at::Tensor lm_head;                 // [vocab, hidden]; aliases embed_tokens when tied
  at::Tensor norm;                    // [hidden]
  std::vector<DecoderLayer> layers;

  // Every trainable tensor (LoRA A and B, float32), in a stable order:
  // layer by layer, projection by projection, A before B.
  std::vector<at::Tensor> LoraParameters() const;
};

// What every layer of one forward pass shares.
struct AttentionInputs {
  at::Tensor cos, sin;  // [B, T, head_dim] in the compute dtype
  // Undefined: causal attention over the whole row. Otherwise a boolean
  // [B, 1, T, T] mask (true = may attend), e.g. block-diagonal for packing.
  at::Tensor mask;
  // Packed rows for variable-length attention: int32 offsets of every
  // example in the flattened [B * T] tokens (0, ..., B * T) and the longest
  // example. Used on CUDA in bf16/fp16 (flash attention, no mask in memory);
  // elsewhere `mask` applies.
  at::Tensor cu_seqlens;
  int64_t max_seqlen = 0;
};

// Rotary tables for `position_ids` ([B, T], int64).
AttentionInputs MakeAttentionInputs(const ModelConfig& config, const at::Tensor& position_ids,
                                    at::ScalarType dtype, const at::Tensor& mask = {},
                                    const at::Tensor& cu_seqlens = {}, int64_t max_seqlen = 0);
// The rotary inverse frequencies ([head_dim/2], float32), after scaling.
at::Tensor RopeInverseFrequencies(const ModelConfig& config);

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);

// One decoder layer: h + attn(norm(h)), then + mlp(norm(.)). `dropout_seed`
// seeds the LoRA dropout masks of this layer in this micro-step.
at::Tensor DecoderLayerForward(const DecoderLayer& layer, const ModelConfig& config,
                               const at::Tensor& hidden, const AttentionInputs& attn,
                               lora::DequantWorkspace& workspace, bool training,
                               uint64_t dropout_seed);

// The two halves of DecoderLayerForward, for callers that treat them apart
// (the trainer's row-tiled MLP for long sequences, see trainer.h):
// AttentionHalf(h) = h + attn(input_layernorm(h)) mixes tokens; MlpHalf(h) =
// h + mlp(post_attention_layernorm(h)) is per token, so it may run on any
// slice of rows ([..., hidden]) and give those rows of the whole. Both take
// the layer's `dropout_seed`, as DecoderLayerForward does.
at::Tensor AttentionHalf(const DecoderLayer& layer, const ModelConfig& config,
                         const at::Tensor& hidden, const AttentionInputs& attn,
                         lora::DequantWorkspace& workspace, bool training, uint64_t dropout_seed);
at::Tensor MlpHalf(const DecoderLayer& layer, const ModelConfig& config, const at::Tensor& hidden,
                   lora::DequantWorkspace& workspace, bool training, uint64_t dropout_seed);

// Whether MlpHalf over row slices gives exactly the rows of MlpHalf over the
// whole: false when training with LoRA dropout on an MLP projection, whose
// mask is drawn for the shape of the input it is given (a slice would draw
// different bits; see QLoraLinear::Forward).
bool MlpRowsIndependentOfTiling(const DecoderLayer& layer, bool training);

}  // namespace rigtune::model

#endif  // RIGTUNE_WORKER_MODEL_LLAMA_H_
