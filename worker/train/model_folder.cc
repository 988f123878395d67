#include "worker/train/model_folder.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
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

// Sets num_hidden_layers in `dir`/config.json.
absl::Status SetLayerCount(const std::string& dir, int64_t layers) {
  const std::string path = dir + "/config.json";
  auto text = ReadTextFile(path);
  if (!text.ok()) return text.status();
  nlohmann::ordered_json config = nlohmann::ordered_json::parse(*text, nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::DataLossError(absl::StrCat(path, ": not a JSON object"));
  }
  config["num_hidden_layers"] = layers;
  return model::WriteFileAtomically(path, config.dump(2) + "\n");
}

}  // namespace

absl::Status WriteModelFolder(const std::vector<NamedTensor>& tensors,
                              const ModelFolderOptions& options) {
  std::vector<FolderTensor> folder;
  folder.reserve(tensors.size());
  for (const NamedTensor& t : tensors) {
    at::Tensor tensor = t.tensor;
    folder.push_back({t.name, Bf16Bytes(tensor),
                      [tensor]() -> absl::StatusOr<at::Tensor> { return tensor; }});
  }
  return WriteModelFolder(folder, options);
}

absl::Status WriteModelFolder(const std::vector<FolderTensor>& tensors,
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
  if (options.num_hidden_layers > 0) {
    if (auto s = SetLayerCount(tmp, options.num_hidden_layers); !s.ok()) return s;
  }

  // Shards in order, each filled up to max_shard_bytes (a larger tensor
  // gets a shard of its own), as transformers' save_pretrained does.
  std::vector<int> shard_of(tensors.size());
  int shards = 0;
  int64_t filled = 0;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const int64_t bytes = tensors[k].bf16_bytes;
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
      auto t = tensors[next].read();
      if (!t.ok()) return t.status();
      at::Tensor cpu = t->detach().to(at::kCPU);
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

absl::StatusOr<std::vector<FolderTensor>> ExpandedModelTensors(
    const std::string& base_dir, const model::ExpansionPlan& plan,
    const std::vector<NamedTensor>& trained) {
  auto opened = model::SafetensorsModel::Open(base_dir);
  if (!opened.ok()) return opened.status();
  auto base = std::make_shared<model::SafetensorsModel>(*std::move(opened));
  // Expanded indices of each original layer, copies excluded.
  std::map<int64_t, std::vector<int64_t>> targets;
  for (int64_t j = 0; j < plan.size(); ++j) {
    if (!plan.inserted[j]) targets[plan.source[j]].push_back(j);
  }
  constexpr absl::string_view kLayers = "model.layers.";
  std::vector<FolderTensor> out;
  for (const std::string& name : base->Names()) {
    const model::SafetensorsEntry* entry = base->Find(name);
    int64_t numel = 1;
    for (int64_t d : entry->shape) numel *= d;
    const int64_t bytes = at::isFloatingType(entry->dtype)
                              ? numel * 2
                              : numel * static_cast<int64_t>(c10::elementSize(entry->dtype));
    auto read = [base, name]() { return base->Read(name); };
    if (!absl::StartsWith(name, kLayers)) {
      out.push_back({name, bytes, read});
      continue;
    }
    const size_t dot = name.find('.', kLayers.size());
    int64_t i = 0;
    if (dot == std::string::npos ||
        !absl::SimpleAtoi(absl::string_view(name).substr(kLayers.size(), dot - kLayers.size()),
                          &i)) {
      return absl::InvalidArgumentError(
          absl::StrCat(base_dir, ": tensor \"", name, "\" has no layer index"));
    }
    for (int64_t j : targets[i]) {
      out.push_back({absl::StrCat(kLayers, j, name.substr(dot)), bytes, read});
    }
  }
  for (const NamedTensor& t : trained) {
    at::Tensor tensor = t.tensor;
    out.push_back({t.name, Bf16Bytes(tensor),
                   [tensor]() -> absl::StatusOr<at::Tensor> { return tensor; }});
  }
  return out;
}

}  // namespace rigtune::train
