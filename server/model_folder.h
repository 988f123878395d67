// What rigtuned checks of a job's model at submission, without loading any
// weights, so that a job the worker would refuse at once is a 400 instead:
//
//   <model>/config.json            parses and names a supported architecture
//   <model>/tokenizer.json         parses (required when the job has a dataset)
//   <model>/tokenizer_config.json  parses, when present
//
// and the LoRA target modules the spec names exist in that architecture.
// A random:<shape> model is a Llama-family model with no tokenizer.
//
//   ASSIGN_OR_RETURN(ModelInfo info, InspectModel(spec.model(), !spec.dataset().path().empty()));
//   // info.modules == {"q_proj", "k_proj", ..., "down_proj"}
//
// Errors are INVALID_ARGUMENT naming `spec.model` and the file, e.g.
//   "spec.model: /srv/models/x/config.json: not valid JSON (line 3, column 1)".
#ifndef RIGTUNE_SERVER_MODEL_FOLDER_H_
#define RIGTUNE_SERVER_MODEL_FOLDER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace rigtune::server {

struct ModelInfo {
  std::string architecture;          // e.g. "LlamaForCausalLM"
  std::vector<std::string> modules;  // the linear layers LoRA can target
  // Phi-3 (fused qkv_proj, gate_up_proj): a target list of every Llama
  // linear (the job default) means every fused one, as the worker resolves it.
  bool fused = false;
};

// Whether `targets` names exactly every linear of a Llama-style layer
// (q, k, v, o, gate, up, down), in any order.
bool IsEveryLlamaLinear(const std::vector<std::string>& targets);

// `model` is a folder or "random:<shape>"; `needs_tokenizer` when the job
// tokenizes a dataset.
absl::StatusOr<ModelInfo> InspectModel(const std::string& model, bool needs_tokenizer);

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_MODEL_FOLDER_H_
