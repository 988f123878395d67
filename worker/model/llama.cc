#include "worker/model/llama.h"

#include <ATen/ATen.h>

#include <cmath>
#include <optional>
#include <vector>

#include "worker/lora/grouped_qlora.h"
#include "worker/model/fused_ops.h"
#include "worker/profile/step_profiler.h"

namespace rigtune::model {

const char* ProjName(int proj) {
  static const char* kNames[kNumProj] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                         "gate_proj", "up_proj", "down_proj"};
  return kNames[proj];
}

std::string ProjPath(int proj) {
  return std::string(proj <= kO ? "self_attn." : "mlp.") + ProjName(proj);
}

std::vector<at::Tensor> LlamaModel::LoraParameters() const {
  std::vector<at::Tensor> params;
  for (const DecoderLayer& layer : layers) {
    for (const lora::QLoraLinear& p : layer.proj) {
      for (lora::AdapterPart part : lora::AdapterParts(p.spec())) params.push_back(p.adapter(part));
    }
  }
  return params;
}

at::Tensor RopeInverseFrequencies(const ModelConfig& config) {
  const int64_t dim = config.head_dim;
  at::Tensor exponents = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
  at::Tensor inv_freq = 1.0 / at::pow(config.rope.theta, exponents);
  const RopeConfig& rope = config.rope;
  if (rope.type == "linear") return inv_freq / rope.factor;
  if (rope.type != "llama3") return inv_freq;
  // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, and
  // the band between them interpolated smoothly.
  const double old_len = static_cast<double>(rope.original_max_position_embeddings);
  const double low_wavelen = old_len / rope.low_freq_factor;
  const double high_wavelen = old_len / rope.high_freq_factor;
  at::Tensor wavelen = 2 * M_PI / inv_freq;
  at::Tensor scaled = at::where(wavelen > low_wavelen, inv_freq / rope.factor, inv_freq);
  at::Tensor smooth =
      (old_len / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
  at::Tensor smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled;
  at::Tensor medium =
      at::logical_not(wavelen < high_wavelen) & at::logical_not(wavelen > low_wavelen);
  return at::where(medium, smoothed, scaled);
}

AttentionInputs MakeAttentionInputs(const ModelConfig& config, const at::Tensor& position_ids,
                                    at::ScalarType dtype, const at::Tensor& mask,
                                    const at::Tensor& cu_seqlens, int64_t max_seqlen) {
  at::Tensor inv_freq = RopeInverseFrequencies(config).to(position_ids.device());
  at::Tensor freqs = position_ids.to(at::kFloat).unsqueeze(-1) * inv_freq;  // [B, T, hd/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  return AttentionInputs{emb.cos().to(dtype), emb.sin().to(dtype), mask, cu_seqlens, max_seqlen};
}

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return FusedRmsNorm(x, weight, eps);
}

