#include "worker/train/merge.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/model/safetensors.h"
#include "worker/quant/nf4_tensor.h"
#include "worker/train/merge_output.h"

namespace rigtune::train {
namespace {

using model::SafetensorsModel;

constexpr char kBnbState[] = ".weight.quant_state.bitsandbytes__nf4";
constexpr const char* kBnbParts[] = {".weight",
                                     ".weight.absmax",
                                     ".weight.quant_map",
                                     ".weight.nested_absmax",
                                     ".weight.nested_quant_map",
                                     kBnbState};
constexpr char kPeftPrefix[] = "base_model.model.";
constexpr char kMagnitudeSuffix[] = ".lora_magnitude_vector";  // DoRA

// One base tensor (a bnb-4bit weight counts once) and what it becomes.
struct Item {
  std::string name;        // "model.layers.0.mlp.up_proj.weight"
  std::string bnb_prefix;  // set when the base stores it 4-bit
  std::vector<int64_t> shape;
  std::string lora;  // set when adapted: "base_model.model.model.layers.0.mlp.up_proj"
  bool nf4_out = false;
  std::vector<std::string> out_names;
  int64_t out_bytes = 0;
  int shard = 0;
};

// The adapter's scale, from adapter_config.json.
absl::StatusOr<double> AdapterScale(const std::string& adapter_dir) {
  const std::string path = adapter_dir + "/adapter_config.json";
  auto text = ReadTextFile(path);
  if (!text.ok()) return text.status();
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  if (j.value("peft_type", std::string("LORA")) != "LORA") {
    return absl::InvalidArgumentError(absl::StrCat(path, ": peft_type is not LORA"));
  }
  if (j.value("fan_in_fan_out", false)) {
    return absl::UnimplementedError(absl::StrCat(path, ": fan_in_fan_out is not supported"));
  }
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    if (j.contains(key) && j[key].is_object() && !j[key].empty()) {
      return absl::UnimplementedError(absl::StrCat(path, ": ", key, " is not supported"));
    }
  }
  if (!j.contains("r") || !j["r"].is_number() || !j.contains("lora_alpha") ||
      !j["lora_alpha"].is_number() || j["r"].get<double>() <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": needs a positive r and lora_alpha"));
  }
  const double r = j["r"].get<double>();
  const double alpha = j["lora_alpha"].get<double>();
  return j.value("use_rslora", false) ? alpha / std::sqrt(r) : alpha / r;
}

// The shape bitsandbytes recorded for a 4-bit weight.
absl::StatusOr<std::vector<int64_t>> BnbShape(const SafetensorsModel& base,
                                              const std::string& base_dir,
                                              const std::string& prefix) {
  auto t = base.Read(prefix + kBnbState);
  if (!t.ok()) return t.status();
  at::Tensor bytes = t->to(at::kByte).contiguous();
  std::string text(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), bytes.numel());
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.contains("shape") || !j["shape"].is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(base_dir, ": ", prefix, kBnbState, ": no shape in the quant state"));
  }
  return j["shape"].get<std::vector<int64_t>>();
}

bool IsDecoderLinear(const std::string& name, const std::vector<int64_t>& shape) {
  return shape.size() == 2 && absl::StartsWith(name, "model.layers.") &&
         absl::EndsWith(name, "_proj.weight");
}

int64_t Nf4Bytes(int64_t numel) {
  const int64_t blocks = (numel + 63) / 64;
  return (numel + 1) / 2 + blocks + 16 * 4 + (blocks + 255) / 256 * 4 + 256 * 4 + 256;
}

