// Merging a LoRA adapter into its base model: `rigtune-worker merge`.
//
// Reads a Hugging Face base folder (bf16/fp16/fp32 safetensors, or a
// bitsandbytes pre-quantized "bnb-4bit" checkpoint) and a PEFT adapter folder
// (adapter_config.json + adapter_model.safetensors), and writes a bf16 Hugging
// Face model folder where every adapted projection holds
//   W' = W + scale * B @ A,   scale = lora_alpha / r  (rsLoRA: / sqrt(r)),
// computed in float32 and rounded once to bf16. Every other tensor is copied
// (floating-point ones cast to bf16). With `quantize_nf4` the decoder's
// projections are written in bitsandbytes' 4-bit serialized layout instead and
// config.json gains HF's `quantization_config`.
//
// Memory stays bounded by one tensor: shards are planned from the headers,
// then each tensor is read, merged and appended to its shard's file. Shards
// are `model-0000N-of-0000M.safetensors` with `model.safetensors.index.json`;
// config.json (dtype set to bfloat16), generation_config.json and tokenizer
// files are copied. Everything is written into `<out>.tmp`, then renamed to
// `<out>`, so `<out>` is either absent or complete.
//
// Example:
//   MergeOptions options{.base_dir = "/models/llama", .adapter_dir = "runs/a/adapter",
//                        .out_dir = "/models/llama-merged"};
//   RETURN_IF_ERROR(MergeAdapter(options));
#ifndef RIGTUNE_WORKER_TRAIN_MERGE_H_
#define RIGTUNE_WORKER_TRAIN_MERGE_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"

namespace rigtune::train {

// Reported once per written tensor (or NF4 group of tensors).
struct MergeProgress {
  int64_t index = 0;  // 1-based
  int64_t total = 0;
  std::string name;    // the base tensor, e.g. "model.layers.0.mlp.up_proj.weight"
  std::string action;  // "merged" | "copied" | "merged, nf4" | "dequantized" | ...
  std::string shard;   // the file it went to
};

struct MergeOptions {
  std::string base_dir;
  std::string adapter_dir;
  std::string out_dir;  // must not exist yet
  bool quantize_nf4 = false;
  int64_t max_shard_bytes = 5'000'000'000;
  std::function<void(const MergeProgress&)> on_tensor;  // may be empty
};

// FAILED_PRECONDITION if `out_dir` exists; INVALID_ARGUMENT for an adapter
// that does not fit the base (a module missing from the base, a shape
// mismatch, or extra trained modules); errors name the file and tensor. A
// DoRA adapter (lora_magnitude_vector tensors) merges as PEFT merges it:
// W' = m / ‖W + s·B·A‖_row · (W + s·B·A).
absl::Status MergeAdapter(const MergeOptions& options);

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_MERGE_H_
