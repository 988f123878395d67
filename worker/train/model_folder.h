// WriteModelFolder: a trained model as a Hugging Face model folder, the
// output of train.method full (every tensor trained).
//
// The tensors are written in bf16 into `model-0000N-of-0000M.safetensors`
// shards of at most `max_shard_bytes` with `model.safetensors.index.json`
// (the layout merge.h writes and transformers reads), beside config.json
// (the base's, dtype set to bfloat16), generation_config.json and the
// tokenizer files of the base folder. Everything goes into `<out>.tmp`,
// which then replaces `<out>`: `<out>` is either the previous folder or the
// complete new one. Only the tensor being written is converted at a time.
//
//   RETURN_IF_ERROR(WriteModelFolder(NamedModelTensors(model),
//                                    {.base_dir = job.model, .out_dir = dir}));
#ifndef RIGTUNE_WORKER_TRAIN_MODEL_FOLDER_H_
#define RIGTUNE_WORKER_TRAIN_MODEL_FOLDER_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/block_expansion.h"
#include "worker/train/full_finetune.h"

namespace rigtune::train {

struct ModelFolderOptions {
  std::string base_dir;  // the model folder trained from: config.json, tokenizer files
  std::string out_dir;
  int64_t max_shard_bytes = 5'000'000'000;
  // > 0: config.json's num_hidden_layers (block expansion adds layers).
  int64_t num_hidden_layers = 0;
};

// One output tensor, read when its turn comes (so that a tensor copied from
// the base folder is in memory only while it is written).
struct FolderTensor {
  std::string name;
  int64_t bf16_bytes = 0;  // its size in the output, for planning shards
  std::function<absl::StatusOr<at::Tensor>()> read;
};

// INVALID_ARGUMENT for an empty folder name or a non-positive shard size;
// errors reading the base or writing `out_dir` name the file.
absl::Status WriteModelFolder(const std::vector<NamedTensor>& tensors,
                              const ModelFolderOptions& options);
absl::Status WriteModelFolder(const std::vector<FolderTensor>& tensors,
                              const ModelFolderOptions& options);

// The tensors of a block-expanded model (train.method llama_pro): every
// tensor of the base folder `base_dir` as stored (a decoder layer's under
// each expanded index that `plan` maps to it, other than the copies), and
// `trained`, the copies' tensors named by their expanded index. Base
// tensors are read when written.
absl::StatusOr<std::vector<FolderTensor>> ExpandedModelTensors(
    const std::string& base_dir, const model::ExpansionPlan& plan,
    const std::vector<NamedTensor>& trained);

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_MODEL_FOLDER_H_