// Lists the base's tensors with their outputs, and checks the adapter fits.
absl::StatusOr<std::vector<Item>> Plan(const MergeOptions& options, const SafetensorsModel& base,
                                       const SafetensorsModel& adapter) {
  std::set<std::string> bnb_prefixes;
  for (const std::string& name : base.Names()) {
    if (absl::EndsWith(name, kBnbState)) {
      bnb_prefixes.insert(name.substr(0, name.size() - std::strlen(kBnbState)));
    }
  }
  std::set<std::string> loras;  // PEFT module paths with both A and B
  for (const std::string& key : adapter.Names()) {
    if (absl::StartsWith(key, kPeftPrefix) && absl::EndsWith(key, kMagnitudeSuffix)) {
      const std::string module = key.substr(0, key.size() - std::strlen(kMagnitudeSuffix));
      if (!adapter.Contains(module + ".lora_A.weight")) {
        return absl::InvalidArgumentError(absl::StrCat(options.adapter_dir, ": DoRA magnitude \"",
                                                       key, "\" has no matching lora_A"));
      }
      continue;
    }
    const bool a = absl::EndsWith(key, ".lora_A.weight");
    if (!absl::StartsWith(key, kPeftPrefix) || !(a || absl::EndsWith(key, ".lora_B.weight"))) {
      return absl::InvalidArgumentError(absl::StrCat(
          options.adapter_dir, "/adapter_model.safetensors: tensor \"", key,
          "\" is not a LoRA A/B weight (trained extra modules cannot be merged)"));
    }
    if (!a) continue;
    const std::string module = key.substr(0, key.size() - std::strlen(".lora_A.weight"));
    if (!adapter.Contains(module + ".lora_B.weight")) {
      return absl::InvalidArgumentError(absl::StrCat(options.adapter_dir, ": \"", key,
                                                     "\" has no matching lora_B"));
    }
    loras.insert(module);
  }

  std::vector<Item> items;
  std::set<std::string> used;
  for (const std::string& name : base.Names()) {
    Item item;
    item.name = name;
    std::string prefix;
    if (absl::EndsWith(name, ".weight")) prefix = name.substr(0, name.size() - 7);
    // A part of a 4-bit weight is handled with its ".weight".
    const size_t part = name.find(".weight.");
    if (part != std::string::npos && bnb_prefixes.count(name.substr(0, part))) continue;
    const at::ScalarType dtype = base.Find(name)->dtype;
    if (!prefix.empty() && bnb_prefixes.count(prefix)) {
      item.bnb_prefix = prefix;
      auto shape = BnbShape(base, options.base_dir, prefix);
      if (!shape.ok()) return shape.status();
      item.shape = *shape;
    } else {
      item.shape = base.Find(name)->shape;
    }
    const std::string module = kPeftPrefix + prefix;
    if (!prefix.empty() && loras.count(module)) {
      item.lora = module;
      used.insert(module);
      auto a = adapter.Find(module + ".lora_A.weight");
      auto b = adapter.Find(module + ".lora_B.weight");
      if (item.shape.size() != 2 || a->shape.size() != 2 || b->shape.size() != 2 ||
          a->shape[1] != item.shape[1] || b->shape[0] != item.shape[0] ||
          a->shape[0] != b->shape[1] ||
          (adapter.Contains(module + kMagnitudeSuffix) &&
           adapter.Find(module + kMagnitudeSuffix)->shape != std::vector<int64_t>{item.shape[0]})) {
        return absl::InvalidArgumentError(absl::StrCat(
            options.adapter_dir, ": the LoRA shapes of \"", module,
            "\" do not fit the base tensor \"", name, "\" in ", options.base_dir));
      }
    }
    int64_t numel = 1;
    for (int64_t d : item.shape) numel *= d;
    item.nf4_out = options.quantize_nf4 && (!item.bnb_prefix.empty() || IsDecoderLinear(name, item.shape));
    if (item.nf4_out) {
      for (const char* part : kBnbParts) item.out_names.push_back(prefix + part);
      item.out_bytes = Nf4Bytes(numel);
    } else {
      const bool is_float = item.bnb_prefix.empty() ? at::isFloatingType(dtype) : true;
      item.out_names.push_back(name);
      item.out_bytes = numel * (is_float ? 2 : static_cast<int64_t>(c10::elementSize(dtype)));
    }
    items.push_back(std::move(item));
  }
  for (const std::string& module : loras) {
    if (!used.count(module)) {
      return absl::InvalidArgumentError(absl::StrCat(
          options.adapter_dir, ": adapted module \"", module.substr(std::strlen(kPeftPrefix)),
          "\" has no weight in the base model ", options.base_dir));
    }
  }
  return items;
}

