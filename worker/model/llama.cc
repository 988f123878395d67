#include "worker/model/llama.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <utility>
#include <optional>
#include <vector>

#include "worker/lora/grouped_qlora.h"
#include "worker/model/fused_ops.h"
#include "worker/profile/step_profiler.h"

namespace rigtune::model {

const char* ProjName(int proj, bool fused) {
  static const char* kNames[kNumProj] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                         "gate_proj", "up_proj", "down_proj"};
  static const char* kFusedNames[kNumProj] = {"qkv_proj",     "",  "", "o_proj",
                                              "gate_up_proj", "",  "down_proj"};
  return fused ? kFusedNames[proj] : kNames[proj];
}

std::string ProjPath(int proj, bool fused) {
  return std::string(proj <= kO ? "self_attn." : "mlp.") + ProjName(proj, fused);
}

bool ProjPresent(int proj, bool fused) {
  return !fused || (proj != kK && proj != kV && proj != kUp);
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
  return RopeInverseFrequencies(config.rope, config.RotaryDim());
}

at::Tensor RopeInverseFrequencies(const RopeConfig& rope, int64_t dim) {
  at::Tensor exponents = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
  if (rope.type == "longrope") {
    // Phi-3: each frequency divided by its own factor, short or long.
    const std::vector<double>& f = rope.use_long_factor ? rope.long_factor : rope.short_factor;
    at::Tensor ext = at::tensor(f, at::kDouble).to(at::kFloat);
    return 1.0 / (ext * at::pow(rope.theta, exponents));
  }
  at::Tensor inv_freq = 1.0 / at::pow(rope.theta, exponents);
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

namespace {

std::pair<at::Tensor, at::Tensor> RotaryTables(const RopeConfig& rope, int64_t head_dim,
                                               const at::Tensor& position_ids,
                                               at::ScalarType dtype) {
  at::Tensor inv_freq = RopeInverseFrequencies(rope, head_dim).to(position_ids.device());
  at::Tensor freqs = position_ids.to(at::kFloat).unsqueeze(-1) * inv_freq;  // [B, T, hd/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  if (rope.type == "longrope" && rope.attention_factor != 1.0) {
    // longrope scales cos and sin (in float32, before the cast).
    return {(emb.cos() * rope.attention_factor).to(dtype),
            (emb.sin() * rope.attention_factor).to(dtype)};
  }
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

}  // namespace

AttentionInputs MakeAttentionInputs(const ModelConfig& config, const at::Tensor& position_ids,
                                    at::ScalarType dtype, const at::Tensor& mask,
                                    const at::Tensor& cu_seqlens, int64_t max_seqlen) {
  AttentionInputs in;
  std::tie(in.cos, in.sin) = RotaryTables(config.rope, config.RotaryDim(), position_ids, dtype);
  if (config.has_local_rope) {
    std::tie(in.cos_local, in.sin_local) =
        RotaryTables(config.local_rope, config.RotaryDim(), position_ids, dtype);
  }
  in.mask = mask;
  in.cu_seqlens = cu_seqlens;
  in.max_seqlen = max_seqlen;
  const int64_t t = position_ids.size(1);
  if (!config.sliding_layers.empty() && t > config.sliding_window) {
    // Query i sees key j when 0 <= i - j < window (and `mask` allows it).
    at::Tensor idx = at::arange(t, position_ids.options().dtype(at::kLong));
    at::Tensor dist = idx.unsqueeze(1) - idx.unsqueeze(0);
    at::Tensor band = (dist.ge(0) & dist.lt(config.sliding_window)).view({1, 1, t, t});
    in.sliding_mask = mask.defined() ? mask.logical_and(band) : band;
    in.sliding_window = config.sliding_window;
  }
  return in;
}

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return FusedRmsNorm(x, weight, eps);
}

at::Tensor Norm(const ModelConfig& config, const at::Tensor& x, const at::Tensor& weight) {
  if (!config.norm_plus_one) return FusedRmsNorm(x, weight, config.rms_norm_eps);
  // Gemma: the product with (1 + w) happens in float32 before the cast, which
  // the fused kernel (Llama's order) does not do; ATen on every device.
  profile::ScopedPhase phase(profile::Phase::kElementwise, x);
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + config.rms_norm_eps);
  return (normed * (weight.to(at::kFloat) + 1.0)).to(x.scalar_type());
}

