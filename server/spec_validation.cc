#include "server/spec_validation.h"

#include <algorithm>
#include <filesystem>
#include <initializer_list>
#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/model_folder.h"

namespace rigtune::server {

namespace {

namespace fs = std::filesystem;

absl::Status Bad(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

template <typename T>
absl::Status InRange(const std::string& field, bool present, T value, T low, T high) {
  if (!present || (value >= low && value <= high)) return absl::OkStatus();
  return Bad(field, absl::StrCat("must be in [", low, ", ", high, "], got ", value));
}

absl::Status OneOf(const std::string& field, bool present, const std::string& value,
                   std::initializer_list<const char*> allowed) {
  if (!present) return absl::OkStatus();
  for (const char* option : allowed) {
    if (value == option) return absl::OkStatus();
  }
  return Bad(field, absl::StrCat("must be one of ", absl::StrJoin(allowed, ", "), "; got '",
                                 value, "'"));
}

absl::Status FirstError(std::initializer_list<absl::Status> statuses) {
  for (const absl::Status& status : statuses) {
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status CheckExists(const std::string& field, const std::string& path) {
  std::error_code error;
  if (fs::exists(path, error)) return absl::OkStatus();
  return Bad(field, absl::StrCat(path, " does not exist"));
}

// The dataset is one file (JSON Lines or JSON); a folder or a device is a
// mistake the worker would only report as an empty dataset.
absl::Status CheckRegularFile(const std::string& field, const std::string& path) {
  if (absl::Status s = CheckExists(field, path); !s.ok()) return s;
  std::error_code error;
  if (fs::is_directory(path, error)) {
    return Bad(field, absl::StrCat(path, " is a folder; give the dataset file itself "
                                         "(.jsonl or .json)"));
  }
  if (!fs::is_regular_file(path, error)) return Bad(field, absl::StrCat(path, " is not a file"));
  return absl::OkStatus();
}

absl::Status ValidateHyperparameters(const rigtune::v1::JobSpec& spec) {
  const auto& dataset = spec.dataset();
  const auto& lora = spec.lora();
  const auto& optim = spec.optim();
  const auto& train = spec.train();
  const auto& dist = spec.dist();
  const auto& checkpoint = spec.checkpoint();
  for (int i = 0; i < lora.target_modules_size(); ++i) {
    if (lora.target_modules(i).empty()) {
      return Bad(absl::StrCat("spec.lora.target_modules[", i, "]"), "must not be empty");
    }
  }
  if (train.method() == "full") {
    if (train.base() != "bf16") {
      return Bad("spec.train.method",
                 absl::StrCat("full trains the base weights themselves, which needs "
                              "spec.train.base bf16 (got spec.train.base \"",
                              train.base(), "\"); set spec.train.base to bf16, or train an "
                              "adapter (lora or dora) on a quantized base"));
    }
    if (spec.has_lora()) {
      return Bad("spec.lora", "not used by spec.train.method full (every weight trains); "
                              "remove the lora section");
    }
  }
  if (train.method() == "llama_pro") {
    if (train.expand_every() < 1) {
      return Bad("spec.train.expand_every",
                 absl::StrCat("spec.train.method llama_pro inserts a copy after every "
                              "expand_every-th layer; set it to 1 or more, got ",
                              train.expand_every()));
    }
    if (spec.has_lora()) {
      return Bad("spec.lora", "not used by spec.train.method llama_pro (the new blocks train "
                              "fully); remove the lora section");
    }
  } else if (train.has_expand_every()) {
    return Bad("spec.train.expand_every", "only spec.train.method llama_pro expands blocks");
  }
  if (train.mlp_chunk_tokens() > 0 && lora.dropout() > 0) {
    return Bad("spec.train.mlp_chunk_tokens",
               "a row-tiled MLP needs spec.lora.dropout = 0 (dropout masks are drawn per "
               "projection input); leave mlp_chunk_tokens at 0 (automatic: untiled with dropout) "
               "or set lora.dropout to 0");
  }
  return FirstError({
      OneOf("spec.dataset.format", dataset.has_format(), dataset.format(),
            {"alpaca", "messages", "text"}),
      InRange<int64_t>("spec.lora.r", lora.has_r(), lora.r(), 1, 1024),
      InRange<double>("spec.lora.alpha", lora.has_alpha(), lora.alpha(), 1e-6, 1e6),
      InRange<double>("spec.lora.dropout", lora.has_dropout(), lora.dropout(), 0.0, 0.99),
      InRange<double>("spec.optim.lr", optim.has_lr(), optim.lr(), 1e-12, 1.0),
      InRange<double>("spec.optim.weight_decay", optim.has_weight_decay(), optim.weight_decay(),
                      0.0, 10.0),
      InRange<double>("spec.optim.beta1", optim.has_beta1(), optim.beta1(), 0.0, 0.999999),
      InRange<double>("spec.optim.beta2", optim.has_beta2(), optim.beta2(), 0.0, 0.999999),
      InRange<double>("spec.optim.eps", optim.has_eps(), optim.eps(), 1e-20, 1.0),
      OneOf("spec.optim.schedule", optim.has_schedule(), optim.schedule(),
            {"constant", "linear", "cosine"}),
      InRange<double>("spec.optim.warmup_ratio", optim.has_warmup_ratio(), optim.warmup_ratio(),
                      0.0, 1.0),
      InRange<int64_t>("spec.optim.warmup_steps", optim.has_warmup_steps(),
                       optim.warmup_steps(), 0, 10'000'000),
      InRange<double>("spec.optim.max_grad_norm", optim.has_max_grad_norm(),
                      optim.max_grad_norm(), -1.0, 1e6),
      InRange<int64_t>("spec.train.context_length", train.has_context_length(),
                       train.context_length(), 8, 1 << 20),
      InRange<int64_t>("spec.train.batch_size", train.has_batch_size(), train.batch_size(), 1,
                       4096),
      InRange<int64_t>("spec.train.grad_accum", train.has_grad_accum(), train.grad_accum(), 1,
                       65536),
      InRange<int64_t>("spec.train.epochs", train.has_epochs(), train.epochs(), 1, 1000),
      InRange<int64_t>("spec.train.mlp_chunk_tokens", train.has_mlp_chunk_tokens(),
                       train.mlp_chunk_tokens(), 0, 1 << 30),
      InRange<int64_t>("spec.train.max_steps", train.has_max_steps(), train.max_steps(), 0,
                       100'000'000),
      OneOf("spec.train.base", train.has_base(), train.base(), {"nf4", "bf16", "hqq4"}),
      OneOf("spec.train.method", train.has_method(), train.method(),
            {"lora", "dora", "full", "llama_pro"}),
      OneOf("spec.train.dtype", train.has_dtype(), train.dtype(), {"bf16", "fp16", "fp32"}),
      OneOf("spec.train.recompute", train.has_recompute(), train.recompute(),
            {"full", "keep_mlp", "auto"}),
      OneOf("spec.train.device", train.has_device(), train.device(), {"auto", "cpu", "cuda"}),
      OneOf("spec.dist.sharding", dist.has_sharding(), dist.sharding(),
            {"full_shard", "shard_grad_op", "no_shard", "hybrid"}),
      OneOf("spec.dist.backend", dist.has_backend(), dist.backend(), {"auto", "nccl", "gloo"}),
      InRange<double>("spec.dist.max_gpu_memory_gib", dist.has_max_gpu_memory_gib(),
                      dist.max_gpu_memory_gib(), 0.0, 4096.0),
      InRange<double>("spec.dist.timeout_seconds", dist.has_timeout_seconds(),
                      dist.timeout_seconds(), 1.0, 86400.0),
      InRange<int64_t>("spec.checkpoint.every_steps", checkpoint.has_every_steps(),
                       checkpoint.every_steps(), 0, 100'000'000),
      InRange<int64_t>("spec.checkpoint.keep_last", checkpoint.has_keep_last(),
                       checkpoint.keep_last(), 1, 1000),
  });
}

absl::Status ValidateScheduling(const rigtune::v1::JobSpec& spec, const SpecLimits& limits) {
  if (spec.has_gpus() && spec.gpus() > limits.total_gpus) {
    return Bad("spec.gpus", absl::StrCat("must be <= ", limits.total_gpus,
                                         " (GPUs this daemon manages), got ", spec.gpus()));
  }
  static const std::regex kLabelKey("[a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?");
  if (spec.labels_size() > 32) {
    return Bad("spec.labels", absl::StrCat("at most 32 labels, got ", spec.labels_size()));
  }
  for (const auto& [key, value] : spec.labels()) {
    if (!std::regex_match(key, kLabelKey)) {
      return Bad(absl::StrCat("spec.labels[", key, "]"),
                 "key must be 1-63 of [a-z0-9_.-], starting and ending alphanumeric");
    }
    if (value.size() > 256) {
      return Bad(absl::StrCat("spec.labels[", key, "]"), "value longer than 256 bytes");
    }
  }
  return FirstError({
      InRange<int32_t>("spec.gpus", spec.has_gpus(), spec.gpus(), 0, 1024),
      InRange<int32_t>("spec.priority", true, spec.priority(), -1000, 1000),
      InRange<int32_t>("spec.max_restarts", spec.has_max_restarts(), spec.max_restarts(), 0,
                       100),
  });
}

absl::Status ValidatePaths(const rigtune::v1::JobSpec& spec, const PathRoots& roots) {
  const bool random_model = absl::StartsWith(spec.model(), "random:");
  if (spec.model().empty()) return Bad("spec.model", "required (a model folder or random:<shape>)");
  if (random_model && spec.model().size() == 7) return Bad("spec.model", "random: needs a shape");
  if (!random_model) {
    if (absl::Status s = CheckUnderRoots("spec.model", spec.model(), roots.model, "model");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckExists("spec.model", spec.model()); !s.ok()) return s;
  }
  const std::string& dataset = spec.dataset().path();
  if (dataset.empty() && !random_model) {
    return Bad("spec.dataset.path", "required unless the model is random:<shape>");
  }
  if (!dataset.empty()) {
    if (absl::Status s = CheckUnderRoots("spec.dataset.path", dataset, roots.data, "data");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckRegularFile("spec.dataset.path", dataset); !s.ok()) return s;
  }
  if (!spec.output_dir().empty()) {
    return CheckUnderRoots("spec.output_dir", spec.output_dir(), roots.output, "output");
  }
  return absl::OkStatus();
}

// Validation data (dataset.validation_path / validation_fraction) and what
// depends on it: evaluation cadence, early stopping.
absl::Status ValidateValidationData(const rigtune::v1::JobSpec& spec, const PathRoots& roots) {
  const auto& dataset = spec.dataset();
  const auto& train = spec.train();
  const bool by_path = !dataset.validation_path().empty();
  const bool by_fraction = dataset.has_validation_fraction();
  if (by_path && by_fraction) {
    return Bad("spec.dataset.validation_fraction",
               "set either dataset.validation_path or dataset.validation_fraction, not both");
  }
  if (by_fraction) {
    const double f = dataset.validation_fraction();
    if (!(f > 0 && f <= 0.5)) {
      return Bad("spec.dataset.validation_fraction",
                 absl::StrCat("must be in (0, 0.5], got ", f));
    }
  }
  if ((by_path || by_fraction) && absl::StartsWith(spec.model(), "random:")) {
    const char* field = by_path ? "spec.dataset.validation_path" : "spec.dataset.validation_fraction";
    return Bad(field, "needs a model folder with a tokenizer (a random: model has none)");
  }
  if (by_path) {
    const std::string& path = dataset.validation_path();
    if (absl::Status s = CheckUnderRoots("spec.dataset.validation_path", path, roots.data, "data");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckRegularFile("spec.dataset.validation_path", path); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = InRange<int64_t>("spec.train.eval_every_steps", train.has_eval_every_steps(),
                                        train.eval_every_steps(), 0, 100'000'000);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = InRange<int64_t>(
          "spec.train.early_stopping_patience", train.has_early_stopping_patience(),
          train.early_stopping_patience(), 0, 1'000'000);
      !s.ok()) {
    return s;
  }
  if (train.early_stopping_patience() > 0 && !by_path && !by_fraction) {
    return Bad("spec.train.early_stopping_patience",
               "needs validation data: set dataset.validation_path or "
               "dataset.validation_fraction");
  }
  return absl::OkStatus();
}

// Last, as it reads files: the model's config and tokenizer parse and the
// LoRA targets are modules of its architecture.
absl::Status ValidateModel(const rigtune::v1::JobSpec& spec) {
  absl::StatusOr<ModelInfo> model = InspectModel(spec.model(), !spec.dataset().path().empty());
  if (!model.ok()) return model.status();
  const auto& targets = spec.lora().target_modules();
  if (model->fused &&
      IsEveryLlamaLinear(std::vector<std::string>(targets.begin(), targets.end()))) {
    return absl::OkStatus();  // the default: every fused linear
  }
  for (int i = 0; i < targets.size(); ++i) {
    if (std::find(model->modules.begin(), model->modules.end(), targets[i]) ==
        model->modules.end()) {
      return Bad(absl::StrCat("spec.lora.target_modules[", i, "]"),
                 absl::StrCat("'", targets[i], "' is not a module of ", model->architecture,
                              " (its modules: ", absl::StrJoin(model->modules, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckUnderRoots(const std::string& field, const std::string& path,
                             const std::vector<std::string>& roots, const std::string& kind) {
  if (path.size() > 4096) return Bad(field, "longer than 4096 bytes");
  if (path.find('\0') != std::string::npos) return Bad(field, "contains a NUL byte");
  if (!fs::path(path).is_absolute()) {
    return Bad(field, absl::StrCat("must be an absolute path, got '", path, "'"));
  }
  if (roots.empty()) return absl::OkStatus();
  std::error_code error;
  fs::path resolved = fs::weakly_canonical(path, error);
  if (error) resolved = fs::path(path).lexically_normal();
  for (const std::string& root : roots) {
    fs::path base = fs::weakly_canonical(root, error);
    if (error) base = fs::path(root).lexically_normal();
    fs::path relative = resolved.lexically_relative(base);
    if (!relative.empty() && *relative.begin() != ".." && !relative.is_absolute()) {
      return absl::OkStatus();
    }
  }
  return Bad(field, absl::StrCat(path, " is outside the ", kind, " roots (",
                                 absl::StrJoin(roots, ", "), ")"));
}

absl::Status ValidateJobSpec(const rigtune::v1::JobSpec& spec, const SpecLimits& limits) {
  if (absl::Status s = ValidatePaths(spec, limits.roots); !s.ok()) return s;
  if (absl::Status s = ValidateHyperparameters(spec); !s.ok()) return s;
  if (absl::Status s = ValidateValidationData(spec, limits.roots); !s.ok()) return s;
  if (absl::Status s = ValidateScheduling(spec, limits); !s.ok()) return s;
  return ValidateModel(spec);
}

}  // namespace rigtune::server