// Reads, dequantizes and merges one item's weight (float32 when merged).
absl::StatusOr<at::Tensor> MergedWeight(const Item& item, const SafetensorsModel& base,
                                        const SafetensorsModel& adapter, double scale) {
  at::Tensor w;
  if (!item.bnb_prefix.empty()) {
    std::map<std::string, at::Tensor> state;
    for (const char* part : kBnbParts) {
      const std::string key = item.bnb_prefix + part;
      if (!base.Contains(key)) continue;
      auto t = base.Read(key);
      if (!t.ok()) return t.status();
      state[key] = *t;
    }
    auto nf4 = quant::Nf4Tensor::FromStateDict(state, item.bnb_prefix);
    if (!nf4.ok()) return nf4.status();
    auto dq = nf4->Dequantize(at::kFloat);
    if (!dq.ok()) return dq.status();
    w = *dq;
  } else {
    auto t = base.Read(item.name);
    if (!t.ok()) return t.status();
    w = *t;
  }
  if (item.lora.empty()) return w;
  auto a = adapter.Read(item.lora + ".lora_A.weight");
  if (!a.ok()) return a.status();
  auto b = adapter.Read(item.lora + ".lora_B.weight");
  if (!b.ok()) return b.status();
  at::Tensor merged = at::addmm(w.to(at::kFloat), b->to(at::kFloat), a->to(at::kFloat),
                                /*beta=*/1, /*alpha=*/scale);
  if (!adapter.Contains(item.lora + kMagnitudeSuffix)) return merged;
  // DoRA: every row rescaled to its magnitude, m / ‖W + s·B·A‖_row (PEFT's merge).
  auto m = adapter.Read(item.lora + kMagnitudeSuffix);
  if (!m.ok()) return m.status();
  const at::Tensor norm = at::linalg_vector_norm(merged, 2, at::IntArrayRef{1}, /*keepdim=*/false);
  return merged.mul_((m->to(at::kFloat) / norm).unsqueeze(1));
}

