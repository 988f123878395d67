// LayerLayout: how one decoder layer's state is laid out as flat buffers, so
// that FSDP can shard bytes rather than dtypes.
//
// Frozen state (a uint8 buffer): for each projection its base weight (NF4:
// packed codes, absmax (uint8 codes when double-quantized, else float32),
// nested absmax and nested map; hqq4: packed codes, float32 scales and
// zeros; a dense base: the weight in the compute dtype, in the `packed`
// segment), and bias; then the two RMSNorm weights. Every segment starts on
// a 16-byte boundary; the total is padded to a multiple of 16 x shards, so
// each rank's shard is the same size. The quant constants travel with the
// codes: nothing is replicated per rank except a few scalars (nested offsets
// and shapes) that live in the layout itself.
//
// Trainable state (a float32 buffer): each adapted projection's adapter
// parts in order (A, B, and DoRA's magnitude), padded to a multiple of the
// shard count.
//
// A layer whose weights train themselves (train.method full, llama_pro's
// inserted blocks) has a dense layout (base bf16): every segment holds a
// whole tensor in the compute dtype at an aligned offset, so the frozen
// buffer is also a flat array of that dtype, and so is each shard. Its
// gradients and float32 masters use the same element positions (see
// Note [Sharded weights] in fsdp.cc).
#ifndef RIGTUNE_WORKER_DIST_LAYER_LAYOUT_H_
#define RIGTUNE_WORKER_DIST_LAYER_LAYOUT_H_

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/status/status.h"
#include "worker/model/llama.h"
#include "worker/quant/frozen_weight.h"

namespace rigtune::dist {

struct Segment {
  int64_t offset = 0;  // bytes into the frozen buffer
  int64_t bytes = 0;   // 0: absent
  at::ScalarType dtype = at::kByte;
  std::vector<int64_t> shape;
};

struct LinearLayout {
  // False for the slots a model with fused projections leaves empty
  // (model::ProjPresent): no bytes, no adapter, a default QLoraLinear.
  bool present = true;
  std::vector<int64_t> shape;  // [out, in]
  at::ScalarType weight_dtype = at::kBFloat16;
  quant::BaseFormat base = quant::BaseFormat::kNf4;
  float nested_offset = 0.f;
  Segment packed, absmax, nested_absmax, nested_map, bias;
  Segment hqq_scale, hqq_zero;  // hqq4 only
  lora::LoraSpec spec;
  int64_t lora_a = 0, lora_b = 0, magnitude = 0;  // float offsets into the trainable buffer
  int64_t Offset(lora::AdapterPart part) const {
    return part == lora::AdapterPart::kA   ? lora_a
           : part == lora::AdapterPart::kB ? lora_b
                                           : magnitude;
  }
  std::vector<int64_t> PartShape(lora::AdapterPart part) const {
    return lora::AdapterPartShape(part, spec, shape[0], shape[1]);
  }
};

struct LayerLayout {
  std::array<LinearLayout, model::kNumProj> linears;
  Segment input_norm, post_norm;
  // Gemma's pre/post feed-forward norms and Qwen3/Gemma 3's q/k norms; empty
  // (0 bytes) for models without them.
  Segment pre_ff_norm, post_ff_norm, q_norm, k_norm;
  // Per-layer flags restored by Unflatten (model::SetLayerKind); ForConfig
  // leaves `sliding` false, the owner of the layout sets it per layer.
  bool sliding = false;
  model::Activation activation = model::Activation::kSilu;
  // model::ModelConfig::fused_projections: how the linears are named (PeftKey).
  bool fused = false;
  int64_t frozen_bytes = 0;     // padded
  int64_t trainable_floats = 0;  // padded

  // The layout every layer of `config` has (all ranks compute the same one
  // without loading anything), for `shards` equal shards. `nested`: absmax
  // is double-quantized (rigtune's default; bnb-4bit checkpoints say; NF4
  // only). A dense `base` stores each weight in `dtype`.
  static LayerLayout ForConfig(const model::ModelConfig& config,
                               const std::array<lora::LoraSpec, model::kNumProj>& specs,
                               at::ScalarType dtype, bool nested, int64_t shards,
                               quant::BaseFormat base = quant::BaseFormat::kNf4);
  // Fails when `layer` does not fit this layout (shapes, dtypes, nesting).
  absl::Status Check(const model::DecoderLayer& layer) const;
  int64_t frozen_shard_bytes(int64_t shards) const { return frozen_bytes / shards; }
  int64_t trainable_shard_floats(int64_t shards) const { return trainable_floats / shards; }

  // The layer's frozen state as one uint8 buffer, and its adapters as one
  // float32 buffer (both on the layer's device).
  at::Tensor FlattenFrozen(const model::DecoderLayer& layer) const;
  at::Tensor FlattenTrainable(const model::DecoderLayer& layer) const;
  // Gradients of the adapters in the trainable layout (zeros where none).
  at::Tensor FlattenGradients(const model::DecoderLayer& layer) const;

  // A dense layout's tensors by Hugging Face name
  // ("model.layers.<index>.self_attn.q_proj.weight", ...) with their
  // segments, in buffer order.
  std::vector<std::pair<std::string, Segment>> NamedSegments(int64_t index) const;
  // The element size of a dense layout's buffer viewed as the compute dtype.
  int64_t element_size() const;
  // A dense layer's weight gradients (Unflatten with `weights_train`) as one
  // float32 buffer of frozen_bytes / element_size() elements, each at its
  // tensor's element position (zeros where none, and in the padding).
  at::Tensor FlattenWeightGradients(const model::DecoderLayer& layer) const;

  // A layer whose tensors are views into `frozen` and `trainable` (full,
  // gathered buffers that must outlive it); adapters are leaves requiring
  // grad, and with `weights_train` (a dense layout) so are the weights,
  // biases and norms.
  absl::StatusOr<model::DecoderLayer> Unflatten(const at::Tensor& frozen,
                                                const at::Tensor& trainable,
                                                bool weights_train = false) const;

  // The per-layer scalars that are not in the buffers (nested offsets).
  std::vector<float> NestedOffsets(const model::DecoderLayer& layer) const;
  void SetNestedOffsets(const std::vector<float>& offsets);
};

// A frozen FSDP unit outside the decoder layers (the token embedding table;
// the final norm with the LM head): its tensors end to end in one uint8
// buffer, 16-byte aligned and padded to a multiple of 16 x shards.
struct FrozenUnitLayout {
  std::vector<Segment> segments;
  int64_t bytes = 0;  // padded

  // The layout of `tensors` (their dtypes and shapes) for `shards` shards.
  static FrozenUnitLayout For(const std::vector<at::Tensor>& tensors, int64_t shards);
  int64_t shard_bytes(int64_t shards) const { return bytes / shards; }
  // The tensors as one buffer (on their device), and views of them into a
  // full buffer that must outlive the views.
  at::Tensor Flatten(const std::vector<at::Tensor>& tensors) const;
  std::vector<at::Tensor> Views(const at::Tensor& flat) const;
  // For a unit whose tensors share one dtype and train: the element size of
  // that dtype, and the gradients of `views` (as Views returns them, made
  // leaves) as one float32 buffer of bytes / element_size() elements.
  int64_t element_size() const;
  at::Tensor FlattenGradients(const std::vector<at::Tensor>& views) const;
};

}  // namespace rigtune::dist

#endif  // RIGTUNE_WORKER_DIST_LAYER_LAYOUT_H_
