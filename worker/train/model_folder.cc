#include "worker/train/model_folder.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/model/safetensors.h"
#include "worker/train/merge_output.h"

namespace rigtune::train {
namespace {

std::string FiveDigits(int n) {
  std::string s = std::to_string(n);
  return std::string(s.size() < 5 ? 5 - s.size() : 0, '0') + s;
}

int64_t Bf16Bytes(const at::Tensor& t) {
  return at::isFloatingType(t.scalar_type()) ? t.numel() * 2 : t.nbytes();
}

}  // namespace

absl::Status WriteModelFolder(const std::vector<NamedTensor>& tensors,
                              const ModelFolderOptions& options) {
  c10::NoGradGuard no_grad;
  if (options.base_dir.empty() || options.out_dir.empty()) {
    return absl::InvalidArgumentError("writing a model folder needs a base and an output folder");
  }
  if (options.max_shard_bytes <= 0) {
    return absl::InvalidArgumentError("the maximum shard size must be positive");
  }
  std::string out = options.out_dir;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  const std::string tmp = out + ".tmp";
  if (PathExists(tmp)) {
    if (auto s = RemoveFlatFolder(tmp); !s.ok()) return s;
  }
  if (auto s = model::CreateDirectories(tmp); !s.ok()) return s;
  if (auto s = WriteMergedConfig(options.base_dir + "/config.json", false, tmp); !s.ok()) {
    return s;
  }
  if (auto s = CopyModelFiles(options.base_dir, tmp); !s.ok()) return s;

  // Shards in order, each filled up to max_shard_bytes (a larger tensor
  // gets a shard of its own), as transformers' save_pretrained does.
  std::vector<int> shard_of(tensors.size());
  int shards = 0;
  int64_t filled = 0;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const int64_t bytes = Bf16Bytes(tensors[k].tensor);
    if (shards == 0 || (filled > 0 && filled + bytes > options.max_shard_bytes)) {
      ++shards;
      filled = 0;
    }
    shard_of[k] = shards - 1;
    filled += bytes;
  }
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  int64_t total_bytes = 0;
  size_t next = 0;
  for (int shard = 0; shard < shards; ++shard) {
    const std::string file = absl::StrCat("model-", FiveDigits(shard + 1), "-of-",
                                          FiveDigits(shards), ".safetensors");
    std::vector<std::string> names;
    for (size_t k = next; k < tensors.size() && shard_of[k] == shard; ++k) {
      names.push_back(tensors[k].name);
    }
    auto writer = ShardWriter::Create(tmp + "/" + file, ShardWriter::HeaderRoom(names));
    if (!writer.ok()) return writer.status();
    for (; next < tensors.size() && shard_of[next] == shard; ++next) {
      const at::Tensor& t = tensors[next].tensor;
      at::Tensor cpu = t.detach().to(at::kCPU);
      if (at::isFloatingType(cpu.scalar_type())) cpu = cpu.to(at::kBFloat16);
      if (auto s = writer->Append(tensors[next].name, cpu); !s.ok()) return s;
      weight_map[tensors[next].name] = file;
    }
    auto bytes = writer->Finish();
    if (!bytes.ok()) return bytes.status();
    total_bytes += *bytes;
  }
  nlohmann::ordered_json index = {{"metadata", {{"total_size", total_bytes}}},
                                  {"weight_map", weight_map}};
  if (auto s = model::WriteFileAtomically(tmp + "/model.safetensors.index.json",
                                          index.dump(2) + "\n");
      !s.ok()) {
    return s;
  }
  if (auto s = SyncFolder(tmp); !s.ok()) return s;
  if (PathExists(out)) {
    if (auto s = RemoveFlatFolder(out); !s.ok()) return s;
  }
  if (::rename(tmp.c_str(), out.c_str()) != 0) {
    return absl::InternalError(
        absl::StrCat(tmp, ": cannot rename to ", out, ": ", std::strerror(errno)));
  }
  return SyncFolder(ParentOf(out));
}

}  // namespace rigtune::train
