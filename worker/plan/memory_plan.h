// PlanMemory: what one training job needs on each of its GPUs (and in host
// memory), computed from the model's shape and the job's settings before
// anything is loaded. A pure function: the worker logs it as its first line,
// the daemon refuses a job that cannot fit at submission, and `rigtune plan`
// prints it, all from the same numbers.
//
//   ASSIGN_OR_RETURN(model::ModelConfig m, model::SourceModelConfig(job.model));
//   MemoryPlan plan = PlanMemory(m, job, PlanDevice{22.0 * kGiB, "dist.max_gpu_memory_gib", 1});
//   if (!plan.fits()) ...  // see fit_advice.h for the settings that would fit
//
// The parts are what is alive at the step's peak on one rank; the
// coefficients come from the peaks measured in docs/benchmarks.md (see
// Note [Memory plan] in memory_plan.cc for every term and how close it is).
#ifndef RIGTUNE_WORKER_PLAN_MEMORY_PLAN_H_
#define RIGTUNE_WORKER_PLAN_MEMORY_PLAN_H_

#include <cstdint>
#include <string>

#include "worker/model/config.h"
#include "worker/plan/step_policy.h"
#include "worker/train/job_config.h"

namespace rigtune::plan {

// What the job is planned against.
struct PlanDevice {
  // Bytes the CUDA caching allocator may hold on each GPU; 0 = unknown (the
  // plan is computed but fits() is true).
  int64_t capacity_bytes = 0;
  // Where capacity_bytes came from, for messages ("dist.max_gpu_memory_gib",
  // "--gpu-memory-gib 24 less 2 GiB for the CUDA context").
  std::string capacity_source;
  int world_size = 1;  // ranks, one per GPU
  // The host's memory for this rank (its RAM over the ranks that share it),
  // for train.recompute auto; 0 = unknown (kept products assumed to fit).
  int64_t host_memory_bytes = 0;
};

// The capacity for a job: its dist.max_gpu_memory_gib cap when set (the
// allocator's own limit), else a card of `card_gib` GiB less kContextReserve
// (the CUDA context, NCCL buffers and the driver live outside the
// allocator), else unknown.
inline constexpr int64_t kContextReserve = 2 * kGiB;
PlanDevice DeviceForJob(const train::JobConfig& job, double card_gib, int world_size);

// Bytes on one GPU at the step's peak.
struct DeviceBytes {
  int64_t frozen_weights = 0;   // NF4 linears + norms + embedding/head resident or in flight
  int64_t adapter = 0;          // LoRA A/B in float32 (the masters unless offloaded)
  int64_t optimizer = 0;        // AdamW moments (0 with dist.offload_optimizer)
  int64_t gradients = 0;        // float32 LoRA gradients alive at the peak
  int64_t layer_inputs = 0;     // checkpointed layer inputs kept for backward
  // Kept MLP gate/up products (train.recompute keep_mlp): every layer's, or
  // with activation offload the prefetched one (and those in flight to host).
  int64_t kept_products = 0;
  int64_t working_set = 0;      // one layer's recompute graph, or the chunked loss
  int64_t workspace = 0;        // the shared dequantize buffer
  int64_t slack = 0;            // allocator fragmentation
  int64_t Total() const;
};

// Resident host memory of one rank at its peak.
struct HostBytes {
  int64_t process = 0;         // LibTorch, CUDA runtime, the data pipeline
  int64_t frozen_weights = 0;  // pinned frozen shards (dist.cpu_offload)
  // Masters, gradients and moments (dist.offload_optimizer; for trained
  // weights also dist.cpu_offload).
  int64_t optimizer = 0;
  int64_t layer_inputs = 0;    // pinned layer inputs (dist.activation_offload)
  int64_t kept_products = 0;   // pinned MLP gate/up products (train.recompute keep_mlp)
  int64_t loading = 0;         // the layer being built while loading
  int64_t Total() const;       // loading and the step do not overlap
};

struct MemoryPlan {
  DeviceBytes device;
  HostBytes host;
  int64_t capacity_bytes = 0;
  std::string capacity_source;
  int world_size = 1;
  // Adapter parameters of the whole model (train.method full: all of them).
  int64_t trainable_parameters = 0;
  int64_t mlp_chunk_tokens = 0;      // rows per MLP chunk in the step, 0 = untiled
  bool keeps_mlp_products = false;   // train.recompute resolved to keep_mlp
  // With keep_mlp: how many layers keep their product (the top ones, counted
  // from the last), and how many of those stay on the device; the others go
  // to pinned host memory (activation offload). See Note [Where the kept
  // products live] in memory_plan.cc.
  int64_t kept_mlp_layers = 0;
  int64_t device_kept_mlp_layers = 0;
  bool fits() const { return capacity_bytes <= 0 || device.Total() <= capacity_bytes; }
};

// With `use_free_room` false, the plan leaves out the products that
// train.recompute auto keeps in the card's free room (Note [Where the kept
// products live]): the least the job needs, which fit advice reports.
MemoryPlan PlanMemory(const model::ModelConfig& model, const train::JobConfig& job,
                      const PlanDevice& device, bool use_free_room = true);

// Trainable parameters of `model` with `lora`: r × (in + out) per adapted
// linear, plus `out` for DoRA's magnitude vector (`dora`: train.method dora).
int64_t LoraParameterCount(const model::ModelConfig& model, const train::LoraConfig& lora,
                           bool dora = false);
// Every parameter of `model` (train.method full): embedding, each layer's
// linears, biases and norms, the final norm, and an untied LM head.
int64_t FullParameterCount(const model::ModelConfig& model);

}  // namespace rigtune::plan

#endif  // RIGTUNE_WORKER_PLAN_MEMORY_PLAN_H_