at::Tensor EmbedTokens(const ModelConfig& config, const at::Tensor& weight,
                       const at::Tensor& input_ids) {
  at::Tensor h = at::embedding(weight, input_ids);
  if (config.embed_scale == 1.0) return h;
  // transformers rounds the scale to the weight's dtype first (sqrt(3072)
  // becomes 55.5 in bf16); so do we.
  const double scale =
      at::scalar_tensor(config.embed_scale, at::kDouble).to(weight.scalar_type()).item<double>();
  return h * scale;
}

at::Tensor HeadLogits(const ModelConfig& config, const at::Tensor& x, const at::Tensor& lm_head) {
  at::Tensor logits = at::matmul(x, lm_head.t()).to(at::kFloat);
  if (config.final_softcap <= 0) return logits;
  return at::tanh(logits / config.final_softcap) * config.final_softcap;
}

namespace {

// x [B, H, T, hd] rotated by cos, sin [B, T, rd] (transformers'
// rotate-half form), out of place: used where the in-place kernel cannot be
// (after a per-head q/k norm the heads are no longer rows of a fresh product;
// with partial rotary only the first rd features of a head rotate, the rest
// pass through).
at::Tensor RotaryOutOfPlace(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t rd = cos.size(-1);
  if (rd < x.size(-1)) {
    return at::cat({RotaryOutOfPlace(x.narrow(-1, 0, rd), cos, sin),
                    x.narrow(-1, rd, x.size(-1) - rd)},
                   -1);
  }
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1);
}

// softmax(cap·tanh(q·kᵀ·scale / cap) masked) · v, as transformers' eager
// attention computes it (softmax in float32, then cast). Soft-capping is not
// expressible in scaled_dot_product_attention or flash attention, so Gemma 2
// takes this path on every device. q [B, H, T, hd]; k, v [B, KV, T, hd].
at::Tensor SoftcappedAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& mask, double scale, double cap) {
  const int64_t groups = q.size(1) / k.size(1);
  at::Tensor kk = groups == 1 ? k : k.repeat_interleave(groups, 1);
  at::Tensor vv = groups == 1 ? v : v.repeat_interleave(groups, 1);
  at::Tensor scores = at::matmul(q, kk.transpose(2, 3)) * scale;
  scores = at::tanh(scores / cap) * cap;
  at::Tensor allowed = mask;
  if (!allowed.defined()) {
    const int64_t t = q.size(2);
    allowed = at::ones({t, t}, q.options().dtype(at::kBool)).tril().view({1, 1, t, t});
  }
  scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
  at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  return at::matmul(probs, vv);
}

