#include "worker/plan/memory_plan.h"

#include <algorithm>
#include <array>

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
// - Adapter: P float32 weights (1/W of them under FSDP, plus the two
//   gathered layers'). AdamW's two float32 moments, 8 bytes per parameter,
//   move to host memory with dist.offload_optimizer, and so do the float32
//   masters and gradients there (the GPU keeps the weights it computes with).
// - Gradients: float32. FSDP keeps each rank's gradient shard for the whole
//   step (plus one gathered layer's before its reduce-scatter). One process
//   frees its gradients after every optimizer step, so at the start of
//   backward (all layer inputs alive) they are one layer's, and at its end
//   (one input left) all of them: the plan takes the larger of the two.
// - Layer inputs (activation checkpointing): L × N × H × d, on the GPU, or
//   one at a time with dist.activation_offload (the rest pinned on the host).
// - Working set: the larger of one layer's recompute graph, N × (42 H + 8 I)
//   × d/2 bytes, and the chunked loss, N × H × (3d + 8) for the final norm
//   and its gradient plus 14 bytes per logit of one chunk of rows (bf16
//   product, float32 logits, log-softmax and gradient; the chunk is about
//   256 MB of float32 logits, see trainer.cc), plus the gathered head when it
//   is not resident. Without checkpointing every layer's graph is alive.
//   The 42 and 8 were fitted to the one-GPU peaks of docs/benchmarks.md
//   (Llama-2-7B, Llama-3-8B, Llama-2-13B, Llama-2-70B at 4 × 2048): the plan
//   is within 1% of each of them, and within 2% of the three two-rank
//   Llama-2-70B runs capped at 22 GiB, which it was not fitted to.
// - Workspace: the largest linear dequantized into the compute dtype
//   (float32 with DoRA, whose weight norms are taken in float32). DoRA's
//   magnitude adds `out` trainable parameters per adapted linear.
// - Slack: 3% for the caching allocator's fragmentation. Uncapped, the
//   allocator reserves 5-12% more than it hands out, but under a cap it
//   frees its cache and retries before failing; the tightest measured run
//   (Llama-2-70B, two ranks, r=16) peaked at 21.02 GiB allocated under 22.
//
// Host: ~1 GiB for the process itself (measured 0.97 GiB), the pinned
// frozen shards and layer inputs when offloaded, the adapter's float32
// state with dist.offload_optimizer (16 bytes per parameter), and while
// loading with dist.cpu_offload one layer in float32 (measured: 21.25 GiB
// for a 16.93 GiB shard of Llama-2-70B).

constexpr int64_t kProcessHostBytes = kGiB;
constexpr double kSlack = 0.03;
constexpr int64_t kGraphBytesPerHidden = 42;       // per token, per unit of H, at d = 2
constexpr int64_t kGraphBytesPerIntermediate = 8;  // per token, per unit of I, at d = 2
constexpr int64_t kLogitBytes = 14;

struct Linear {
  int64_t out, in;
};

std::array<Linear, 7> LayerLinears(const model::ModelConfig& m) {
  const int64_t q = m.num_heads * m.head_dim, kv = m.num_kv_heads * m.head_dim;
  const int64_t h = m.hidden_size, i = m.intermediate_size;
  return {{{q, h}, {kv, h}, {kv, h}, {h, q}, {i, h}, {i, h}, {h, i}}};
}

constexpr std::array<const char*, 7> kProjNames = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                   "gate_proj", "up_proj", "down_proj"};

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
  int64_t bytes = 2 * m.hidden_size * d;
  for (const Linear& l : LayerLinears(m)) bytes += BaseBytes(base, l.out * l.in, d);
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

int64_t Percent(int64_t bytes, double fraction) {
  return static_cast<int64_t>(static_cast<double>(bytes) * fraction);
}

}  // namespace

int64_t DeviceBytes::Total() const {
  return frozen_weights + adapter + optimizer + gradients + layer_inputs + working_set +
         workspace + slack;
}

int64_t HostBytes::Total() const {
  // The layer being built while loading is gone before the first step.
  return process + frozen_weights + std::max(loading, optimizer + layer_inputs);
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
  for (size_t p = 0; p < linears.size(); ++p) {
    const bool adapted = std::find(lora.target_modules.begin(), lora.target_modules.end(),
                                   kProjNames[p]) != lora.target_modules.end();
    if (adapted) per_layer += lora.r * (linears[p].in + linears[p].out) + (dora ? linears[p].out : 0);
  }
  return per_layer * model.num_layers;
}

MemoryPlan PlanMemory(const model::ModelConfig& m, const train::JobConfig& job,
                      const PlanDevice& device) {
  const int64_t d = DtypeBytes(job.train.dtype);
  const int64_t world = std::max(1, device.world_size);
  const int64_t layers = std::max<int64_t>(1, m.num_layers);
  const bool no_shard = job.dist.sharding == "no_shard";
  const int64_t shards = world > 1 && !no_shard ? world : 1;  // W of Note [Memory plan]
  const bool fsdp = world > 1;
  const bool offload = job.dist.cpu_offload;
  const bool host_optimizer = job.dist.offload_optimizer;

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
  dev.adapter = 4 * params / shards + (shards > 1 ? 2 * 4 * layer_params : 0);
  dev.optimizer = host_optimizer ? 0 : 8 * params / shards;
  const int64_t all_grads = host_optimizer ? 4 * layer_params : 4 * params / shards;

  // Activations.
  const int64_t tokens = job.train.batch_size * job.train.context_length;
  const int64_t graph = tokens *
                        (kGraphBytesPerHidden * m.hidden_size +
                         kGraphBytesPerIntermediate * m.intermediate_size) *
                        d / 2;
  const int64_t chunk = std::min(tokens, std::max<int64_t>(64, (int64_t{64} << 20) / m.vocab_size));
  const int64_t loss =
      tokens * m.hidden_size * (3 * d + 8) + chunk * m.vocab_size * kLogitBytes + head_gather;
  const int64_t input = tokens * m.hidden_size * d;
  const bool checkpointing = job.train.activation_checkpointing;
  const bool inputs_on_host = checkpointing && job.dist.activation_offload;
  int64_t inputs = 0, working = 0;
  if (checkpointing) {
    inputs = inputs_on_host ? input : layers * input;
    working = std::max(loss, graph);
  } else {
    working = layers * graph + loss;
  }
  if (fsdp) {
    dev.gradients = all_grads + (shards > 1 ? 4 * layer_params : 0);
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
  dev.slack = Percent(dev.Total(), kSlack);

  HostBytes& host = plan.host;
  host.process = kProcessHostBytes;
  host.frozen_weights = offload ? frozen_total / shards : 0;
  host.optimizer = host_optimizer ? 16 * params / shards : 0;
  host.layer_inputs = inputs_on_host ? layers * input : 0;
  host.loading = offload ? 4 * LayerParameters(m) : 0;

  plan.capacity_bytes = device.capacity_bytes;
  plan.capacity_source = device.capacity_source;
  plan.world_size = static_cast<int>(world);
  return plan;
}

}  // namespace rigtune::plan
