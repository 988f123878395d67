// engine_golden_tool: runs rigtune's engine on inputs prepared by
// test_engine.py and writes what the Python reference (transformers + PEFT)
// is compared against.
//
//   engine_golden_tool SPEC.json
//
// SPEC: {"model_dir", "adapter_dir" (PEFT adapter with the initial LoRA
// weights), "batches" (safetensors: input_ids_K, labels_K), "out"
// (safetensors written here), "lora": {...}, "optim": {...},
// "activation_checkpointing", "steps", "grad_accum", "device" (cpu | cuda),
// "dtype" (fp32 | bf16), "save_adapter" (optional: a folder where the
// initial adapter is written with SaveAdapter, for PEFT to load), "base"
// (optional: nf4 | bf16 | hqq4, the job file's train.base; nf4 when absent)}.
// Outputs: logits (batch 0, before training), loss, grad.<peft key> for the
// first step's gradients, losses (one per step), and the final adapter; with
// an hqq4 base also hqq.<weight>.codes / .scale / .zero (codes unpacked to
// [groups, 64], scale and zero one per group).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <fstream>
#include <iostream>
#include <sstream>

#include "nlohmann/json.hpp"
#include "worker/model/model_builder.h"
#include "worker/model/safetensors.h"
#include "worker/train/adapter_export.h"
#include "worker/train/trainer.h"

namespace {

using rigtune::train::TrainBatch;

int Fail(const std::string& what) {
  std::cerr << "engine_golden_tool: " << what << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return Fail("usage: engine_golden_tool SPEC.json");
  std::ifstream in(argv[1]);
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json spec = nlohmann::json::parse(ss.str());

  rigtune::model::BuildOptions build;
  const std::string dtype = spec.value("dtype", std::string("fp32"));
  build.dtype = dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  build.device = at::Device(spec.value("device", std::string("cpu")));
  auto base = rigtune::quant::ParseBaseFormat(spec.value("base", std::string("nf4")), "base");
  if (!base.ok()) return Fail(base.status().ToString());
  build.base = *base;
  build.lora.r = spec["lora"]["r"];
  build.lora.alpha = spec["lora"]["alpha"];
  build.lora.target_modules = spec["lora"]["target_modules"].get<std::vector<std::string>>();
  build.lora.use_rslora = spec["lora"].value("use_rslora", false);
  build.lora.dora = spec["lora"].value("use_dora", false);
  // The job's train.context_length (longrope picks its factors by it).
  build.context_length = spec.value("context_length", 0);
  auto model = rigtune::model::LoadHfModel(spec["model_dir"], build);
  if (!model.ok()) return Fail(model.status().ToString());
  if (auto s = rigtune::train::LoadAdapter(spec["adapter_dir"], &*model); !s.ok()) {
    return Fail(s.ToString());
  }

  auto batches_file = rigtune::model::SafetensorsFile::Open(spec["batches"]);
  if (!batches_file.ok()) return Fail(batches_file.status().ToString());
  std::vector<TrainBatch> batches;
  for (int k = 0;; ++k) {
    const std::string ids = "input_ids_" + std::to_string(k);
    if (!batches_file->Contains(ids)) break;
    auto input = batches_file->Read(ids);
    auto labels = batches_file->Read("labels_" + std::to_string(k));
    if (!input.ok() || !labels.ok()) return Fail("cannot read batch " + std::to_string(k));
    TrainBatch batch;
    batch.input_ids = input->to(build.device);
    batch.labels = labels->to(build.device);
    batches.push_back(batch);
  }
  if (batches.empty()) return Fail("no batches");

  rigtune::train::TrainerOptions topts;
  topts.activation_checkpointing = spec.value("activation_checkpointing", true);
  const auto& optim = spec["optim"];
  topts.max_grad_norm = optim.value("max_grad_norm", 1.0);
  topts.adamw.beta1 = optim.value("beta1", 0.9);
  topts.adamw.beta2 = optim.value("beta2", 0.999);
  topts.adamw.eps = optim.value("eps", 1e-8);
  topts.adamw.weight_decay = optim.value("weight_decay", 0.0);
  rigtune::train::Trainer trainer(&*model, topts);

  std::map<std::string, at::Tensor> out;
  out["logits"] = trainer.Logits(batches[0]).cpu().contiguous();
  if (spec.contains("save_adapter")) {
    rigtune::train::LoraConfig lora;
    lora.r = build.lora.r;
    lora.alpha = build.lora.alpha;
    lora.use_rslora = build.lora.use_rslora;
    lora.target_modules = build.lora.target_modules;
    if (auto s = rigtune::train::SaveAdapter(rigtune::train::AdapterTensors(*model), lora,
                                             spec["model_dir"], spec["save_adapter"]);
        !s.ok()) {
      return Fail(s.ToString());
    }
  }
  // The dequantized base weights the engine computes with.
  for (int64_t i = 0; i < static_cast<int64_t>(model->layers.size()); ++i) {
    const bool fused = model->config.fused_projections;
    for (int p = 0; p < rigtune::model::kNumProj; ++p) {
      if (!rigtune::model::ProjPresent(p, fused)) continue;
      auto w = model->layers[i].proj[p].weight().Dequantize(at::kFloat);
      if (!w.ok()) return Fail(w.status().ToString());
      const std::string name = "model.layers." + std::to_string(i) + "." +
                               rigtune::model::ProjPath(p, fused) + ".weight";
      out["base." + name] = w->cpu();
      const auto& frozen = model->layers[i].proj[p].weight();
      if (frozen.format() == rigtune::quant::BaseFormat::kHqq4) {
        out["hqq." + name + ".codes"] = frozen.hqq4().Codes().cpu().contiguous();
        out["hqq." + name + ".scale"] = frozen.hqq4().scale().cpu();
        out["hqq." + name + ".zero"] = frozen.hqq4().zero().cpu();
      }
    }
  }

  const int64_t accum = spec.value("grad_accum", 1);
  auto window = [&](int64_t step) {
    std::vector<TrainBatch> w;
    for (int64_t k = 0; k < accum; ++k) w.push_back(batches[(step * accum + k) % batches.size()]);
    return w;
  };
  // Step 0's gradients, before any update.
  rigtune::train::StepStats first = trainer.ForwardBackward(window(0));
  out["loss"] = at::tensor({first.loss}, at::kDouble);
  for (int64_t i = 0; i < static_cast<int64_t>(model->layers.size()); ++i) {
    for (int p = 0; p < rigtune::model::kNumProj; ++p) {
      const auto& lin = model->layers[i].proj[p];
      for (rigtune::lora::AdapterPart part : rigtune::lora::AdapterParts(lin.spec())) {
        out["grad." + rigtune::train::PeftKey(i, p, part, model->config.fused_projections)] =
            lin.adapter(part).grad().cpu().contiguous();
      }
    }
  }
  trainer.ZeroGrad();

  const int64_t steps = spec.value("steps", 0);
  const double lr = optim.value("lr", 1e-3);
  std::vector<double> losses;
  for (int64_t s = 0; s < steps; ++s) losses.push_back(trainer.Step(window(s), lr).loss);
  out["losses"] = at::tensor(losses, at::kDouble);
  for (auto& [key, t] : rigtune::train::AdapterTensors(*model)) out["final." + key] = t;

  if (auto s = rigtune::model::WriteSafetensors(spec["out"], out, {}); !s.ok()) {
    return Fail(s.ToString());
  }
  return 0;
}
