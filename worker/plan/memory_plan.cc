#include "worker/plan/memory_plan.h"

#include <algorithm>
#include <array>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"

namespace rigtune::plan {
namespace {

// Note [Memory plan]
// ~~~~~~~~~~~~~~~~~~
// The step's peak on one rank, term by term (d = bytes of the compute dtype,
// N = batch_size × context_length tokens of one micro-batch, L layers,
// H hidden, I intermediate, V vocabulary, P LoRA parameters, W ranks of a
// sharded strategy, 1 for no_shard and one process):
//
// - Frozen weights. A linear of n weights in NF4 with bitsandbytes' double
//   quantization: n/2 packed bytes, n/64 one-byte absmax codes, a float per
//   256 of those, the 256-entry nested map and the 16-entry code table; a
//   dense base (train.base bf16) is n × d, with no dequantize workspace;
//   hqq4 is n/2 code bytes and a float32 scale and zero per 64 weights. A
//   layer adds its two RMSNorm weights (and biases) in the compute dtype;
//   the embedding and the untied LM head are V × H in the compute dtype.
//   One process holds all of it; full_shard and hybrid hold 1/W of it plus
//   two gathered layers (the one computing and the one prefetched);
//   shard_grad_op keeps every gathered layer from forward to backward.
//   With dist.cpu_offload the shards live in pinned host memory and the GPU
//   holds the two layers in flight (plus the shard being copied up under
//   FSDP); the LM head is then gathered for the loss only.
// - Adapter: P float32 weights (1/W of them under FSDP), plus the two
//   layers in flight's copies whenever FsdpLayers serves the layers (several
//   ranks, or one rank streaming with dist.cpu_offload or
//   dist.offload_optimizer: a streaming slot holds the layer's adapter too).
//   AdamW's two float32 moments, 8 bytes per parameter, move to host memory
//   with dist.offload_optimizer, and so do the float32 masters and gradients
//   there (the GPU keeps the weights it computes with).
// - Gradients: float32. FsdpLayers keeps each rank's gradient shard for the
//   whole step (plus, in backward, the layer's own gradients), on one rank
//   as on several: with streamed layers every
//   gradient is alive at the start of backward, next to every layer input.
//   (Counting them as freed there under-planned Llama-2-70B with
//   dist.cpu_offload alone by 3 GiB: planned 18.28 GiB, out of memory at
//   19.99 GiB allocated under 22.) The model's own layers (one process, no
//   streaming) free their gradients after every optimizer step, so at the
//   start of backward (all layer inputs alive) they are one layer's, and at
//   its end (one input left) all of them: the plan takes the larger of the
//   two.
// - Layer inputs (activation checkpointing): L × N × H × d on the GPU, or
//   one with dist.activation_offload (the rest pinned on the host; the
//   previous layer's, prefetched during a backward, is within the fitted
//   working set, and counted in the tiled one).
// - Working set: the larger of one layer's recompute graph and the chunked
//   loss. The loss: N × H × (3d + 8) for the final norm and its gradient
//   plus 14 bytes per logit of one chunk of rows (bf16 product, float32
//   logits, log-softmax and gradient; the chunk is about 256 MB of float32
//   logits, see trainer.cc), plus the gathered head when it is not
//   resident. Without checkpointing every layer's graph is alive.
//   Untiled MLP: the graph is N × (42 H + 8 I) × d/2 bytes; the 42 and 8
//   were fitted to the one-GPU peaks of docs/benchmarks.md (Llama-2-7B,
//   Llama-3-8B, Llama-2-13B, Llama-2-70B at 4 × 2048): the plan is within 1%
//   of each of them, and within 2% of the three two-rank Llama-2-70B runs
//   capped at 22 GiB, which it was not fitted to.
//   Row-tiled MLP (long sequences, Note [Row-tiled MLP] in trainer.cc): a
//   fit to 4 × 2048 does not carry to 100,000 tokens, so the graph is
//   counted tensor by tensor (TiledLayerGraph), every tensor that may be
//   alive at the phase's peak counted as alive: per token, d × (3H + (Q +
//   2K) + 2Q) + 4 heads + 4 bytes kept from the attention half's recompute
//   to its backward (Q, K the query and key/value widths), then the larger
//   of one chunk's MLP, chunk × d × (5H + 6I), and the attention backward,
//   N × (d × (3Q + 2K) + 4Q + 4 heads), plus the rotary tables 2 N × head_dim
//   × d and the previous layer's input being prefetched, N × H × d. The same count for an untiled MLP (chunk = N) gives 16.29 GiB for
//   the graph alone of Llama-3.1-8B at 65,536 tokens, where the whole step
//   measured 15.83 GiB (docs/benchmarks.md): it over-counts, as it should;
//   tiled (4,608-row chunks) it is 6.05 GiB.
// - Workspace: the largest linear dequantized into the compute dtype
//   (float32 with DoRA, whose weight norms are taken in float32). DoRA's
//   magnitude adds `out` trainable parameters per adapted linear.
// - Slack: 3% for the caching allocator's fragmentation, plus a third of
//   the layer inputs kept on the device. Uncapped, the allocator reserves
//   5-12% more than it hands out, but under a cap it frees its cache and
//   retries before failing; the tightest measured run with offloaded inputs
//   (Llama-2-70B, two ranks, r=16) peaked at 21.02 GiB allocated under 22.
//   Inputs kept on the device are small long-lived blocks carved out of the
//   segments that the MLP's large transient blocks come from, and pin them:
//   Llama-2-70B with 5 GiB of inputs on the device failed to find 448 MiB
//   with 2.01 GiB of the cap unallocated (1.57 GiB unusable, 31% of the
//   inputs).
//
// - Kept gate/up products (train.recompute keep_mlp, Note [Keeping the
//   gate/up product] in llama.cc), P = N × 2I × d each. On the device
//   without activation offload: L × P. With it: the one prefetched during
//   a layer's backward next to the one its MLP backward reads (which
//   replaces the product the full recompute would allocate: already in the
//   working set), and in the forward the products of
//   kOffloadLayersInFlight layers still being copied to the host next to
//   the computing layer's product and activation, N × (3I + 2H) × d; the
//   plan counts P plus whatever the forward needs beyond the backward's
//   working set. The host holds L of them pinned, each rounded up to a
//   power of two by the pinned allocator (L × 512 MiB for Llama-2-7B). train.recompute auto keeps
//   them only where the plan still fits (PlanMemory falls back to full).
//
// Note [Where the kept products live]
// -----------------------------------
// train.recompute keep_mlp keeps every layer's product: in pinned host
// memory with activation offload, else on the device. auto goes further
// and uses the card's free room: on a card of known size (the job's cap, or
// the card less kContextReserve) it keeps the products of as many of the
// top layers on the device as fit kKeepMlpDeviceRoomShare of what the plan
// leaves free, and the other layers either go to the host (activation
// offload with host room: each on-device layer then saves a round trip over
// the host link, which is what bounds the forward, see benchmarks.md) or are
// recomputed in full (no offload: each kept layer saves its MLP's GEMMs).
// The top layers are the ones kept because the backward takes them first:
// their memory is given back earliest. Llama-2-70B at 4 × 2048 on one
// 140.4 GiB card: 0.875 GiB a product, 63 GiB planned without them, so 66
// of its 80 layers keep theirs. The plan counts L_d × P on the device.
//
// Host: ~1 GiB for the process itself (measured 0.97 GiB), the pinned
// frozen shards and layer inputs when offloaded, the adapter's float32
// state with dist.offload_optimizer (16 bytes per parameter), and while
// loading with dist.cpu_offload one layer in float32 (measured: 21.25 GiB
// for a 16.93 GiB shard of Llama-2-70B).
//
// Trained weights (train.method full, llama_pro's copies) offloaded
// (Note [Offloaded trained weights] in worker/dist/fsdp_weights.cc): with
// dist.cpu_offload their compute-dtype shards join the frozen ones on the
// host, and their float32 masters, gradients and moments go there too
// (16 bytes per parameter, 12 in fp32 where the shard is its own master);
// dist.offload_optimizer alone moves only the latter. The GPU then holds
// the two streamed layers in flight (sized for a dense layer), the shard
// being copied up under FSDP, one unit's gradients while they are reduced,
// the layer inputs and the working set.

constexpr int64_t kProcessHostBytes = kGiB;
constexpr double kSlack = 0.03;
constexpr int64_t kGraphBytesPerHidden = 42;       // per token, per unit of H, at d = 2
constexpr int64_t kGraphBytesPerIntermediate = 8;  // per token, per unit of I, at d = 2
constexpr int64_t kLogitBytes = 14;
constexpr int64_t kInputFragmentationDivisor = 3;

struct Linear {
  int64_t out, in;
};

std::array<Linear, 7> LayerLinears(const model::ModelConfig& m) {
  const int64_t q = m.num_heads * m.head_dim, kv = m.num_kv_heads * m.head_dim;
  const int64_t h = m.hidden_size, i = m.intermediate_size;
  if (m.fused_projections) {
    // Phi-3: one qkv_proj and one gate_up_proj (each quantized whole); the
    // k, v and up slots are empty.
    return {{{q + 2 * kv, h}, {0, h}, {0, h}, {h, q}, {2 * i, h}, {0, h}, {h, i}}};
  }
  return {{{q, h}, {kv, h}, {kv, h}, {h, q}, {i, h}, {i, h}, {h, i}}};
}

constexpr std::array<const char*, 7> kProjNames = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                   "gate_proj", "up_proj", "down_proj"};
constexpr std::array<const char*, 7> kFusedProjNames = {"qkv_proj",     "", "", "o_proj",
                                                        "gate_up_proj", "", "down_proj"};

int64_t Nf4Bytes(int64_t n) {
  const int64_t blocks = (n + 63) / 64;
  return (n + 1) / 2 + blocks + (blocks + 255) / 256 * 4 + 256 * 4 + 4 + 16 * 4;
}

int64_t DtypeBytes(const std::string& dtype) { return dtype == "fp32" ? 4 : 2; }

// Bytes of a frozen linear of n weights in the job's base format.
int64_t BaseBytes(const std::string& base, int64_t n, int64_t d) {
  if (base == "bf16") return n * d;
  if (base == "hqq4") return n / 2 + n / 64 * 8;  // codes, float32 scale and zero per 64
  return Nf4Bytes(n);
}

int64_t LayerFrozenBytes(const model::ModelConfig& m, const std::string& base, int64_t d) {
  // Norms: two a layer, four with Gemma's sandwich norms, plus q/k head norms.
  int64_t bytes = (m.sandwich_norms ? 4 : 2) * m.hidden_size * d;
  if (m.qk_norm) bytes += 2 * m.head_dim * d;
  for (const Linear& l : LayerLinears(m)) {
    if (l.out > 0) bytes += BaseBytes(base, l.out * l.in, d);
  }
  const int64_t q = m.num_heads * m.head_dim, kv = m.num_kv_heads * m.head_dim;
  if (m.qkv_bias) bytes += (q + 2 * kv) * d;
  if (m.o_bias) bytes += m.hidden_size * d;
  if (m.mlp_bias) bytes += (2 * m.intermediate_size + m.hidden_size) * d;
  return bytes;
}

int64_t LayerParameters(const model::ModelConfig& m) {
  int64_t n = 0;
  for (const Linear& l : LayerLinears(m)) n += l.out * l.in;
  return n;
}

// Whether the MLP's projections train with LoRA dropout, which keeps the
// trainer's MLP untiled (Note [Row-tiled MLP] in trainer.cc).
// Whether LoRA dropout applies to any of `modules` (lora.target_modules).
bool DropoutOnAnyOf(const train::JobConfig& job, std::initializer_list<const char*> modules) {
  if (job.lora.dropout <= 0) return false;
  const std::vector<std::string>& targets = job.lora.target_modules;
  return std::any_of(modules.begin(), modules.end(), [&](const char* p) {
    return std::find(targets.begin(), targets.end(), p) != targets.end();
  });
}

bool MlpTrainsWithDropout(const train::JobConfig& job) {
  return DropoutOnAnyOf(job, {"gate_proj", "up_proj", "down_proj"});
}

// One layer's recompute + backward with a row-tiled MLP, counted tensor by
// tensor (Note [Memory plan]): the rotary tables, the previous layer's
// input (prefetched during this one's backward), what the attention half
// keeps until its backward, and the larger of one MLP chunk's forward and
// backward and the attention half's own backward.
int64_t TiledLayerGraph(const model::ModelConfig& m, int64_t tokens, int64_t chunk, int64_t d) {
  const int64_t h = m.hidden_size, i = m.intermediate_size;
  const int64_t q = m.num_heads * m.head_dim, kv = m.num_kv_heads * m.head_dim;
  // Per token, from the attention half's recompute to its backward: its
  // output and the layer's output gradient (overwritten in place by the
  // attention half's), the normed input the QKV product saves, the rotated
  // QKV product, the attention output and its [tokens, q] copy for o_proj,
  // and the float32 log-sum-exp per head and 1/rms.
  const int64_t attention_kept = d * (3 * h + (q + 2 * kv) + 2 * q) + 4 * m.num_heads + 4;
  // Per token of one MLP chunk: its input, norm and output, the gate/up
  // product and the activation, then their gradients and those of the norm
  // and the input (all counted alive together).
  const int64_t mlp_row = d * (3 * h + 3 * i) + d * (3 * i + 2 * h);
  // Per token in the attention backward: the attention output's gradient,
  // the Q/K/V gradients, and flash attention's float32 dq accumulator and
  // softmax sums.
  const int64_t attention_backward = d * (q + (2 * q + 2 * kv)) + 4 * q + 4 * m.num_heads;
  const int64_t rotary = 2 * tokens * m.head_dim * d;
  const int64_t prefetched_input = tokens * h * d;
  return rotary + prefetched_input + tokens * attention_kept +
         std::max(chunk * mlp_row, tokens * attention_backward);
}

// Whether every layer's gate/up product of `job` can run as one product
// (model::MlpKeepsGateUp): no trained base weight, no DoRA, no MLP bias,
// and no dropout on gate/up.
bool GateUpRunsAsOneProduct(const model::ModelConfig& m, const train::JobConfig& job) {
  if (job.train.method == "full" || job.train.method == "dora" || m.mlp_bias) return false;
  return !DropoutOnAnyOf(job, {"gate_proj", "up_proj", "gate_up_proj"});
}

int64_t Percent(int64_t bytes, double fraction) {
  return static_cast<int64_t>(static_cast<double>(bytes) * fraction);
}

}  // namespace

