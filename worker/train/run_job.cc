#include "worker/train/run_job.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/util/Exception.h>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/dist/communicator.h"
#include "worker/dist/fsdp.h"
#include "worker/model/block_expansion.h"
#include "worker/model/model_builder.h"
#include "worker/plan/fit_advice.h"
#include "worker/plan/plan_report.h"
#include "worker/train/adapter_export.h"
#include "worker/train/batch_source.h"
#include "worker/train/checkpointer.h"
#include "worker/train/device_memory.h"
#include "worker/train/evaluator.h"
#include "worker/train/full_finetune.h"
#include "worker/train/model_folder.h"
#include "worker/train/out_of_memory.h"

namespace rigtune::train {
namespace {

absl::StatusOr<at::Device> PickDevice(const TrainConfig& t, const dist::DistEnv& env) {
#ifdef RIGTUNE_WITH_CUDA
  const bool cuda = at::hasCUDA();
#else
  const bool cuda = false;  // a CPU build trains on the CPU even where a GPU exists
#endif
  if (t.device == "cuda" && !cuda) {
    return absl::FailedPreconditionError(
        "train.device: cuda requested but no CUDA device is usable (check CUDA_VISIBLE_DEVICES, "
        "the driver and that this is the cuda build; or set train.device to cpu)");
  }
  if (t.device == "cpu" || !cuda) return at::Device(at::kCPU);
  // Under rigtuned each rank sees one GPU (CUDA_VISIBLE_DEVICES); under a
  // launcher that exposes all of them, LOCAL_RANK picks ours.
  const int64_t visible = static_cast<int64_t>(at::getNumGPUs());
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(visible > 1 ? env.local_rank : 0));
}

at::ScalarType PickDtype(const std::string& name) {
  if (name == "fp32") return at::kFloat;
  if (name == "fp16") return at::kHalf;
  return at::kBFloat16;
}

void Log(const RunCallbacks& cb, const std::string& line) {
  if (cb.on_log) cb.on_log(line);
}

// Everything one rank needs for the loop, built from the job.
struct Run {
  dist::DistEnv env;
  at::Device device = at::kCPU;
  std::unique_ptr<dist::Communicator> comm;
  model::LlamaModel model;  // the whole model, or (FSDP) its shell
  std::unique_ptr<dist::FsdpLayers> fsdp;
  std::unique_ptr<FullModelLayers> full;  // train.method full and llama_pro
  std::optional<model::ExpansionPlan> expansion;  // train.method llama_pro
  std::unique_ptr<BatchSource> data;
  std::unique_ptr<Evaluator> evaluator;  // null without validation data
  // What the run is doing, for an out-of-memory message.
  std::string phase = "setting up";
  std::optional<model::ModelConfig> model_config;
  plan::PlanDevice device_plan;
  std::optional<plan::MemoryPlan> memory_plan;  // the job's first log line
};

// RIGTUNE_IGNORE_MEMORY_PLAN=1 starts a job the planner says cannot fit (the
// plan is an estimate; an out-of-memory error still ends the job cleanly).
bool IgnoreMemoryPlan() {
  const char* value = std::getenv("RIGTUNE_IGNORE_MEMORY_PLAN");
  return value != nullptr && std::string(value) == "1";
}

// The job's first log line is the memory plan; on a GPU a job that cannot
// fit ends here, before anything is loaded.
absl::Status LogMemoryPlan(const JobConfig& config, const RunCallbacks& callbacks, Run& run) {
  auto model_config = model::SourceModelConfig(config.model);
  if (!model_config.ok()) return model_config.status();
  run.model_config = *model_config;
  run.device_plan = plan::DeviceForJob(
      config, static_cast<double>(DeviceTotalBytes(run.device)) / plan::kGiB,
      run.env.world_size);
  run.device_plan.host_memory_bytes =
      HostMemoryBytes() / std::max<int64_t>(1, run.env.local_world_size);
  run.memory_plan = plan::PlanMemory(*run.model_config, config, run.device_plan);
  const plan::MemoryPlan& memory = *run.memory_plan;
  Log(callbacks, absl::StrCat("rank ", run.env.rank, ": ", plan::PlanLine(memory)));
  if (memory.fits() || !run.device.is_cuda() || IgnoreMemoryPlan()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      plan::ShortfallMessage(memory, plan::SuggestFits(*run.model_config, config,
                                                       run.device_plan)),
      " (RIGTUNE_IGNORE_MEMORY_PLAN=1 tries anyway)"));
}