// Writes the shards and the index into `tmp`.
absl::Status WriteShards(const MergeOptions& options, const SafetensorsModel& base,
                         const SafetensorsModel& adapter, double scale, std::vector<Item>& items,
                         const std::string& tmp) {
  int shards = 0;
  int64_t filled = 0;
  for (Item& item : items) {
    if (shards == 0 || (filled > 0 && filled + item.out_bytes > options.max_shard_bytes)) {
      ++shards;
      filled = 0;
    }
    item.shard = shards - 1;
    filled += item.out_bytes;
  }
  auto five_digits = [](int n) {
    std::string s = std::to_string(n);
    return std::string(s.size() < 5 ? 5 - s.size() : 0, '0') + s;
  };
  auto shard_name = [&](int shard) {
    return absl::StrCat("model-", five_digits(shard + 1), "-of-", five_digits(shards),
                        ".safetensors");
  };
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  int64_t total_bytes = 0;
  size_t next = 0;
  for (int shard = 0; shard < shards; ++shard) {
    std::vector<std::string> names;
    for (size_t i = next; i < items.size() && items[i].shard == shard; ++i) {
      names.insert(names.end(), items[i].out_names.begin(), items[i].out_names.end());
    }
    const std::string file = shard_name(shard);
    auto writer = ShardWriter::Create(tmp + "/" + file, ShardWriter::HeaderRoom(names));
    if (!writer.ok()) return writer.status();
    for (; next < items.size() && items[next].shard == shard; ++next) {
      const Item& item = items[next];
      auto w = MergedWeight(item, base, adapter, scale);
      if (!w.ok()) {
        return absl::Status(w.status().code(), absl::StrCat(options.base_dir, ": tensor \"",
                                                            item.name, "\": ", w.status().message()));
      }
      std::map<std::string, at::Tensor> out;
      if (item.nf4_out) {
        auto q = quant::Nf4Tensor::Quantize(w->to(at::kBFloat16));
        if (!q.ok()) return q.status();
        out = q->ToStateDict(item.name.substr(0, item.name.size() - 7));
      } else {
        out[item.name] = at::isFloatingType(w->scalar_type()) ? w->to(at::kBFloat16) : *w;
      }
      for (const auto& [key, t] : out) {
        if (std::find(item.out_names.begin(), item.out_names.end(), key) == item.out_names.end()) {
          return absl::InternalError(absl::StrCat("unplanned output tensor \"", key, "\""));
        }
        if (auto s = writer->Append(key, t); !s.ok()) return s;
        weight_map[key] = file;
      }
      if (options.on_tensor) {
        std::string action = item.lora.empty() ? "copied" : "merged";
        if (!item.bnb_prefix.empty()) action += ", dequantized";
        if (item.nf4_out) action += ", nf4";
        options.on_tensor(MergeProgress{static_cast<int64_t>(next) + 1,
                                        static_cast<int64_t>(items.size()), item.name, action,
                                        file});
      }
    }
    auto bytes = writer->Finish();
    if (!bytes.ok()) return bytes.status();
    total_bytes += *bytes;
  }
  nlohmann::ordered_json index = {{"metadata", {{"total_size", total_bytes}}},
                                  {"weight_map", weight_map}};
  return model::WriteFileAtomically(tmp + "/model.safetensors.index.json", index.dump(2) + "\n");
}

}  // namespace

absl::Status MergeAdapter(const MergeOptions& options) {
  c10::NoGradGuard no_grad;
  if (options.base_dir.empty() || options.adapter_dir.empty() || options.out_dir.empty()) {
    return absl::InvalidArgumentError("merge needs a base, an adapter and an output folder");
  }
  if (options.max_shard_bytes <= 0) {
    return absl::InvalidArgumentError("the maximum shard size must be positive");
  }
  std::string out = options.out_dir;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  if (PathExists(out)) {
    return absl::FailedPreconditionError(absl::StrCat(out, ": already exists"));
  }
  auto scale = AdapterScale(options.adapter_dir);
  if (!scale.ok()) return scale.status();
  auto base = SafetensorsModel::Open(options.base_dir);
  if (!base.ok()) return base.status();
  auto adapter = SafetensorsModel::Open(options.adapter_dir + "/adapter_model.safetensors");
  if (!adapter.ok()) return adapter.status();
  auto items = Plan(options, *base, *adapter);
  if (!items.ok()) return items.status();

  const std::string tmp = out + ".tmp";
  if (PathExists(tmp)) {
    if (auto s = RemoveFlatFolder(tmp); !s.ok()) return s;
  }
  if (auto s = model::CreateDirectories(tmp); !s.ok()) return s;
  if (auto s = WriteMergedConfig(options.base_dir + "/config.json", options.quantize_nf4, tmp); !s.ok()) return s;
  if (auto s = CopyModelFiles(options.base_dir, tmp); !s.ok()) return s;
  if (auto s = WriteShards(options, *base, *adapter, *scale, *items, tmp); !s.ok()) return s;
  if (auto s = SyncFolder(tmp); !s.ok()) return s;
  if (::rename(tmp.c_str(), out.c_str()) != 0) {
    return absl::InternalError(
        absl::StrCat(tmp, ": cannot rename to ", out, ": ", std::strerror(errno)));
  }
  return SyncFolder(ParentOf(out));
}

}  // namespace rigtune::train