namespace {

at::Tensor Attention(const DecoderLayer& layer, const ModelConfig& c, const at::Tensor& x,
                     const AttentionInputs& attn, lora::DequantWorkspace& ws, bool training,
                     uint64_t seed) {
  const int64_t batch = x.size(0), seq = x.size(1), hd = c.head_dim;
  auto heads_first = [&](const at::Tensor& t, int64_t heads) {
    return t.view({batch, seq, heads, hd}).transpose(1, 2);
  };
  // Rotary embeddings rotate the fresh projections in place (kernels/rope.h).
  at::Tensor q, k, v;
  const std::vector<const lora::QLoraLinear*> qkv = {&layer.proj[kQ], &layer.proj[kK],
                                                     &layer.proj[kV]};
  if (lora::CanGroup(qkv, training)) {
    // One product for Q, K and V; q and k sit at the front of each row.
    at::Tensor fused = RotaryInPlace(lora::GroupedForward(qkv, x, ws), c.num_heads + c.num_kv_heads,
                                     attn.cos, attn.sin);
    std::vector<at::Tensor> parts = at::split_with_sizes(
        fused, {c.num_heads * hd, c.num_kv_heads * hd, c.num_kv_heads * hd}, -1);
    q = heads_first(parts[0], c.num_heads);
    k = heads_first(parts[1], c.num_kv_heads);
    v = heads_first(parts[2], c.num_kv_heads);
  } else {
    auto project = [&](int p) { return layer.proj[p].Forward(x, ws, training, seed + p); };
    q = heads_first(RotaryInPlace(project(kQ), c.num_heads, attn.cos, attn.sin), c.num_heads);
    k = heads_first(RotaryInPlace(project(kK), c.num_kv_heads, attn.cos, attn.sin), c.num_kv_heads);
    v = heads_first(project(kV), c.num_kv_heads);
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  const bool gqa = c.num_kv_heads != c.num_heads;
  at::Tensor out;
  const bool half = x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf;
  std::optional<profile::ScopedPhase> phase(std::in_place, profile::Phase::kAttention, x);
  if (attn.cu_seqlens.defined() && x.is_cuda() && half) {
    // Variable-length flash attention over the flattened tokens: each packed
    // example attends causally to itself only (GQA handled by the kernel).
    auto flat = [&](const at::Tensor& t, int64_t heads) {
      return t.transpose(1, 2).reshape({batch * seq, heads, hd});
    };
    out = std::get<0>(at::_flash_attention_forward(
        flat(q, c.num_heads), flat(k, c.num_kv_heads), flat(v, c.num_kv_heads), attn.cu_seqlens,
        attn.cu_seqlens, attn.max_seqlen, attn.max_seqlen, 0.0, /*is_causal=*/true,
        /*return_debug_mask=*/false, scale));
    phase.reset();
    return layer.proj[kO].Forward(out.reshape({batch, seq, c.num_heads * hd}), ws, training,
                                  seed + kO);
  }
  if (attn.mask.defined()) {
    out = at::scaled_dot_product_attention(q, k, v, attn.mask, 0.0, false, scale, gqa);
  } else {
    out = at::scaled_dot_product_attention(q, k, v, {}, 0.0, true, scale, gqa);
  }
  out = out.transpose(1, 2).reshape({batch, seq, c.num_heads * hd});
  phase.reset();
  return layer.proj[kO].Forward(out, ws, training, seed + kO);
}

at::Tensor Mlp(const DecoderLayer& layer, const at::Tensor& x, lora::DequantWorkspace& ws,
               bool training, uint64_t seed) {
  const std::vector<const lora::QLoraLinear*> gate_up = {&layer.proj[kGate], &layer.proj[kUp]};
  at::Tensor act;
  if (lora::CanGroup(gate_up, training)) {
    act = FusedSwiglu(lora::GroupedForward(gate_up, x, ws));  // one product for gate and up
  } else {
    act = FusedSwiglu(layer.proj[kGate].Forward(x, ws, training, seed + kGate),
                      layer.proj[kUp].Forward(x, ws, training, seed + kUp));
  }
  return layer.proj[kDown].Forward(act, ws, training, seed + kDown);
}

at::Tensor Residual(const at::Tensor& x, const at::Tensor& branch) {
  profile::ScopedPhase phase(profile::Phase::kElementwise, x);
  return x + branch;
}

}  // namespace

at::Tensor DecoderLayerForward(const DecoderLayer& layer, const ModelConfig& config,
                               const at::Tensor& hidden, const AttentionInputs& attn,
                               lora::DequantWorkspace& workspace, bool training,
                               uint64_t dropout_seed) {
  const double eps = config.rms_norm_eps;
  at::Tensor attn_out = Attention(layer, config, RmsNorm(hidden, layer.input_layernorm, eps), attn,
                                  workspace, training, dropout_seed);
  at::Tensor h = Residual(hidden, attn_out);
  at::Tensor mlp_out = Mlp(layer, RmsNorm(h, layer.post_attention_layernorm, eps), workspace,
                           training, dropout_seed + kNumProj);
  return Residual(h, mlp_out);
}

}  // namespace rigtune::model