at::Tensor Attention(const DecoderLayer& layer, const ModelConfig& c, const at::Tensor& x,
                     const AttentionInputs& attn, lora::DequantWorkspace& ws, bool training,
                     uint64_t seed) {
  const int64_t batch = x.size(0), seq = x.size(1), hd = c.head_dim;
  auto heads_first = [&](const at::Tensor& t, int64_t heads) {
    return t.view({batch, seq, heads, hd}).transpose(1, 2);
  };
  const bool local_rope = layer.sliding && attn.cos_local.defined();
  const at::Tensor& cos = local_rope ? attn.cos_local : attn.cos;
  const at::Tensor& sin = local_rope ? attn.sin_local : attn.sin;
  at::Tensor q, k, v;
  const std::vector<const lora::QLoraLinear*> qkv = {&layer.proj[kQ], &layer.proj[kK],
                                                     &layer.proj[kV]};
  const std::vector<int64_t> widths = {c.num_heads * hd, c.num_kv_heads * hd,
                                       c.num_kv_heads * hd};
  // The in-place rotary kernel rotates whole heads of a fresh product; q/k
  // norms (Qwen3, Gemma 3) come between the product and RoPE, and partial
  // rotary (Phi-4-mini) rotates part of each head, so those rotate out of
  // place (RotaryOutOfPlace).
  const bool in_place = !c.qk_norm && c.RotaryDim() == hd;
  // Q, K and V from one product: Phi-3's fused qkv_proj (one linear whose
  // rows are [q; k; v]), or the three linears grouped.
  at::Tensor fused;
  if (c.fused_projections) {
    fused = layer.proj[kQ].Forward(x, ws, training, seed + kQ);
  } else if (lora::CanGroup(qkv, training)) {
    fused = lora::GroupedForward(qkv, x, ws);
  }
  if (fused.defined() && in_place) {
    // q and k sit at the front of each row; rotate them in place (kernels/rope.h).
    fused = RotaryInPlace(fused, c.num_heads + c.num_kv_heads, cos, sin);
    std::vector<at::Tensor> parts = at::split_with_sizes(fused, widths, -1);
    q = heads_first(parts[0], c.num_heads);
    k = heads_first(parts[1], c.num_kv_heads);
    v = heads_first(parts[2], c.num_kv_heads);
  } else if (!fused.defined() && in_place) {
    auto project = [&](int p) { return layer.proj[p].Forward(x, ws, training, seed + p); };
    q = heads_first(RotaryInPlace(project(kQ), c.num_heads, cos, sin), c.num_heads);
    k = heads_first(RotaryInPlace(project(kK), c.num_kv_heads, cos, sin), c.num_kv_heads);
    v = heads_first(project(kV), c.num_kv_heads);
  } else {
    at::Tensor pq, pk, pv;
    if (fused.defined()) {
      std::vector<at::Tensor> parts = at::split_with_sizes(fused, widths, -1);
      pq = parts[0], pk = parts[1], pv = parts[2];
    } else {
      auto project = [&](int p) { return layer.proj[p].Forward(x, ws, training, seed + p); };
      pq = project(kQ), pk = project(kK), pv = project(kV);
    }
    auto heads = [&](const at::Tensor& t, int64_t n, const at::Tensor& norm_weight) {
      if (!c.qk_norm) return t.reshape({batch, seq, n, hd}).transpose(1, 2);
      return Norm(c, t.reshape({batch, seq, n, hd}), norm_weight).transpose(1, 2);
    };
    q = RotaryOutOfPlace(heads(pq, c.num_heads, layer.q_norm), cos, sin);
    k = RotaryOutOfPlace(heads(pk, c.num_kv_heads, layer.k_norm), cos, sin);
    v = heads_first(pv, c.num_kv_heads);
  }
  const double scale =
      c.attention_scale > 0 ? c.attention_scale : 1.0 / std::sqrt(static_cast<double>(hd));
  const bool gqa = c.num_kv_heads != c.num_heads;
  // A sliding layer whose rows are longer than the window attends under the
  // window mask; otherwise like a full layer.
  const bool windowed = layer.sliding && attn.sliding_mask.defined();
  at::Tensor out;
  const bool half = x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf;
  std::optional<profile::ScopedPhase> phase(std::in_place, profile::Phase::kAttention, x);
  if (attn.cu_seqlens.defined() && x.is_cuda() && half && c.attn_softcap <= 0) {
    // Variable-length flash attention over the flattened tokens: each packed
    // example attends causally to itself only (GQA handled by the kernel),
    // within the last `window` keys on a sliding layer.
    auto flat = [&](const at::Tensor& t, int64_t heads) {
      return t.transpose(1, 2).reshape({batch * seq, heads, hd});
    };
    std::optional<int64_t> window_left;
    if (windowed) window_left = attn.sliding_window - 1;
    out = std::get<0>(at::_flash_attention_forward(
        flat(q, c.num_heads), flat(k, c.num_kv_heads), flat(v, c.num_kv_heads), attn.cu_seqlens,
        attn.cu_seqlens, attn.max_seqlen, attn.max_seqlen, 0.0, /*is_causal=*/true,
        /*return_debug_mask=*/false, scale, window_left, windowed ? std::optional<int64_t>(0)
                                                                  : std::nullopt));
    phase.reset();
    return layer.proj[kO].Forward(out.reshape({batch, seq, c.num_heads * hd}), ws, training,
                                  seed + kO);
  }
  const at::Tensor& mask = windowed ? attn.sliding_mask : attn.mask;
  if (c.attn_softcap > 0) {
    out = SoftcappedAttention(q, k, v, mask, scale, c.attn_softcap);
  } else if (mask.defined()) {
    out = at::scaled_dot_product_attention(q, k, v, mask, 0.0, false, scale, gqa);
  } else {
    out = at::scaled_dot_product_attention(q, k, v, {}, 0.0, true, scale, gqa);
  }
  out = out.transpose(1, 2).reshape({batch, seq, c.num_heads * hd});
  phase.reset();
  return layer.proj[kO].Forward(out, ws, training, seed + kO);
}

