// Safetensors: a memory-mapped reader and an atomic writer.
//
// The format (https://huggingface.co/docs/safetensors): 8 bytes little-endian
// header length N, N bytes of JSON {"name": {"dtype": "BF16", "shape": [..],
// "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the data,
// offsets relative to the first byte after the header.
//
// Reading maps the file and copies only the bytes asked for, so a rank can read
// its row slice of a 70B checkpoint with host memory ≈ that slice:
//   ASSIGN_OR_RETURN(SafetensorsModel files, SafetensorsModel::Open("/models/llama"));
//   ASSIGN_OR_RETURN(at::Tensor w, files.ReadRows("model.layers.0.mlp.up_proj.weight",
//                                                 rank * rows_per_rank, (rank + 1) *
//                                                 rows_per_rank));
//
// Every error names the file, and the tensor when there is one.
#ifndef RIGTUNE_WORKER_MODEL_SAFETENSORS_H_
#define RIGTUNE_WORKER_MODEL_SAFETENSORS_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace rigtune::model {

// One tensor's header entry.
struct SafetensorsEntry {
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets in the data section
  uint64_t end = 0;
};

// One .safetensors file, mapped read-only. Cheap to copy (copies share the
// mapping); the mapping lives until the last copy is gone.
class SafetensorsFile {
 public:
  // Maps `path` and validates its header: size fields, JSON, known dtypes,
  // offsets inside the file and matching shape x dtype size, no overlaps.
  // NOT_FOUND if the file does not exist, DATA_LOSS if it is truncated or
  // corrupt, INVALID_ARGUMENT for an unsupported dtype.
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);

  const std::string& path() const { return path_; }
  bool Contains(const std::string& name) const { return entries_.count(name) > 0; }
  std::vector<std::string> Names() const;  // sorted
  // nullptr when absent.
  const SafetensorsEntry* Find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Copies a whole tensor into a new CPU tensor. NOT_FOUND for an unknown name.
  absl::StatusOr<at::Tensor> Read(const std::string& name) const;
  // Copies rows [row_begin, row_end) of dimension 0; the result has shape
  // [row_end - row_begin, shape[1:]...]. OUT_OF_RANGE for a bad range,
  // INVALID_ARGUMENT for a 0-dimensional tensor.
  absl::StatusOr<at::Tensor> ReadRows(const std::string& name, int64_t row_begin,
                                      int64_t row_end) const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<const Mapping> mapping_;
  const uint8_t* data_ = nullptr;  // first byte after the header, inside *mapping_
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// A model stored as one file or sharded with model.safetensors.index.json.
class SafetensorsModel {
 public:
  // `path` is a .safetensors file or a folder holding either
  // model.safetensors.index.json (its weight_map names the shard of every
  // tensor; every listed tensor must be in its shard) or model.safetensors.
  static absl::StatusOr<SafetensorsModel> Open(const std::string& path);

  bool Contains(const std::string& name) const { return index_.count(name) > 0; }
  std::vector<std::string> Names() const;  // sorted
  const SafetensorsEntry* Find(const std::string& name) const;
  absl::StatusOr<at::Tensor> Read(const std::string& name) const;
  absl::StatusOr<at::Tensor> ReadRows(const std::string& name, int64_t row_begin,
                                      int64_t row_end) const;

 private:
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> index_;  // tensor name -> files_ index
};

// Writes `tensors` (any device; copied to CPU, made contiguous) and string
// `metadata` as one safetensors file: written to a temporary file beside
// `path`, fsync'ed, then renamed over `path`, so readers never see half a file.
absl::Status WriteSafetensors(const std::string& path,
                              const std::map<std::string, at::Tensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// Writes `contents` to `path` the same way (temp file, fsync, rename).
absl::Status WriteFileAtomically(const std::string& path, std::string_view contents);

// mkdir -p: creates `path` and its missing parents.
absl::Status CreateDirectories(const std::string& path);

}  // namespace rigtune::model

#endif  // RIGTUNE_WORKER_MODEL_SAFETENSORS_H_
