#include "worker/train/adapter_export.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/model/safetensors.h"

namespace rigtune::train {

std::string PeftKey(int64_t layer, int proj, bool lora_b, bool fused) {
  return absl::StrCat("base_model.model.model.layers.", layer, ".", model::ProjPath(proj, fused),
                      lora_b ? ".lora_B.weight" : ".lora_A.weight");
}

std::string PeftKey(int64_t layer, int proj, lora::AdapterPart part, bool fused) {
  return absl::StrCat("base_model.model.model.layers.", layer, ".", model::ProjPath(proj, fused),
                      ".",
                      lora::PeftSuffix(part));
}

std::map<std::string, at::Tensor> AdapterTensors(const model::LlamaModel& m) {
  std::map<std::string, at::Tensor> out;
  for (int64_t i = 0; i < static_cast<int64_t>(m.layers.size()); ++i) {
    for (int p = 0; p < model::kNumProj; ++p) {
      const lora::QLoraLinear& lin = m.layers[i].proj[p];
      for (lora::AdapterPart part : lora::AdapterParts(lin.spec())) {
        out[PeftKey(i, p, part, m.config.fused_projections)] =
            lin.adapter(part).detach().to(at::kCPU, at::kFloat).contiguous();
      }
    }
  }
  return out;
}

std::string AdapterConfigJson(const LoraConfig& lora, const std::string& base_model,
                              bool use_dora) {
  nlohmann::json j = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", base_model},
      {"r", lora.r},
      {"lora_alpha", lora.alpha},
      {"lora_dropout", lora.dropout},
      {"target_modules", lora.target_modules},
      {"use_rslora", lora.use_rslora},
      {"use_dora", use_dora},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"modules_to_save", nullptr},
  };
  return j.dump(2);
}

absl::Status SaveAdapter(const std::map<std::string, at::Tensor>& tensors, const LoraConfig& lora,
                         const std::string& base_model, const std::string& dir) {
  bool use_dora = false;
  // target_modules as the adapter has them: the module names in its keys
  // ("...layers.0.self_attn.qkv_proj.lora_A.weight" -> qkv_proj), so a job
  // whose default targets a fused model (Phi-3) names differently writes
  // the names PEFT will find.
  std::vector<std::string> modules;
  for (const auto& [key, t] : tensors) {
    use_dora |= absl::EndsWith(key, lora::PeftSuffix(lora::AdapterPart::kMagnitude));
    const size_t end = key.find(".lora_");
    if (end == std::string::npos) continue;
    const size_t begin = key.rfind('.', end - 1);
    const std::string name = key.substr(begin + 1, end - begin - 1);
    if (std::find(modules.begin(), modules.end(), name) == modules.end()) modules.push_back(name);
  }
  LoraConfig written = lora;
  if (!modules.empty()) {
    // Keep the job's order where it names them.
    std::vector<std::string> ordered;
    for (const std::string& t : lora.target_modules) {
      if (std::find(modules.begin(), modules.end(), t) != modules.end()) ordered.push_back(t);
    }
    for (const std::string& m : modules) {
      if (std::find(ordered.begin(), ordered.end(), m) == ordered.end()) ordered.push_back(m);
    }
    written.target_modules = ordered;
  }
  if (auto s = model::CreateDirectories(dir); !s.ok()) return s;
  if (auto s = model::WriteSafetensors(dir + "/adapter_model.safetensors", tensors,
                                       {{"format", "pt"}});
      !s.ok()) {
    return s;
  }
  return model::WriteFileAtomically(dir + "/adapter_config.json",
                                    AdapterConfigJson(written, base_model, use_dora));
}

absl::Status LoadAdapter(const std::string& dir, model::LlamaModel* m) {
  auto file = model::SafetensorsFile::Open(dir + "/adapter_model.safetensors");
  if (!file.ok()) return file.status();
  c10::NoGradGuard no_grad;
  for (int64_t i = 0; i < static_cast<int64_t>(m->layers.size()); ++i) {
    for (int p = 0; p < model::kNumProj; ++p) {
      lora::QLoraLinear& lin = m->layers[i].proj[p];
      for (lora::AdapterPart part : lora::AdapterParts(lin.spec())) {
        const std::string key = PeftKey(i, p, part, m->config.fused_projections);
        auto t = file->Read(key);
        if (!t.ok()) return t.status();
        at::Tensor& dst = lin.adapter(part);
        if (t->sizes() != dst.sizes()) {
          return absl::InvalidArgumentError(absl::StrCat(
              dir, ": ", key, " has shape ", c10::str(t->sizes()), ", the model expects ",
              c10::str(dst.sizes()), " (was the adapter trained with another lora.r?)"));
        }
        dst.copy_(*t);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace rigtune::train