// act(gate) · up: SwiGLU through the fused kernel; Gemma's GeGLU (tanh
// GELU) through ATen on every device, as there is no fused GeGLU kernel.
at::Tensor GatedActivation(Activation act, const at::Tensor& gate, const at::Tensor& up) {
  if (act == Activation::kSilu) return FusedSwiglu(gate, up);
  profile::ScopedPhase phase(profile::Phase::kElementwise, gate);
  return at::gelu(gate, "tanh") * up;
}

// The linears whose one product is the gate/up product: Phi-3's
// gate_up_proj alone, or gate_proj and up_proj.
std::vector<const lora::QLoraLinear*> GateUpLinears(const DecoderLayer& layer, bool fused) {
  if (fused) return {&layer.proj[kGate]};
  return {&layer.proj[kGate], &layer.proj[kUp]};
}

// What the checkpointed step asks of Mlp beyond its value (Note [Keeping
// the gate/up product]).
struct MlpKeep {
  at::Tensor* out = nullptr;   // receives the gate/up product (no-grad forward)
  at::Tensor kept;             // the product to rebuild from (recompute)
  bool output_unread = false;  // with `kept`: nothing reads down_proj's value
};

at::Tensor Mlp(const DecoderLayer& layer, const at::Tensor& x, lora::DequantWorkspace& ws,
               bool training, uint64_t seed, bool fused_gate_up, const MlpKeep& keep = {}) {
  const std::vector<const lora::QLoraLinear*> gate_up = GateUpLinears(layer, fused_gate_up);
  at::Tensor act;
  if (keep.kept.defined() || fused_gate_up || lora::CanGroup(gate_up, training)) {
    // One product for gate and up: Phi-3's gate_up_proj (rows [gate; up]),
    // or the two linears grouped; or that product kept from the forward.
    at::Tensor fused = keep.kept.defined() ? lora::KeptGroupedForward(gate_up, x, keep.kept, ws)
                       : fused_gate_up ? layer.proj[kGate].Forward(x, ws, training, seed + kGate)
                                       : lora::GroupedForward(gate_up, x, ws);
    if (keep.out != nullptr) *keep.out = fused;
    if (layer.activation == Activation::kSilu) {
      // The product is this function's temporary (or the kept copy, used
      // once): SwiGLU's backward may write its gradient over it.
      act = FusedSwiglu(fused, /*overwrite_input=*/true);
    } else {
      const int64_t inter = fused.size(-1) / 2;
      act = GatedActivation(layer.activation, fused.narrow(-1, 0, inter),
                            fused.narrow(-1, inter, inter));
    }
  } else {
    act = GatedActivation(layer.activation,
                          layer.proj[kGate].Forward(x, ws, training, seed + kGate),
                          layer.proj[kUp].Forward(x, ws, training, seed + kUp));
  }
  if (keep.kept.defined() && keep.output_unread && layer.proj[kDown].CanSkipValue(training)) {
    return layer.proj[kDown].GradientOnlyForward(act, ws);
  }
  return layer.proj[kDown].Forward(act, ws, training, seed + kDown);
}

at::Tensor Residual(const at::Tensor& x, const at::Tensor& branch) {
  profile::ScopedPhase phase(profile::Phase::kElementwise, x);
  return x + branch;
}

}  // namespace

at::Tensor AttentionHalf(const DecoderLayer& layer, const ModelConfig& config,
                         const at::Tensor& hidden, const AttentionInputs& attn,
                         lora::DequantWorkspace& workspace, bool training, uint64_t dropout_seed) {
  at::Tensor attn_out = Attention(layer, config, Norm(config, hidden, layer.input_layernorm), attn,
                                  workspace, training, dropout_seed);
  // Gemma 2/3: each branch's output is normalized before the residual add.
  if (config.sandwich_norms) attn_out = Norm(config, attn_out, layer.post_attention_layernorm);
  return Residual(hidden, attn_out);
}

namespace {

at::Tensor MlpHalfWith(const DecoderLayer& layer, const ModelConfig& config,
                       const at::Tensor& hidden, lora::DequantWorkspace& workspace, bool training,
                       uint64_t dropout_seed, const MlpKeep& keep) {
  const at::Tensor& pre_norm =
      config.sandwich_norms ? layer.pre_feedforward_layernorm : layer.post_attention_layernorm;
  at::Tensor mlp_out = Mlp(layer, Norm(config, hidden, pre_norm), workspace, training,
                           dropout_seed + kNumProj, config.fused_projections, keep);
  if (config.sandwich_norms) mlp_out = Norm(config, mlp_out, layer.post_feedforward_layernorm);
  return Residual(hidden, mlp_out);
}

}  // namespace