absl::Status Setup(const JobConfig& config, const RunCallbacks& callbacks, Run& run) {
  auto env = dist::DistEnv::FromEnvironment();
  if (!env.ok()) return env.status();
  run.env = *env;
  auto device = PickDevice(config.train, run.env);
  if (!device.ok()) return device.status();
  run.device = *device;
  // Before the first CUDA allocation of the process (see device_memory.h).
  PreferExpandableSegments();
  if (auto s = ApplyMemoryCap(run.device, config.dist.max_gpu_memory_gib); !s.ok()) return s;
  if (auto s = LogMemoryPlan(config, callbacks, run); !s.ok()) return s;

  model::BuildOptions build;
  build.dtype = PickDtype(config.train.dtype);
  build.device = run.device;
  auto base = quant::ParseBaseFormat(config.train.base);
  if (!base.ok()) return base.status();
  build.base = *base;
  build.lora = model::LoraOptions{
      config.lora.r, config.lora.alpha, config.lora.dropout, config.lora.use_rslora,
      model::ResolveTargetModules(config.lora.target_modules, *run.model_config),
      config.train.method == "dora"};
  const bool full = config.train.method == "full";
  const bool expand = config.train.method == "llama_pro";
  if (full || expand) {
    // Weights train, not adapters: the lora section means nothing.
    build.lora.enabled = false;
    Log(callbacks, absl::StrCat("train.method ", config.train.method, ": ",
                                full ? "every weight trains" : "only the inserted blocks train",
                                " (the lora section is ignored)"));
  }
  build.seed = config.train.seed;
  build.context_length = config.train.context_length;
  Log(callbacks, absl::StrCat("rank ", run.env.rank, "/", run.env.world_size, ": loading ",
                              config.model, " on ", run.device.str()));
  run.phase = "loading the model";
  auto source = model::ModelSource::Open(config.model, build);
  if (!source.ok()) return source.status();
  if (config.train.context_length > (*source)->config().max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "train.context_length: ", config.train.context_length,
        " exceeds the model's max_position_embeddings (",
        (*source)->config().max_position_embeddings, ")"));
  }
  const auto load_start = std::chrono::steady_clock::now();
  // One process builds the whole model on its device, unless weights or
  // optimizer state are offloaded: then FsdpLayers streams layers (without
  // a communicator), and loading moves one layer at a time to host memory.
  // Several ranks shard the model with FsdpLayers: adapters, or (full,
  // llama_pro) the weights that train.
  const bool streamed = config.dist.cpu_offload || config.dist.offload_optimizer;
  std::unique_ptr<model::ModelSource> dense_source;  // llama_pro: the copies' source
  if (expand) {
    // Block expansion: the copies are read again as dense weights.
    auto plan = model::PlanBlockExpansion((*source)->config().num_layers,
                                          config.train.expand_every);
    if (!plan.ok()) return plan.status();
    run.expansion = *std::move(plan);
    model::BuildOptions dense = build;
    dense.base = quant::BaseFormat::kBf16;
    auto opened = model::ModelSource::Open(config.model, dense);
    if (!opened.ok()) return opened.status();
    dense_source = *std::move(opened);
  }
  if (run.env.world_size == 1 && !streamed) {
    if (expand) {
      auto m = model::BuildExpandedModel(**source, *dense_source, *run.expansion);
      if (!m.ok()) return m.status();
      run.model = *std::move(m);
      auto layers = FullModelLayers::CreateForLayers(&run.model, run.expansion->InsertedLayers());
      if (!layers.ok()) return layers.status();
      run.full = *std::move(layers);
    } else {
      auto m = model::BuildModel(**source, build);
      if (!m.ok()) return m.status();
      run.model = *std::move(m);
      if (full) {
        auto layers = FullModelLayers::Create(&run.model);
        if (!layers.ok()) return layers.status();
        run.full = *std::move(layers);
      }
    }
  } else {
    if (run.env.world_size > 1) {
      auto comm = dist::Communicator::Create(run.env, run.device, config.dist.timeout_seconds,
                                             config.dist.backend);
      if (!comm.ok()) return comm.status();
      run.comm = *std::move(comm);
    }
    model::ModelSource* layers = source->get();
    std::unique_ptr<model::ModelSource> expanded;
    dist::TrainedWeights trained;
    if (expand) {
      auto e = model::ExpandedModelSource(**source, *dense_source, *run.expansion);
      if (!e.ok()) return e.status();
      expanded = *std::move(e);
      layers = expanded.get();
      trained.layers = run.expansion->InsertedLayers();
    } else if (full) {
      trained.embedding_and_head = true;
      for (int64_t i = 0; i < layers->config().num_layers; ++i) trained.layers.push_back(i);
    }
    auto shell = layers->LoadShell();
    if (!shell.ok()) return shell.status();
    run.model = *std::move(shell);
    auto fsdp = dist::FsdpLayers::Create(
        *layers, run.model, build, run.comm.get(),
        dist::FsdpOptions{config.dist.sharding, config.dist.cpu_offload,
                          config.dist.offload_optimizer},
        trained);
    if (!fsdp.ok()) return fsdp.status();
    run.fsdp = *std::move(fsdp);
    Log(callbacks, absl::StrFormat("rank %d holds %.2f GiB of %s shards (%d bytes, %s%s)",
                                   run.env.rank, run.fsdp->frozen_shard_bytes() / double(1 << 30),
                                   full ? "weight" : expand ? "frozen and trained weight"
                                                           : "frozen",
                                   run.fsdp->frozen_shard_bytes(), config.dist.sharding,
                                   config.dist.cpu_offload ? ", in host memory" : ""));
  }
  if (run.expansion) {
    Log(callbacks, absl::StrFormat("llama_pro: %d layers, %d of them inserted copies",
                                   run.expansion->size(),
                                   run.expansion->InsertedLayers().size()));
  }
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  Log(callbacks, absl::StrFormat("rank %d: model ready in %.1f s; peak host memory (RSS) %.2f GiB",
                                 run.env.rank, load_seconds, PeakHostRssBytes() / double(1 << 30)));
  if (run.fsdp && run.fsdp->host_state_bytes() > 0) {
    // The bound this rank's host memory should stay within (issue-level
    // target): what it keeps in host memory plus 4 GiB for everything else.
    const double host = run.fsdp->host_state_bytes() / double(1 << 30);
    Log(callbacks, absl::StrFormat("rank %d: host memory for weights and optimizer state "
                                   "%.2f GiB; expected peak RSS <= %.2f GiB",
                                   run.env.rank, host, host + 4.0));
  }

  run.phase = "preparing the data";
  if (config.dataset.path.empty()) {
    if (!model::IsRandomSource(config.model)) {
      return absl::InvalidArgumentError("dataset.path: required for a model folder");
    }
    const int64_t per_epoch =
        std::max<int64_t>(1, config.train.max_steps) * config.train.grad_accum;
    run.data = MakeSyntheticBatchSource(run.model.config.vocab_size, config.train.batch_size,
                                        config.train.context_length, per_epoch,
                                        config.train.epochs, config.train.seed, run.env.rank,
                                        run.env.world_size);
  } else {
    auto ds = MakeDatasetBatchSource(config, config.model, run.env.rank, run.env.world_size);
    if (!ds.ok()) return ds.status();
    run.data = *std::move(ds);
  }
  Log(callbacks, run.data->Summary());
  if (HasValidation(config)) {
    auto evaluator = Evaluator::Create(config, run.env.rank, run.env.world_size);
    if (!evaluator.ok()) return evaluator.status();
    run.evaluator = *std::move(evaluator);
    Log(callbacks, run.evaluator->summary());
  }
  return absl::OkStatus();
}

