// PEFT-format adapter export: `adapter_model.safetensors` with PEFT's key
// names and `adapter_config.json`, so that
//   PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), dir)
// loads what rigtune trained. Only the adapter is written (megabytes).
#ifndef RIGTUNE_WORKER_TRAIN_ADAPTER_EXPORT_H_
#define RIGTUNE_WORKER_TRAIN_ADAPTER_EXPORT_H_

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "absl/status/status.h"
#include "worker/model/llama.h"
#include "worker/train/job_config.h"

namespace rigtune::train {

// "base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight";
// `fused` (ModelConfig::fused_projections) names Phi-3's fused linears
// ("...self_attn.qkv_proj...", "...mlp.gate_up_proj...").
std::string PeftKey(int64_t layer, int proj, bool lora_b, bool fused);
// The same for any adapter part (DoRA's "...q_proj.lora_magnitude_vector").
std::string PeftKey(int64_t layer, int proj, lora::AdapterPart part, bool fused);

// The adapter tensors by PEFT key (float32, on the CPU).
std::map<std::string, at::Tensor> AdapterTensors(const model::LlamaModel& model);

// The adapter_config.json text; `use_dora` for train.method dora.
std::string AdapterConfigJson(const LoraConfig& lora, const std::string& base_model,
                              bool use_dora = false);

// Writes both files into `dir` (created if needed); each file is written to a
// temporary name, fsynced and renamed, so a crash leaves no half-written file.
// `tensors` maps PEFT keys to LoRA weights (AdapterTensors, or FSDP's gather).
// DoRA magnitudes among `tensors` make it a DoRA adapter ("use_dora": true).
absl::Status SaveAdapter(const std::map<std::string, at::Tensor>& tensors, const LoraConfig& lora,
                         const std::string& base_model, const std::string& dir);

// Loads adapter weights written by SaveAdapter (or by PEFT) into `model`'s
// LoRA tensors (and DoRA magnitudes). Every targeted projection must be
// present with the right shape.
absl::Status LoadAdapter(const std::string& dir, model::LlamaModel* model);

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_ADAPTER_EXPORT_H_