at::Tensor MlpHalf(const DecoderLayer& layer, const ModelConfig& config, const at::Tensor& hidden,
                   lora::DequantWorkspace& workspace, bool training, uint64_t dropout_seed,
                   at::Tensor* gate_up) {
  MlpKeep keep;
  keep.out = gate_up;
  return MlpHalfWith(layer, config, hidden, workspace, training, dropout_seed, keep);
}

// Note [Keeping the gate/up product]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// With activation checkpointing every base GEMM runs three times a step:
// forward, recompute, input gradient. The MLP's are two thirds of the
// recompute (Llama-2-7B: 3 × 4096 × 11008 against 4 × 4096² per token), and
// the recompute rebuilds nothing the no-grad forward did not already hold:
// the gate/up product [tokens, 2 × intermediate] (base + LoRA) is the one
// large value the MLP's backward reads. With train.recompute keep_mlp the
// no-grad forward keeps it (MlpHalf's `gate_up`) in the activation stash next
// to the layer input, and the recompute rebuilds the MLP half without its
// GEMMs (MlpHalfFromKept):
//
// - the normed input is recomputed (cheap; the gate/up backward needs it);
// - the gate/up node is lora::KeptGroupedForward: it returns the kept
//   product and backpropagates as the grouped node does (grad_x through the
//   dequantized weights and the adapters, dA, dB). The thin x·Aᵀ its dB
//   needs is recomputed, not kept: tokens × in × Σr multiply-adds (2% of the
//   gate/up GEMM at r = 64, bandwidth-bound on x) against a second stashed
//   tensor, its copies and events for 1/170 of the product's bytes;
// - the activation runs on the kept product (its backward needs act's
//   inputs, which are the product);
// - down_proj's value is never read when the MLP output only joins the
//   residual sum: the recompute's layer output is only backpropagated
//   through, never used. There down_proj is GradientOnlyForward (Note [A
//   product whose value is never read] in qlora_linear.cc). Gemma's sandwich
//   norm reads it (its backward needs its input), and so do a bias, DoRA
//   (whose rescaling reads the product) and dropout: those run the real
//   forward.
//
// Only layers whose gate/up run as one product (grouped, or Phi-3's fused
// gate_up_proj) keep it: with dropout or DoRA on gate/up (which do not
// group) the layer recomputes in full. The gradients equal the full
// recompute's to rounding (trainer_test). The MlpHalfFromKept output's value
// is therefore not the layer's output when down_proj's is skipped: only its
// graph is.

bool MlpKeepsGateUp(const DecoderLayer& layer, const ModelConfig& config, bool training) {
  return lora::CanRunAsOneProduct(GateUpLinears(layer, config.fused_projections), training);
}

at::Tensor MlpHalfFromKept(const DecoderLayer& layer, const ModelConfig& config,
                           const at::Tensor& hidden, const at::Tensor& gate_up,
                           lora::DequantWorkspace& workspace, uint64_t dropout_seed) {
  MlpKeep keep;
  keep.kept = gate_up;
  keep.output_unread = !config.sandwich_norms;
  return MlpHalfWith(layer, config, hidden, workspace, /*training=*/true, dropout_seed, keep);
}

bool MlpRowsIndependentOfTiling(const DecoderLayer& layer, bool training) {
  if (!training) return true;
  for (int p : {kGate, kUp, kDown}) {
    if (layer.proj[p].has_adapter() && layer.proj[p].spec().dropout > 0) return false;
  }
  return true;
}

at::Tensor DecoderLayerForward(const DecoderLayer& layer, const ModelConfig& config,
                               const at::Tensor& hidden, const AttentionInputs& attn,
                               lora::DequantWorkspace& workspace, bool training,
                               uint64_t dropout_seed) {
  at::Tensor h = AttentionHalf(layer, config, hidden, attn, workspace, training, dropout_seed);
  return MlpHalf(layer, config, h, workspace, training, dropout_seed);
}

}  // namespace rigtune::model
