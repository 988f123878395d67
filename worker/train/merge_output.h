// The output folder of MergeAdapter (merge.h): file helpers, config.json,
// and ShardWriter, a safetensors file written one tensor at a time.
// The header's room is reserved up front from the
// names the shard will hold; tensors are appended as they are produced, and
// Finish() writes the header (padded with spaces, as the format allows),
// fsyncs and closes. Only the tensor being appended is in memory.
#ifndef RIGTUNE_WORKER_TRAIN_MERGE_OUTPUT_H_
#define RIGTUNE_WORKER_TRAIN_MERGE_OUTPUT_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace rigtune::train {

// POSIX rather than std::filesystem (see Note [libstdc++ before LibTorch]).
bool PathExists(const std::string& path);
absl::StatusOr<std::string> ReadTextFile(const std::string& path);
// Removes a folder holding only files (a `<out>.tmp` left by a crash).
absl::Status RemoveFlatFolder(const std::string& dir);
absl::Status SyncFolder(const std::string& dir);
std::string ParentOf(const std::string& path);

// Writes `config_path`'s JSON into `dir`/config.json with the dtype set to
// bfloat16 and, when `quantize_nf4`, HF's bitsandbytes quantization_config
// (any previous one removed).
absl::Status WriteMergedConfig(const std::string& config_path, bool quantize_nf4,
                               const std::string& dir);
// Copies generation_config.json and the tokenizer files present in `base_dir`.
absl::Status CopyModelFiles(const std::string& base_dir, const std::string& dir);

class ShardWriter {
 public:
  // Header bytes enough for these tensor names (any shapes, any offsets).
  static int64_t HeaderRoom(const std::vector<std::string>& names);

  // Creates `path` with `header_room` bytes kept for the header.
  static absl::StatusOr<ShardWriter> Create(const std::string& path, int64_t header_room);

  ShardWriter(ShardWriter&& other) noexcept;
  ShardWriter& operator=(ShardWriter&&) = delete;
  ~ShardWriter();

  // Appends `tensor` (CPU, made contiguous) under `name`.
  absl::Status Append(const std::string& name, const at::Tensor& tensor);
  // Writes the header, fsyncs and closes. Bytes of tensor data written.
  absl::StatusOr<int64_t> Finish();

 private:
  ShardWriter(std::string path, int fd, int64_t header_room)
      : path_(std::move(path)), fd_(fd), header_room_(header_room) {}

  std::string path_;
  int fd_ = -1;
  int64_t header_room_ = 0;
  uint64_t offset_ = 0;  // bytes of data written so far
  nlohmann::json header_ = nlohmann::json::object();
};

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_MERGE_OUTPUT_H_
