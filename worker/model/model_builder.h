// Builds a LlamaModel ready to train: frozen base linears (NF4, or dense in
// the compute dtype: BuildOptions::base), frozen embeddings and
// norms in the compute dtype, LoRA adapters on the target modules.
//
// Sources:
//   "random:<spec>"  weights drawn from a seed straight into NF4 on the target
//                    device (no file): benchmarks and memory tests.
//   "<folder>"       a Hugging Face model folder (config.json + *.safetensors,
//                    sharded or not; bf16/fp16/fp32 or bnb-4bit pre-quantized).
#ifndef RIGTUNE_WORKER_MODEL_MODEL_BUILDER_H_
#define RIGTUNE_WORKER_MODEL_MODEL_BUILDER_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/llama.h"
#include "worker/quant/frozen_weight.h"

namespace rigtune::model {

struct LoraOptions {
  int64_t r = 64;
  double alpha = 16.0;
  double dropout = 0.0;
  bool use_rslora = false;
  std::vector<std::string> target_modules;  // subset of ProjName(); empty = all
  bool dora = false;  // train.method dora: a magnitude vector per adapted linear
  // false: no adapter anywhere and the other fields are ignored (train.method
  // full, which trains the base weights themselves).
  bool enabled = true;
};

struct BuildOptions {
  at::ScalarType dtype = at::kBFloat16;  // compute dtype
  at::Device device = at::kCPU;
  // The frozen linears' format: NF4, or dense in `dtype` (train.base).
  quant::BaseFormat base = quant::BaseFormat::kNf4;
  LoraOptions lora;
  uint64_t seed = 42;  // LoRA init, and random weights for random: sources
  // Layers [layer_begin, layer_end) are materialised; -1 = all. FSDP uses
  // this to build only what a rank needs.
  int64_t layer_begin = 0;
  int64_t layer_end = -1;
  // The job's tokens per row (train.context_length); 0 = unknown. Picks
  // longrope's short or long factors (UseContextLength).
  int64_t context_length = 0;
};

// Checks LoRA options (rank >= 1, alpha > 0, dropout in [0, 1)).
absl::Status ValidateLoraOptions(const LoraOptions& lora);
// Checks target_modules against the model's own linear names (ProjName:
// qkv_proj and gate_up_proj for Phi-3); the error lists the valid ones.
absl::Status ValidateLoraTargets(const LoraOptions& lora, const ModelConfig& config);

// The job's target_modules for `config`: every linear of a Llama-style
// model (q, k, v, o, gate, up, down; the job default) becomes every linear of
// a model with fused projections (qkv_proj, o_proj, gate_up_proj,
// down_proj); anything else is returned as given (ValidateLoraTargets
// checks it).
std::vector<std::string> ResolveTargetModules(const std::vector<std::string>& targets,
                                              const ModelConfig& config);

// The LoRA spec of projection `proj` under `lora` (r = 0 when not targeted
// or absent). `fused`: ModelConfig::fused_projections.
lora::LoraSpec LoraSpecFor(const LoraOptions& lora, int proj, bool fused);

// A stable seed for (base seed, layer, projection, purpose).
uint64_t MixSeed(uint64_t seed, int64_t layer, int64_t proj, int64_t purpose);

// Where weights come from, one piece at a time: the "shell" (embeddings,
// final norm, LM head) and each decoder layer on its own, so that FSDP can
// build only the layers a rank owns, one at a time.
class ModelSource {
 public:
  virtual ~ModelSource() = default;
  // Dispatches on the source string: "random:<spec>" or a model folder.
  static absl::StatusOr<std::unique_ptr<ModelSource>> Open(const std::string& source,
                                                           const BuildOptions& options);
  virtual const ModelConfig& config() const = 0;
  // Embeddings, LM head and final norm; `layers` sized but empty.
  virtual absl::StatusOr<LlamaModel> LoadShell() = 0;
  // Decoder layer i: base linears in options.base (quantized on options.device), norms,
  // biases, and fresh LoRA adapters (seeded by layer and projection).
  virtual absl::StatusOr<DecoderLayer> LoadLayer(int64_t i) = 0;
};

std::unique_ptr<ModelSource> RandomModelSource(const ModelConfig& config,
                                               const BuildOptions& options);
absl::StatusOr<std::unique_ptr<ModelSource>> HfModelSource(const std::string& model_dir,
                                                           const BuildOptions& options);

// The whole model: shell + layers [layer_begin, layer_end).
absl::StatusOr<LlamaModel> BuildModel(ModelSource& source, const BuildOptions& options);
absl::StatusOr<LlamaModel> BuildModel(const std::string& source, const BuildOptions& options);
absl::StatusOr<LlamaModel> BuildRandomModel(const ModelConfig& config,
                                            const BuildOptions& options);
absl::StatusOr<LlamaModel> LoadHfModel(const std::string& model_dir,
                                       const BuildOptions& options);

// The per-layer flags of decoder layer i under `config` (sliding window,
// activation), set on `layer`.
void SetLayerKind(const ModelConfig& config, int64_t i, DecoderLayer* layer);

// Shapes of the seven projections and whether each carries a bias (fused
// projections: kQ and kGate have the fused out-features, absent slots 0 rows).
std::vector<int64_t> ProjShape(const ModelConfig& config, int proj);
bool ProjHasBias(const ModelConfig& config, int proj);

}  // namespace rigtune::model

#endif  // RIGTUNE_WORKER_MODEL_MODEL_BUILDER_H_
