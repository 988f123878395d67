// The Llama-family decoder (Llama 2/3, Mistral, Qwen2/2.5, Qwen3, Gemma 2/3,
// Phi-3/3.5/4-mini)
// with NF4 linears and LoRA adapters: RMSNorm, rotary embeddings (default,
// linear, llama3 scaling), grouped-query attention through
// scaled-dot-product attention, SwiGLU (or GeGLU) MLP. Embeddings, norms and
// LM head stay in the compute dtype and are frozen.
//
// The numerics follow Hugging Face transformers' modeling code of each
// architecture: RMSNorm in float32 then cast, rotary tables in float32 then
// cast, attention scale 1/sqrt(head_dim) unless the config sets one. The
// family's variations (ModelConfig): Gemma's (1 + w) norm, scaled
// embeddings, GeGLU, four norms per layer, soft-capped attention scores and
// logits, sliding-window layers with their own rotary base; Qwen3/Gemma 3's
// per-head q/k norms. tests/golden checks logits, loss and LoRA gradients.
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
// "q_proj", ..., "down_proj" (PEFT's target_modules names). With `fused`
// (ModelConfig::fused_projections, Phi-3) kQ is "qkv_proj", kGate
// "gate_up_proj", and kK, kV, kUp are absent ("").
const char* ProjName(int proj, bool fused = false);
// "self_attn.q_proj", ..., "mlp.down_proj" (the key inside a layer).
std::string ProjPath(int proj, bool fused = false);
// Whether slot `proj` holds a linear: every slot, except kK, kV and kUp of a
// model with fused projections (their rows are part of kQ's and kGate's).
// An absent slot is a default QLoraLinear: no weight, no adapter.
bool ProjPresent(int proj, bool fused);

struct DecoderLayer {
  at::Tensor input_layernorm;           // [hidden]
  // [hidden]. Llama: before the MLP. Gemma (sandwich_norms): on the attention
  // output, with pre_feedforward_layernorm before the MLP and
  // post_feedforward_layernorm on its output.
  at::Tensor post_attention_layernorm;
  at::Tensor pre_feedforward_layernorm;   // [hidden] or undefined
  at::Tensor post_feedforward_layernorm;  // [hidden] or undefined
  at::Tensor q_norm, k_norm;              // [head_dim] (qk_norm) or undefined
  std::array<lora::QLoraLinear, kNumProj> proj;
  // A sliding-window layer (ModelConfig::IsSlidingLayer of its index).
  bool sliding = false;
  // The MLP's activation (ModelConfig::activation).
  Activation activation = Activation::kSilu;
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
  // Gemma 3's sliding-window layers rotate with their own base; undefined
  // for other models (sliding layers then use cos, sin).
  at::Tensor cos_local, sin_local;
  // Undefined: causal attention over the whole row. Otherwise a boolean
  // [B, 1, T, T] mask (true = may attend), e.g. block-diagonal for packing.
  at::Tensor mask;
  // Packed rows for variable-length attention: int32 offsets of every
  // example in the flattened [B * T] tokens (0, ..., B * T) and the longest
  // example. Used on CUDA in bf16/fp16 (flash attention, no mask in memory);
  // elsewhere `mask` applies.
  at::Tensor cu_seqlens;
  int64_t max_seqlen = 0;
  // Sliding-window layers: `mask` (or causal) restricted to the window, a
  // boolean [B or 1, 1, T, T]. Undefined when every row fits in the window
  // (the layer then attends like a full one).
  at::Tensor sliding_mask;
  int64_t sliding_window = 0;
};

// Rotary tables for `position_ids` ([B, T], int64).
AttentionInputs MakeAttentionInputs(const ModelConfig& config, const at::Tensor& position_ids,
                                    at::ScalarType dtype, const at::Tensor& mask = {},
                                    const at::Tensor& cu_seqlens = {}, int64_t max_seqlen = 0);
// The rotary inverse frequencies ([head_dim/2], float32), after scaling.
at::Tensor RopeInverseFrequencies(const ModelConfig& config);
at::Tensor RopeInverseFrequencies(const RopeConfig& rope, int64_t head_dim);

// Llama's RMSNorm: weight · (x / rms(x) in x's dtype).
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);
// The model's RMSNorm: Llama's, or Gemma's (x / rms(x) · (1 + weight) in
// float32, then cast) when config.norm_plus_one.
at::Tensor Norm(const ModelConfig& config, const at::Tensor& x, const at::Tensor& weight);
// Token embeddings, times config.embed_scale rounded to the weight's dtype.
at::Tensor EmbedTokens(const ModelConfig& config, const at::Tensor& weight,
                       const at::Tensor& input_ids);
// float32 logits x · lm_headᵀ, soft-capped when config.final_softcap > 0
// (in float32: a bf16 tanh would round the logits the loss sees).
at::Tensor HeadLogits(const ModelConfig& config, const at::Tensor& x, const at::Tensor& lm_head);

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
// With `gate_up` non-null, *gate_up receives the MLP's gate/up product
// [..., 2 × intermediate] when the layer computes it as one product (see
// MlpKeepsGateUp), and is left alone otherwise.
at::Tensor MlpHalf(const DecoderLayer& layer, const ModelConfig& config, const at::Tensor& hidden,
                   lora::DequantWorkspace& workspace, bool training, uint64_t dropout_seed,
                   at::Tensor* gate_up = nullptr);

// Whether the layer's gate and up projections run as one product (grouped,
// or Phi-3's fused gate_up_proj) that a checkpointed step can keep from its
// no-grad forward and rebuild the MLP from: no bias, DoRA, dropout (when
// `training`) or trained base weight on gate/up. See Note [Keeping the
// gate/up product] in llama.cc.
bool MlpKeepsGateUp(const DecoderLayer& layer, const ModelConfig& config, bool training);

// MlpHalf(hidden) rebuilt for training from `gate_up`, the product MlpHalf
// returned in *gate_up for this hidden (no grad) and this micro-step's
// seed, without the MLP's GEMMs: backpropagating the result gives the
// gradients MlpHalf's graph gives, to rounding. The result's value is not
// MlpHalf's unless config.sandwich_norms (a stand-in of its shape
// otherwise): backpropagate through it, never read it. Requires
// MlpKeepsGateUp(layer, config, true).
at::Tensor MlpHalfFromKept(const DecoderLayer& layer, const ModelConfig& config,
                           const at::Tensor& hidden, const at::Tensor& gate_up,
                           lora::DequantWorkspace& workspace, uint64_t dropout_seed);

// Whether MlpHalf over row slices gives exactly the rows of MlpHalf over the
// whole: false when training with LoRA dropout on an MLP projection, whose
// mask is drawn for the shape of the input it is given (a slice would draw
// different bits; see QLoraLinear::Forward).
bool MlpRowsIndependentOfTiling(const DecoderLayer& layer, bool training);

}  // namespace rigtune::model

#endif  // RIGTUNE_WORKER_MODEL_LLAMA_H_
