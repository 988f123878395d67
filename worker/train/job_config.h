// JobConfig: everything one training job needs, as the worker reads it.
//
// The coordinator turns a JobService JobSpec into this JSON "job file" and
// hands it to every rank (`rigtune-worker --job job.json`); a person can write
// one by hand to run a worker standalone (Slurm, Kubernetes, debugging). The
// field names are the same as the proto's JobSpec fields. Example:
//
//   {"model": "random:tiny", "dataset": {"path": "data.jsonl", "format": "alpaca"},
//    "lora": {"r": 8, "alpha": 16}, "optim": {"lr": 2e-4, "schedule": "cosine"},
//    "train": {"context_length": 256, "batch_size": 2, "max_steps": 20},
//    "output_dir": "out/job-1"}
//
// Every field has a default; unknown fields and out-of-range values are errors
// naming the field (e.g. "lora.r: must be >= 1, got 0").
#ifndef RIGTUNE_WORKER_TRAIN_JOB_CONFIG_H_
#define RIGTUNE_WORKER_TRAIN_JOB_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace rigtune::train {

struct DatasetConfig {
  std::string path;               // .jsonl or .json; empty with a random: model = synthetic tokens
  std::string format = "alpaca";  // alpaca | messages | text
  bool train_on_prompt = false;   // false: prompt tokens get label -100
  bool packing = true;            // several examples per sequence
  std::string chat_template;      // messages: Jinja text used instead of the model's own
  std::string chat_template_kwargs;  // messages: JSON object of extra template variables
  // Held-out data for the validation loss (at most one of the two): a file in
  // the same format, or a deterministic fraction in (0, 0.5] of `path`'s
  // examples, which are then left out of training.
  std::string validation_path;
  double validation_fraction = 0;
};

struct LoraConfig {
  int64_t r = 64;
  double alpha = 16.0;
  double dropout = 0.0;
  bool use_rslora = false;  // scale alpha/sqrt(r) instead of alpha/r
  std::vector<std::string> target_modules = {"q_proj", "k_proj", "v_proj", "o_proj",
                                             "gate_proj", "up_proj", "down_proj"};
};

struct OptimConfig {
  double lr = 2e-4;
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  std::string schedule = "cosine";  // constant | linear | cosine
  double warmup_ratio = 0.0;        // fraction of total steps, or
  int64_t warmup_steps = 0;         // an explicit count (wins when > 0)
  double max_grad_norm = 1.0;       // <= 0 disables clipping
};

struct TrainConfig {
  // What the base weights are and what trains, chosen independently. A job
  // file that names neither trains LoRA on an NF4 base (QLoRA).
  std::string base = "nf4";     // frozen base weights: nf4 | bf16 (dense, compute dtype) | hqq4
  // What trains: lora | dora (PEFT's use_dora) | full (every tensor; needs
  // base bf16; the lora section is ignored) | llama_pro (new blocks only).
  std::string method = "lora";
  // train.method llama_pro: a copy of every expand_every-th decoder layer is
  // inserted after it (identity-initialised, see block_expansion.h); only
  // the copies train.
  int64_t expand_every = 0;
  int64_t context_length = 512;
  int64_t batch_size = 1;  // sequences per rank per micro-step
  int64_t grad_accum = 1;
  int64_t epochs = 1;
  int64_t max_steps = 0;  // > 0 caps optimizer steps
  uint64_t seed = 42;
  bool activation_checkpointing = true;
  std::string dtype = "bf16";   // compute dtype: bf16 | fp16 | fp32
  std::string device = "auto";  // auto | cpu | cuda
  // With validation data: evaluate every N optimizer steps (0: only at the
  // end; the end of training is always evaluated).
  int64_t eval_every_steps = 0;
  // > 0: stop (successfully) after this many evaluations without a new best.
  int64_t early_stopping_patience = 0;
  // Rows of the MLP computed at once in the checkpointed step: 0 = automatic
  // (untiled unless the micro-batch's MLP intermediates pass 1 GiB; see
  // plan::MlpChunkTokens); > 0 tiles whenever a micro-batch has more tokens.
  // Needs lora.dropout = 0 when > 0.
  int64_t mlp_chunk_tokens = 0;
  // What the checkpointed step's recompute rebuilds: full (every layer from
  // its input) | keep_mlp (the no-grad forward keeps each layer's MLP gate/up
  // product, in pinned host memory with dist.activation_offload, and the
  // recompute skips the MLP's GEMMs) | auto (keep_mlp with activation
  // offload when the products fit half the host's memory and the MLP is not
  // row-tiled; full otherwise). See plan::KeepsMlpProducts.
  std::string recompute = "auto";
};

struct DistConfig {
  std::string sharding = "full_shard";  // full_shard | shard_grad_op | no_shard | hybrid
  bool cpu_offload = false;
  bool activation_offload = false;
  // LoRA float32 masters, AdamW moments and gradients in host memory, AdamW
  // on the host (the GPU holds only the layers in flight).
  bool offload_optimizer = false;
  double max_gpu_memory_gib = 0;  // > 0 caps the CUDA caching allocator
  double timeout_seconds = 600;   // collective timeout
  // auto: NCCL on GPUs, Gloo on the CPU; gloo on GPUs stages through host
  // memory (slower; for ranks that share a GPU or hosts without NCCL).
  std::string backend = "auto";  // auto | nccl | gloo
};

struct CheckpointConfig {
  int64_t every_steps = 0;  // 0: only at the end
  int64_t keep_last = 2;
  bool keep_best = false;  // by validation loss when the job has validation data
};

struct JobConfig {
  std::string job_id;
  std::string model;  // HF folder, or random:<shape> (llama2-7b, llama3-8b, llama2-70b, tiny, ...)
  DatasetConfig dataset;
  LoraConfig lora;
  OptimConfig optim;
  TrainConfig train;
  DistConfig dist;
  CheckpointConfig checkpoint;
  std::string output_dir;
  std::string resume_from;  // checkpoint folder; empty = fresh start
};

// Parses and validates a job file's JSON text. Errors name the field.
absl::StatusOr<JobConfig> ParseJobConfig(const std::string& json_text);
// Reads `path` and parses it; errors name the file.
absl::StatusOr<JobConfig> LoadJobConfig(const std::string& path);
// Whether the job evaluates a validation loss.
inline bool HasValidation(const JobConfig& c) {
  return !c.dataset.validation_path.empty() || c.dataset.validation_fraction > 0;
}

// The canonical JSON form (round-trips through ParseJobConfig).
std::string JobConfigToJson(const JobConfig& config);

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_JOB_CONFIG_H_