int64_t DeviceBytes::Total() const {
  return frozen_weights + adapter + optimizer + gradients + layer_inputs + kept_products +
         working_set + workspace + slack;
}

int64_t HostBytes::Total() const {
  // The layer being built while loading is gone before the first step.
  return process + frozen_weights + std::max(loading, optimizer + layer_inputs + kept_products);
}

PlanDevice DeviceForJob(const train::JobConfig& job, double card_gib, int world_size) {
  PlanDevice device;
  device.world_size = std::max(1, world_size);
  if (job.dist.max_gpu_memory_gib > 0) {
    device.capacity_bytes = static_cast<int64_t>(job.dist.max_gpu_memory_gib * kGiB);
    device.capacity_source = "dist.max_gpu_memory_gib";
  } else if (card_gib > 0) {
    device.capacity_bytes = std::max<int64_t>(0, static_cast<int64_t>(card_gib * kGiB) -
                                                     kContextReserve);
    device.capacity_source =
        absl::StrFormat("a %.4g GiB card less %d GiB for the CUDA context", card_gib,
                        kContextReserve / kGiB);
  }
  return device;
}

int64_t LoraParameterCount(const model::ModelConfig& model, const train::LoraConfig& lora,
                           bool dora) {
  const std::array<Linear, 7> linears = LayerLinears(model);
  int64_t per_layer = 0;
  // A fused model trained with the default (every Llama linear) adapts
  // every fused linear (model::ResolveTargetModules).
  std::vector<std::string> targets = lora.target_modules;
  if (model.fused_projections) {
    std::vector<std::string> all(kProjNames.begin(), kProjNames.end()), given = targets;
    std::sort(all.begin(), all.end());
    std::sort(given.begin(), given.end());
    if (given == all) targets = {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"};
  }
  const auto& names = model.fused_projections ? kFusedProjNames : kProjNames;
  for (size_t p = 0; p < linears.size(); ++p) {
    if (linears[p].out == 0) continue;
    const bool adapted =
        std::find(targets.begin(), targets.end(), names[p]) != targets.end();
    if (adapted) per_layer += lora.r * (linears[p].in + linears[p].out) + (dora ? linears[p].out : 0);
  }
  return per_layer * model.num_layers;
}

int64_t FullParameterCount(const model::ModelConfig& m) {
  // A dense layer of one byte per weight counts its weights, norms and biases.
  const int64_t embedding = m.vocab_size * m.hidden_size;
  return m.num_layers * LayerFrozenBytes(m, "bf16", 1) + embedding + m.hidden_size +
         (m.tie_word_embeddings ? 0 : embedding);
}

// The model the job trains: with train.method llama_pro, the original plus
// one copy after every expand_every-th layer.
model::ModelConfig TrainedModel(const model::ModelConfig& m, const train::JobConfig& job) {
  model::ModelConfig out = m;
  if (job.train.method == "llama_pro" && job.train.expand_every > 0) {
    out.num_layers += m.num_layers / job.train.expand_every;
  }
  return out;
}

namespace {

// The plan with `device_kept` of the top layers' gate/up products kept on
// the device where train.recompute auto may keep them there (PlanMemory
// picks the number; Note [Where the kept products live]).
MemoryPlan PlanKeeping(const model::ModelConfig& original, const train::JobConfig& job,
                       const PlanDevice& device, int64_t device_kept) {
  const model::ModelConfig m = TrainedModel(original, job);
  const int64_t d = DtypeBytes(job.train.dtype);
  const int64_t world = std::max(1, device.world_size);
  const int64_t layers = std::max<int64_t>(1, m.num_layers);
  const bool no_shard = job.dist.sharding == "no_shard";
  const int64_t shards = world > 1 && !no_shard ? world : 1;  // W of Note [Memory plan]
  const bool fsdp = world > 1;
  const bool offload = job.dist.cpu_offload;
  const bool host_optimizer = job.dist.offload_optimizer;
  const bool streamed = offload || host_optimizer;  // FsdpLayers even on one process

  // Frozen weights.
  const int64_t layer = LayerFrozenBytes(m, job.train.base, d);
  const int64_t head = m.vocab_size * m.hidden_size * d + m.hidden_size * d;
  const int64_t embedding = m.vocab_size * m.hidden_size * d;
  const int64_t frozen_total =
      layers * layer + (m.tie_word_embeddings ? m.hidden_size * d : head) + embedding;
  MemoryPlan plan;
  DeviceBytes& dev = plan.device;
  int64_t head_gather = 0;  // the LM head, gathered for the loss when not resident
  if (offload) {
    dev.frozen_weights = 2 * layer + (shards > 1 ? layer / shards : 0);
    head_gather = head;
  } else if (shards == 1) {
    dev.frozen_weights = frozen_total;
  } else {
    const int64_t gathered = job.dist.sharding == "shard_grad_op" ? layers : 2;
    dev.frozen_weights = frozen_total / shards + gathered * layer;
    head_gather = head;
  }

  // Adapter, optimizer, gradients.
  const bool dora = job.train.method == "dora";
  const int64_t params = LoraParameterCount(m, job.lora, dora);
  const int64_t layer_params = params / layers;
  plan.trainable_parameters = params;
  // Under FsdpLayers the two layers in flight compute with copies of their
  // adapters (gathered, or copied into a streaming slot).
  dev.adapter = 4 * params / shards + (fsdp || streamed ? 2 * 4 * layer_params : 0);
  dev.optimizer = host_optimizer ? 0 : 8 * params / shards;
  const int64_t all_grads = host_optimizer ? 4 * layer_params : 4 * params / shards;

  // Activations.
  const int64_t tokens = job.train.batch_size * job.train.context_length;
  // Soft-capped attention (Gemma 2) runs eagerly: its [B, heads, T, T]
  // scores, their tanh, the float32 softmax and its cast stay for backward.
  const int64_t seq = job.train.context_length;
  const int64_t eager_scores =
      m.attn_softcap > 0 ? job.train.batch_size * m.num_heads * seq * seq * (3 * d + 4) : 0;
  const bool checkpointing = job.train.activation_checkpointing;
  const int64_t mlp_chunk =
      checkpointing && !MlpTrainsWithDropout(job)
          ? MlpChunkTokens(tokens, m.intermediate_size, d, job.train.mlp_chunk_tokens)
          : 0;
  plan.mlp_chunk_tokens = mlp_chunk;
  const int64_t graph = (mlp_chunk > 0 ? TiledLayerGraph(m, tokens, mlp_chunk, d)
                                       : tokens *
                                             (kGraphBytesPerHidden * m.hidden_size +
                                              kGraphBytesPerIntermediate * m.intermediate_size) *
                                             d / 2) +
                        eager_scores;
  const int64_t chunk = std::min(tokens, std::max<int64_t>(64, (int64_t{64} << 20) / m.vocab_size));
  const int64_t loss =
      tokens * m.hidden_size * (3 * d + 8) + chunk * m.vocab_size * kLogitBytes + head_gather;
  const int64_t input = tokens * m.hidden_size * d;
  const bool inputs_on_host = checkpointing && job.dist.activation_offload;
  // Kept gate/up products (Note [Memory plan]).
  // The host then pins them beside the inputs, the process and whatever
  // else this rank keeps there (frozen shards, optimizer state).
  const int64_t product = GateUpProductBytes(tokens, m.intermediate_size, d);
  const int64_t host_needed = layers * (PinnedHostBytes(product) + PinnedHostBytes(input)) +
                              kProcessHostBytes + (offload ? frozen_total / shards : 0) +
                              (host_optimizer ? 16 * params / shards : 0);
  const Recompute policy = ParseRecompute(job.train.recompute);
  const bool can_keep = checkpointing && GateUpRunsAsOneProduct(m, job) && mlp_chunk == 0;
  const int64_t on_device_asked = std::clamp<int64_t>(device_kept, 0, layers);
  int64_t kept = 0, on_device = 0;
  if (can_keep && inputs_on_host &&
      KeepsMlpProducts(policy, true, mlp_chunk, host_needed, device.host_memory_bytes)) {
    kept = layers;  // on the host, but for the top ones auto keeps on the device
    on_device = policy == Recompute::kAuto ? on_device_asked : 0;
  } else if (can_keep && policy == Recompute::kKeepMlp) {
    kept = on_device = layers;
  } else if (can_keep && policy == Recompute::kAuto) {
    kept = on_device = on_device_asked;
  }
  plan.kept_mlp_layers = kept;
  plan.device_kept_mlp_layers = on_device;
  plan.keeps_mlp_products = kept > 0;
  dev.kept_products = on_device * product;
  if (kept > on_device) {
    const int64_t forward = kOffloadLayersInFlight * product +
                            tokens * (3 * m.intermediate_size + 2 * m.hidden_size) * d;
    dev.kept_products += product + std::max<int64_t>(0, forward - (graph + product));
    plan.host.kept_products = (kept - on_device) * PinnedHostBytes(product);
  }
  int64_t inputs = 0, working = 0;
  if (checkpointing) {
    inputs = inputs_on_host ? input : layers * input;
    working = std::max(loss, graph);
  } else {
    working = layers * graph + loss;
  }
  if (fsdp || streamed) {
    // FsdpLayers (several ranks, or one streaming from host memory) keeps the
    // gradient shards for the whole step, so every layer input and every
    // gradient are alive together at the start of backward; in backward the
    // layer's own gradients come on top.
    dev.gradients = all_grads + 4 * layer_params;
    dev.layer_inputs = inputs;
    dev.working_set = working;
  } else {
    // Start of backward (every input, one layer's gradients) against its
    // end (one input, every gradient); see Note [Memory plan].
    const int64_t start = inputs + working + 4 * layer_params;
    const int64_t end = input + graph + all_grads;
    const bool at_start = !checkpointing || start >= end;
    dev.layer_inputs = at_start ? inputs : input;
    dev.working_set = at_start ? working : graph;
    dev.gradients = at_start ? (checkpointing ? 4 * layer_params : all_grads) : all_grads;
  }
  int64_t widest = 0;
  for (const Linear& l : LayerLinears(m)) widest = std::max(widest, l.out * l.in);
  // A dense base in the compute dtype multiplies as it is; only grouped
  // products (Q/K/V, gate/up on CUDA) stack it into the workspace, which the
  // plan counts for both formats.
  // DoRA's row norms of W + s·B·A are taken in float32 in the same buffer.
  dev.workspace = widest * (dora ? 4 : d);
  // The compute-dtype parameters of one dense layer (what a trained layer
  // gathers), and the largest single gradient a unit's backward produces
  // (a layer, or the embedding / LM head table) before it is reduced.
  const int64_t dense_layer = LayerFrozenBytes(m, "bf16", 1);
  const int64_t unit_grad = std::max(dense_layer, m.vocab_size * m.hidden_size);
  const int64_t gathered = job.dist.sharding == "shard_grad_op" ? layers : 2;
  // Trained weights are served by FsdpLayers on several ranks and when
  // streamed; AdamW runs on the host with either offload flag; a host
  // master of its own unless the fp32 shard on the host is the master.
  const bool sharded_weights = fsdp || streamed;
  const int64_t host_master = d == 4 && offload ? 0 : 4;
  int64_t host_weights = offload ? frozen_total / shards : 0;
  int64_t host_state = host_optimizer ? 16 * params / shards : 0;
  if (job.train.method == "full") {
    // Full fine-tuning: every tensor trains. The weights in the compute
    // dtype (counted as frozen_weights: they are what the layers read),
    // float32 masters (none in fp32: the weights are their own), gradients
    // and two float32 AdamW moments. No LoRA, no dequantize workspace
    // (trained linears never join grouped products).
    const int64_t full = FullParameterCount(m);
    const int64_t masters = d == 4 ? 0 : 4 * full;
    plan.trainable_parameters = full;
    dev.workspace = 0;
    dev.layer_inputs = inputs;
    dev.working_set = working;
    if (sharded_weights) {
      // Sharded (FsdpLayers, Note [Sharded weights] in fsdp_weights.cc):
      // each rank keeps 1/W of the weights, masters, float32 gradients and
      // moments, plus the gathered layers in flight (the gathered head is
      // in the working set), and one unit's gradients in the compute dtype
      // with their float32 flattening while they are reduce-scattered.
      // Offloaded, the shards or the optimizer state sit on the host.
      dev.frozen_weights = offload
                               ? 2 * d * dense_layer + (shards > 1 ? d * dense_layer / shards : 0)
                               : d * full / shards + (shards > 1 ? gathered * d * dense_layer : 0);
      const bool host = offload || host_optimizer;
      dev.adapter = host ? 0 : masters / shards;
      dev.optimizer = host ? 0 : 8 * full / shards;
      dev.gradients = (host ? 0 : 4 * full / shards) + (d + 4) * unit_grad;
      host_state = host ? (host_master + 12) * full / shards : 0;
    } else {
      // One process (FullModelLayers): gradients accumulate on the weights
      // through the whole step: with gradient accumulation all of them are
      // alive beside a later micro-batch's layer inputs and working set, so
      // the plan counts the three together (in the compute dtype, plus
      // their float32 widening for the step outside fp32).
      dev.frozen_weights = d * full;
      dev.adapter = masters;
      dev.optimizer = 8 * full;
      dev.gradients = d * full + masters;
    }
  } else if (job.train.method == "llama_pro") {
    // Block expansion: the original layers stay frozen in train.base's
    // format (counted above, as are the copies, in that format); the copies
    // are dense in the compute dtype instead and train like full
    // fine-tuning: masters, gradients, moments; sharded 1/W like the rest
    // under FSDP.
    const int64_t added = m.num_layers - original.num_layers;
    const int64_t trained = added * dense_layer;
    const int64_t masters = d == 4 ? 0 : 4 * trained;
    plan.trainable_parameters = trained;
    dev.layer_inputs = inputs;
    dev.working_set = working;
    if (sharded_weights) {
      if (offload) {
        // The streaming slots fit the largest layer: a dense copy.
        dev.frozen_weights = 2 * std::max(layer, d * dense_layer) +
                             (shards > 1 ? std::max(layer, d * dense_layer) / shards : 0);
        host_weights += added * (d * dense_layer - layer) / shards;
      } else {
        dev.frozen_weights +=
            added * (d * dense_layer - layer) / shards +
            (shards > 1 ? gathered * std::max<int64_t>(0, d * dense_layer - layer) : 0);
      }
      const bool host = offload || host_optimizer;
      dev.adapter = host ? 0 : masters / shards;
      dev.optimizer = host ? 0 : 8 * trained / shards;
      dev.gradients = (host ? 0 : 4 * trained / shards) + (d + 4) * dense_layer;
      host_state = host ? (host_master + 12) * trained / shards : 0;
    } else {
      dev.frozen_weights += added * (d * dense_layer - layer);
      dev.adapter = masters;
      dev.optimizer = 8 * trained;
      dev.gradients = d * trained + masters;
    }
  }
  // Layer inputs kept on the device fragment the allocator's segments (see
  // Note [Memory plan]): a third of them is counted as unusable.
  const int64_t pinned_inputs = inputs_on_host ? 0 : dev.layer_inputs;
  dev.slack = Percent(dev.Total(), kSlack) + pinned_inputs / kInputFragmentationDivisor;

  HostBytes& host = plan.host;
  host.process = kProcessHostBytes;
  host.frozen_weights = host_weights;
  host.optimizer = host_state;
  host.layer_inputs = inputs_on_host ? layers * input : 0;
  host.loading = offload ? 4 * LayerParameters(m) : 0;

  plan.capacity_bytes = device.capacity_bytes;
  plan.capacity_source = device.capacity_source;
  plan.world_size = static_cast<int>(world);
  return plan;
}

}  // namespace

MemoryPlan PlanMemory(const model::ModelConfig& original, const train::JobConfig& job,
                      const PlanDevice& device, bool use_free_room) {
  MemoryPlan plan = PlanKeeping(original, job, device, 0);
  if (ParseRecompute(job.train.recompute) != Recompute::kAuto) return plan;
  // train.recompute auto never costs a job its fit: where the products kept
  // in host memory would not fit the card, the step recomputes in full
  // (run_job follows the plan's choice).
  if (plan.keeps_mlp_products && !plan.fits()) {
    train::JobConfig full = job;
    full.train.recompute = "full";
    return PlanKeeping(original, full, device, 0);
  }
  // Room left on a card of known size holds the top layers' products on
  // the device (Note [Where the kept products live]).
  const model::ModelConfig m = TrainedModel(original, job);
  const int64_t d = DtypeBytes(job.train.dtype);
  const int64_t product =
      GateUpProductBytes(job.train.batch_size * job.train.context_length, m.intermediate_size, d);
  const int64_t room = plan.capacity_bytes - plan.device.Total();
  if (!use_free_room || plan.capacity_bytes <= 0 || room <= 0 || product <= 0) return plan;
  int64_t fit = static_cast<int64_t>(kKeepMlpDeviceRoomShare * static_cast<double>(room) /
                                     (static_cast<double>(product) * (1.0 + kSlack)));
  for (fit = std::min<int64_t>(fit, m.num_layers); fit > 0; --fit) {
    MemoryPlan kept = PlanKeeping(original, job, device, fit);
    if (kept.device_kept_mlp_layers == 0) return plan;  // this job cannot keep products
    if (kept.fits()) return kept;
  }
  return plan;
}

}  // namespace rigtune::plan