absl::StatusOr<RunResult> Train(const JobConfig& config, const RunCallbacks& callbacks, Run& run) {
  const int64_t accum = config.train.grad_accum;
  int64_t total_steps =
      config.train.epochs * std::max<int64_t>(1, run.data->BatchesPerEpoch() / accum);
  if (config.train.max_steps > 0) total_steps = std::min(total_steps, config.train.max_steps);
  const int64_t warmup = config.optim.warmup_steps > 0
                             ? config.optim.warmup_steps
                             : static_cast<int64_t>(config.optim.warmup_ratio * total_steps);
  auto schedule = LrSchedule::Create(config.optim.schedule, config.optim.lr, warmup, total_steps);
  if (!schedule.ok()) return schedule.status();

  TrainerOptions topts;
  topts.activation_checkpointing = config.train.activation_checkpointing;
  topts.activation_offload = config.dist.activation_offload;
  topts.max_grad_norm = config.optim.max_grad_norm;
  topts.adamw = AdamWOptions{config.optim.beta1, config.optim.beta2, config.optim.eps,
                             config.optim.weight_decay};
  topts.seed = config.train.seed;
  topts.mlp_chunk_tokens = config.train.mlp_chunk_tokens;
  // auto follows the memory plan's choice (kept products only where they
  // fit the card and the host's memory; plan::KeepsMlpProducts), which also
  // says how many layers keep theirs, and where (Note [Where the kept
  // products live] in memory_plan.cc).
  topts.recompute = plan::ParseRecompute(config.train.recompute);
  if (topts.recompute == plan::Recompute::kAuto && run.memory_plan) {
    const plan::MemoryPlan& memory = *run.memory_plan;
    topts.recompute =
        memory.keeps_mlp_products ? plan::Recompute::kKeepMlp : plan::Recompute::kFull;
    topts.kept_mlp_layers = memory.kept_mlp_layers;
    topts.device_kept_mlp_layers = memory.device_kept_mlp_layers;
  }
  topts.host_memory_bytes = run.device_plan.host_memory_bytes;
  LayerSource* layers = run.fsdp ? static_cast<LayerSource*>(run.fsdp.get()) : run.full.get();
  Trainer trainer(&run.model, topts, layers);

  ValidationTracker tracker;
  ValidationMetrics last_validation;
  last_validation.step = -1;  // none yet
  Checkpointer checkpoints(config,
                           TrainingParts{&run.model, run.fsdp.get(), run.comm.get(), &trainer,
                                         run.data.get(), &tracker, &last_validation, run.device,
                                         run.env.rank, run.env.world_size, run.full.get()},
                           total_steps);
  if (!config.resume_from.empty()) {
    if (auto s = checkpoints.Resume(config.resume_from); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("resume_from: ", s.message()));
    }
    Log(callbacks, absl::StrCat("resumed from ", config.resume_from, " at step ",
                                trainer.steps_done()));
  }
  // Saves unless this step is already on disk; rank 0 reports the folder.
  auto checkpoint = [&](double loss) -> absl::Status {
    run.phase = absl::StrCat("writing the checkpoint of step ", trainer.steps_done());
    auto info = checkpoints.Save(loss);
    if (!info.ok()) return info.status();
    if (!info->has_value()) return absl::OkStatus();
    if (run.env.rank == 0) {
      Log(callbacks, absl::StrCat("checkpoint written to ", (*info)->path));
      if (callbacks.on_checkpoint) callbacks.on_checkpoint(**info);
    }
    return absl::OkStatus();
  };
  // Evaluates the validation set; with checkpoint.keep_best a new best is
  // saved right away so that retention can keep it. Sets `early_stop` once
  // train.early_stopping_patience evaluations brought no new best.
  bool early_stop = false;
  auto validate = [&](double train_loss) -> absl::Status {
    run.phase = absl::StrCat("evaluating the validation set at step ", trainer.steps_done());
    last_validation = run.evaluator->Evaluate(trainer, run.device, trainer.steps_done());
    const bool best = tracker.Record(last_validation);
    if (callbacks.on_validation) callbacks.on_validation(last_validation);
    if (best && config.checkpoint.keep_best) {
      if (auto s = checkpoint(train_loss); !s.ok()) return s;
    }
    if (tracker.Exhausted(config.train.early_stopping_patience)) {
      early_stop = true;
      if (run.env.rank == 0) {
        Log(callbacks, absl::StrFormat(
                           "early stopping at step %d: the validation loss has not improved "
                           "for %d evaluations (train.early_stopping_patience); best %.4f at "
                           "step %d",
                           last_validation.step, tracker.evals_since_best, tracker.best,
                           tracker.best_step));
      }
    }
    return absl::OkStatus();
  };

  RunResult result;
  Log(callbacks, absl::StrFormat("training %d steps (batch %d x %d tokens per rank, %d ranks, "
                                 "grad_accum %d)",
                                 total_steps, config.train.batch_size,
                                 config.train.context_length, run.env.world_size, accum));
  while (trainer.steps_done() < total_steps) {
    bool stop = callbacks.should_stop && callbacks.should_stop();
    // Under FSDP the ranks stop together (the save that follows is collective).
    if (run.comm) stop = run.comm->SumOverRanks(stop ? 1.0 : 0.0) > 0;
    if (stop) {
      result.stopped_early = true;
      break;
    }
    std::vector<TrainBatch> micro;
    for (int64_t k = 0; k < accum; ++k) {
      auto b = run.data->Next(run.device);
      if (absl::IsNotFound(b.status())) break;
      if (!b.ok()) return b.status();
      micro.push_back(*std::move(b));
    }
    if (micro.empty()) break;
    ResetPeakMemory(run.device);
    run.phase = absl::StrCat("step ", trainer.steps_done() + 1);
    const auto t0 = std::chrono::steady_clock::now();
    StepStats stats = trainer.Step(micro, schedule->LearningRate(trainer.steps_done()));
    SynchronizeDevice(run.device);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    StepMetrics m;
    m.step = trainer.steps_done();
    m.total_steps = total_steps;
    m.epoch = run.data->epoch();
    m.loss = stats.loss;
    m.learning_rate = stats.learning_rate;
    m.grad_norm = stats.grad_norm;
    m.tokens = stats.input_tokens;
    m.step_seconds = seconds;
    m.tokens_per_second = seconds > 0 ? stats.input_tokens / seconds : 0;
    MemoryStats mem = ReadMemoryStats(run.device);
    m.gpu_memory_peak_bytes = mem.peak_allocated;
    m.gpu_memory_reserved_bytes = mem.peak_reserved;
    result.tokens_trained += stats.input_tokens;
    result.final_loss = stats.loss;
    if (callbacks.on_step) callbacks.on_step(m);
    if (run.evaluator && run.evaluator->Due(m.step, total_steps)) {
      if (auto s = validate(stats.loss); !s.ok()) return s;
    }
    if (checkpoints.Due()) {
      if (auto s = checkpoint(stats.loss); !s.ok()) return s;
    }
    if (early_stop) break;
  }
  // The end of training is always evaluated (also when the data ran out
  // before total_steps); a pause is not the end.
  if (run.evaluator && !result.stopped_early && trainer.steps_done() > 0 &&
      last_validation.step != trainer.steps_done()) {
    if (auto s = validate(result.final_loss); !s.ok()) return s;
  }
  result.steps = trainer.steps_done();
  Log(callbacks, absl::StrFormat("rank %d: peak host memory (RSS) %.2f GiB after %d steps",
                                 run.env.rank, PeakHostRssBytes() / double(1 << 30),
                                 result.steps));
  if (run.fsdp && run.fsdp->host_optimizer_steps() > 0) {
    Log(callbacks, absl::StrFormat("rank %d: %d AdamW steps ran on the host", run.env.rank,
                                   run.fsdp->host_optimizer_steps()));
  }
  // At the end, and when stopped early, so that a paused job resumes exactly.
  if (auto s = checkpoint(result.final_loss); !s.ok()) return s;
  // Only a finished run writes the job's adapter/ folder: a stopped one
  // (pause, cancel, SIGTERM, the daemon gone) leaves its state in the
  // checkpoint, so adapter/ never holds a half-trained adapter. Every rank
  // agreed on the stop above, so all of them skip the collective gather.
  if (result.stopped_early) return result;
  if (run.full || (run.fsdp && run.fsdp->trains_weights())) {
    // A whole trained model: a Hugging Face folder beside the checkpoints.
    if (model::IsRandomSource(config.model)) {
      Log(callbacks, "random: models have no config.json; no model folder written");
      return result;
    }
    run.phase = "writing the model folder";
    result.adapter_path = config.output_dir + "/model";
    std::vector<NamedTensor> trained;
    if (run.fsdp) {
      // Every rank takes part in the gather; rank 0 writes.
      auto gathered = run.fsdp->GatherTrainedWeights();
      if (!gathered.ok()) return gathered.status();
      trained = *std::move(gathered);
    } else {
      trained = run.full->tensors();
    }
    if (run.env.rank != 0) return result;
    ModelFolderOptions folder;
    folder.base_dir = config.model;
    folder.out_dir = result.adapter_path;
    if (run.expansion) {
      folder.num_hidden_layers = run.expansion->size();
      auto tensors = ExpandedModelTensors(config.model, *run.expansion, trained);
      if (!tensors.ok()) return tensors.status();
      if (auto s = WriteModelFolder(*tensors, folder); !s.ok()) return s;
    } else if (auto s = WriteModelFolder(trained, folder); !s.ok()) {
      return s;
    }
    Log(callbacks, absl::StrCat("model written to ", result.adapter_path));
    return result;
  }

  run.phase = "writing the adapter";
  std::map<std::string, at::Tensor> adapter;
  if (run.fsdp) {
    auto gathered = run.fsdp->GatherAdapterTensors();
    if (!gathered.ok()) return gathered.status();
    adapter = *std::move(gathered);
  } else {
    adapter = AdapterTensors(run.model);
  }
  result.adapter_path = config.output_dir + "/adapter";
  if (run.env.rank == 0) {
    if (auto s = SaveAdapter(adapter, config.lora, config.model, result.adapter_path); !s.ok()) {
      return s;
    }
    Log(callbacks, absl::StrCat("adapter written to ", result.adapter_path));
  }
  return result;
}

}  // namespace

absl::StatusOr<RunResult> RunJob(const JobConfig& config, const RunCallbacks& callbacks) {
  Run run;
  try {
    if (auto s = Setup(config, callbacks, run); !s.ok()) return s;
    return Train(config, callbacks, run);
  } catch (const c10::OutOfMemoryError& e) {
    // Out of memory anywhere in the run ends here, as one line.
    OutOfMemoryContext context;
    context.rank = run.env.rank;
    context.device = run.device.str();
    context.phase = run.phase;
    context.peak_allocated = ReadMemoryStats(run.device).peak_allocated;
    context.model = run.model_config ? &*run.model_config : nullptr;
    context.job = &config;
    context.device_plan = run.device_plan;
    return OutOfMemoryStatus(e.what_without_backtrace(), context);
  } catch (const c10::Error& e) {
    // LibTorch and c10d report failures (a dead peer, a bad shape) by
    // throwing; the job ends with the message, without LibTorch's C++
    // backtrace, instead of a crash.
    return absl::InternalError(
        absl::StrCat("rank ", run.env.rank, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("rank ", run.env.rank, ": ", e.what()));
  }
}

}  // namespace rigtune::train
