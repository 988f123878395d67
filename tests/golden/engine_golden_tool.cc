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
// With "method": "full" (train.method full; needs "base": "bf16") there is
// no adapter: every tensor trains, grad.<HF name> and final.<HF name> hold
// the first step's gradients and the final float32 weights, and
// "save_model" (optional) names a folder where the trained model is written
// as a Hugging Face model folder (WriteModelFolder).
// With "method": "llama_pro" and "expand_every": k (train.method llama_pro,
// any base) the model is block-expanded and only the copies train; outputs
// as for full (their tensors only), plus original_logits: the unexpanded
// model's logits on batch 0.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <fstream>
#include <optional>
#include <iostream>
#include <sstream>

#include "nlohmann/json.hpp"
#include "worker/model/block_expansion.h"
#include "worker/model/model_builder.h"
#include "worker/model/safetensors.h"
#include "worker/train/adapter_export.h"
#include "worker/train/full_finetune.h"
#include "worker/train/model_folder.h"
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
  const std::string method = spec.value("method", std::string("lora"));
  const bool expand = method == "llama_pro";
  const bool full = method == "full" || expand;
  build.lora.enabled = !full;
  absl::StatusOr<rigtune::model::LlamaModel> model = absl::UnknownError("not built");
  std::optional<rigtune::model::ExpansionPlan> plan;
  if (expand) {
    auto source = rigtune::model::ModelSource::Open(spec["model_dir"], build);
    if (!source.ok()) return Fail(source.status().ToString());
    rigtune::model::BuildOptions dense = build;
    dense.base = rigtune::quant::BaseFormat::kBf16;
    auto dense_source = rigtune::model::ModelSource::Open(spec["model_dir"], dense);
    if (!dense_source.ok()) return Fail(dense_source.status().ToString());
    auto planned = rigtune::model::PlanBlockExpansion((*source)->config().num_layers,
                                                      spec.value("expand_every", int64_t{1}));
    if (!planned.ok()) return Fail(planned.status().ToString());
    plan = *planned;
    model = rigtune::model::BuildExpandedModel(**source, **dense_source, *plan);
  } else {
    model = rigtune::model::LoadHfModel(spec["model_dir"], build);
  }
  if (!model.ok()) return Fail(model.status().ToString());
  std::unique_ptr<rigtune::train::FullModelLayers> full_layers;
  if (expand) {
    auto created =
        rigtune::train::FullModelLayers::CreateForLayers(&*model, plan->InsertedLayers());
    if (!created.ok()) return Fail(created.status().ToString());
    full_layers = *std::move(created);
  } else if (full) {
    auto created = rigtune::train::FullModelLayers::Create(&*model);
    if (!created.ok()) return Fail(created.status().ToString());
    full_layers = *std::move(created);
  } else if (auto s = rigtune::train::LoadAdapter(spec["adapter_dir"], &*model); !s.ok()) {
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
  rigtune::train::Trainer trainer(&*model, topts, full_layers.get());

  std::map<std::string, at::Tensor> out;
  out["logits"] = trainer.Logits(batches[0]).cpu().contiguous();
  const int64_t accum = spec.value("grad_accum", 1);
  auto window = [&](int64_t step) {
    std::vector<TrainBatch> w;
    for (int64_t k = 0; k < accum; ++k) w.push_back(batches[(step * accum + k) % batches.size()]);
    return w;
  };
  const int64_t steps = spec.value("steps", 0);
  const double lr = optim.value("lr", 1e-3);
  if (expand) {
    auto original = rigtune::model::LoadHfModel(spec["model_dir"], build);
    if (!original.ok()) return Fail(original.status().ToString());
    rigtune::train::Trainer original_trainer(&*original, topts);
    out["original_logits"] = original_trainer.Logits(batches[0]).cpu().contiguous();
  }
  if (full) {
    rigtune::train::StepStats first = trainer.ForwardBackward(window(0));
    out["loss"] = at::tensor({first.loss}, at::kDouble);
    const std::vector<at::Tensor> grads = full_layers->Gradients();
    for (size_t k = 0; k < grads.size(); ++k) {
      out["grad." + full_layers->tensors()[k].name] = grads[k].cpu().contiguous();
    }
    trainer.ZeroGrad();
    std::vector<double> losses;
    for (int64_t s = 0; s < steps; ++s) losses.push_back(trainer.Step(window(s), lr).loss);
    out["losses"] = at::tensor(losses, at::kDouble);
    for (auto& [name, t] : full_layers->MasterState()) out["final." + name] = t;
    out["final_logits"] = trainer.Logits(batches[0]).cpu().contiguous();
    if (spec.contains("save_model")) {
      rigtune::train::ModelFolderOptions folder;
      folder.base_dir = spec["model_dir"];
      folder.out_dir = spec["save_model"];
      folder.max_shard_bytes = spec.value("max_shard_bytes", int64_t{5'000'000'000});
      absl::Status written;
      if (plan) {
        folder.num_hidden_layers = plan->size();
        auto tensors = rigtune::train::ExpandedModelTensors(spec["model_dir"], *plan,
                                                            full_layers->tensors());
        written = tensors.ok() ? rigtune::train::WriteModelFolder(*tensors, folder)
                               : tensors.status();
      } else {
        written = rigtune::train::WriteModelFolder(full_layers->tensors(), folder);
      }
      if (!written.ok()) return Fail(written.ToString());
    }
    if (auto s = rigtune::model::WriteSafetensors(spec["out"], out, {}); !s.ok()) {
      return Fail(s.ToString());
    }
    return 0;
  }
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

  std::vector<double> losses;
  for (int64_t s = 0; s < steps; ++s) losses.push_back(trainer.Step(window(s), lr).loss);
  out["losses"] = at::tensor(losses, at::kDouble);
  for (auto& [key, t] : rigtune::train::AdapterTensors(*model)) out["final." + key] = t;

  if (auto s = rigtune::model::WriteSafetensors(spec["out"], out, {}); !s.ok()) {
    return Fail(s.ToString());
  }
  return 0;
}
