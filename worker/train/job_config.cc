#include "worker/train/job_config.h"

#include <fstream>
#include <set>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace rigtune::train {
namespace {

using json = nlohmann::json;

absl::Status Err(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// Reads the fields of one JSON object, rejecting unknown ones. Each Get
// checks the type; errors carry the dotted field path.
class ObjectReader {
 public:
  ObjectReader(const json& j, std::string path) : j_(j), path_(std::move(path)) {}

  absl::Status CheckObject() const {
    if (!j_.is_object()) return Err(path_.empty() ? "job" : path_, "must be a JSON object");
    return absl::OkStatus();
  }
  std::string Path(const char* key) const { return path_.empty() ? key : path_ + "." + key; }

  template <typename T>
  absl::Status Get(const char* key, T* out) {
    seen_.insert(key);
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return absl::OkStatus();
    if constexpr (std::is_same_v<T, bool>) {
      if (!it->is_boolean()) return Err(Path(key), "must be true or false");
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!it->is_string()) return Err(Path(key), "must be a string");
    } else if constexpr (std::is_integral_v<T>) {
      if (!it->is_number_integer()) return Err(Path(key), "must be an integer");
      if (std::is_unsigned_v<T> && it->get<int64_t>() < 0) return Err(Path(key), "must be >= 0");
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!it->is_number()) return Err(Path(key), "must be a number");
    } else {
      if (!it->is_array()) return Err(Path(key), "must be a list of strings");
      for (const json& e : *it) {
        if (!e.is_string()) return Err(Path(key), "must be a list of strings");
      }
    }
    *out = it->get<T>();
    return absl::OkStatus();
  }

  const json* Child(const char* key) {
    seen_.insert(key);
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }

  absl::Status CheckUnknown() const {
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      if (!seen_.count(it.key())) return Err(Path(it.key().c_str()), "unknown field");
    }
    return absl::OkStatus();
  }

 private:
  const json& j_;
  std::string path_;
  std::set<std::string> seen_;
};

#define RT_RETURN_IF_ERROR(expr)         \
  do {                                   \
    absl::Status _st = (expr);           \
    if (!_st.ok()) return _st;           \
  } while (0)

template <typename Fn>
absl::Status ReadSection(ObjectReader& parent, const char* key, Fn&& fn) {
  const json* j = parent.Child(key);
  if (j == nullptr) return absl::OkStatus();
  ObjectReader r(*j, parent.Path(key));
  RT_RETURN_IF_ERROR(r.CheckObject());
  RT_RETURN_IF_ERROR(fn(r));
  return r.CheckUnknown();
}

absl::Status OneOf(const std::string& field, const std::string& value,
                   std::initializer_list<const char*> allowed) {
  for (const char* a : allowed) {
    if (value == a) return absl::OkStatus();
  }
  return Err(field, absl::StrCat("must be one of ", absl::StrJoin(allowed, ", "), "; got '",
                                 value, "'"));
}

absl::Status Validate(const JobConfig& c) {
  if (c.model.empty()) return Err("model", "required (a model folder or random:<shape>)");
  RT_RETURN_IF_ERROR(OneOf("dataset.format", c.dataset.format, {"alpaca", "messages", "text"}));
  if (c.lora.r < 1) return Err("lora.r", absl::StrCat("must be >= 1, got ", c.lora.r));
  if (!(c.lora.alpha > 0)) return Err("lora.alpha", "must be > 0");
  if (c.lora.dropout < 0 || c.lora.dropout >= 1) return Err("lora.dropout", "must be in [0, 1)");
  if (c.lora.target_modules.empty()) return Err("lora.target_modules", "must not be empty");
  for (const std::string& t : c.lora.target_modules) {
    RT_RETURN_IF_ERROR(OneOf("lora.target_modules", t,
                             {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                              "down_proj", "qkv_proj", "gate_up_proj"}));
  }
  if (!(c.optim.lr > 0)) return Err("optim.lr", absl::StrCat("must be > 0, got ", c.optim.lr));
  if (c.optim.weight_decay < 0) return Err("optim.weight_decay", "must be >= 0");
  if (c.optim.beta1 < 0 || c.optim.beta1 >= 1) return Err("optim.beta1", "must be in [0, 1)");
  if (c.optim.beta2 < 0 || c.optim.beta2 >= 1) return Err("optim.beta2", "must be in [0, 1)");
  if (!(c.optim.eps > 0)) return Err("optim.eps", "must be > 0");
  RT_RETURN_IF_ERROR(OneOf("optim.schedule", c.optim.schedule, {"constant", "linear", "cosine"}));
  if (c.optim.warmup_ratio < 0 || c.optim.warmup_ratio >= 1) {
    return Err("optim.warmup_ratio", "must be in [0, 1)");
  }
  if (c.optim.warmup_steps < 0) return Err("optim.warmup_steps", "must be >= 0");
  if (c.train.context_length < 2) return Err("train.context_length", "must be >= 2");
  if (c.train.batch_size < 1) return Err("train.batch_size", "must be >= 1");
  if (c.train.grad_accum < 1) return Err("train.grad_accum", "must be >= 1");
  if (c.train.epochs < 1) return Err("train.epochs", "must be >= 1");
  if (c.train.max_steps < 0) return Err("train.max_steps", "must be >= 0");
  RT_RETURN_IF_ERROR(OneOf("train.base", c.train.base, {"nf4", "bf16", "hqq4"}));
  RT_RETURN_IF_ERROR(
      OneOf("train.method", c.train.method, {"lora", "dora", "full", "llama_pro"}));
  if (c.train.method == "llama_pro") {
    if (c.train.expand_every < 1) {
      return Err("train.expand_every",
                 absl::StrCat("train.method llama_pro inserts a copy after every "
                              "expand_every-th layer; set it to 1 or more, got ",
                              c.train.expand_every));
    }
  } else if (c.train.expand_every != 0) {
    return Err("train.expand_every",
               absl::StrCat("only train.method llama_pro expands blocks (train.method is ",
                            c.train.method, "); remove it or set train.method to llama_pro"));
  }
  if (c.train.method == "full") {
    if (c.train.base != "bf16") {
      return Err("train.method",
                 absl::StrCat("full trains the base weights themselves, which needs "
                              "train.base bf16 (got train.base ",
                              c.train.base, "); set train.base to bf16, or train an adapter "
                              "(train.method lora or dora) on a quantized base"));
    }
  }
  RT_RETURN_IF_ERROR(OneOf("train.dtype", c.train.dtype, {"bf16", "fp16", "fp32"}));
  RT_RETURN_IF_ERROR(OneOf("train.device", c.train.device, {"auto", "cpu", "cuda"}));
  RT_RETURN_IF_ERROR(OneOf("dist.sharding", c.dist.sharding,
                           {"full_shard", "shard_grad_op", "no_shard", "hybrid"}));
  RT_RETURN_IF_ERROR(OneOf("dist.backend", c.dist.backend, {"auto", "nccl", "gloo"}));
  if (c.dist.max_gpu_memory_gib < 0) return Err("dist.max_gpu_memory_gib", "must be >= 0");
  if (!(c.dist.timeout_seconds > 0)) return Err("dist.timeout_seconds", "must be > 0");
  if (!c.dataset.validation_path.empty() && c.dataset.validation_fraction != 0) {
    return Err("dataset.validation_fraction",
               "set either dataset.validation_path or dataset.validation_fraction, not both");
  }
  if (c.dataset.validation_fraction < 0 || c.dataset.validation_fraction > 0.5) {
    return Err("dataset.validation_fraction",
               absl::StrCat("must be in (0, 0.5], got ", c.dataset.validation_fraction));
  }
  if (c.dataset.validation_fraction > 0 && c.dataset.path.empty()) {
    return Err("dataset.validation_fraction", "needs dataset.path (the file to hold out from)");
  }
  if (c.train.eval_every_steps < 0) return Err("train.eval_every_steps", "must be >= 0");
  if (c.train.mlp_chunk_tokens < 0) {
    return Err("train.mlp_chunk_tokens", "must be >= 0 (0 = automatic)");
  }
  if (c.train.mlp_chunk_tokens > 0 && c.lora.dropout > 0) {
    return Err("train.mlp_chunk_tokens",
               "a row-tiled MLP needs lora.dropout = 0 (dropout masks are drawn per projection "
               "input); leave it at 0 (automatic: untiled with dropout) or set lora.dropout to 0");
  }
  RT_RETURN_IF_ERROR(OneOf("train.recompute", c.train.recompute, {"full", "keep_mlp", "auto"}));
  if (c.train.recompute == "keep_mlp") {
    if (!c.train.activation_checkpointing) {
      return Err("train.recompute",
                 "keep_mlp needs train.activation_checkpointing (no recompute without it)");
    }
    if (c.train.mlp_chunk_tokens > 0) {
      return Err("train.recompute",
                 "keep_mlp does not apply to a row-tiled MLP (train.mlp_chunk_tokens > 0 "
                 "recomputes it chunk by chunk); leave train.recompute at auto or full");
    }
    if (c.train.method == "full" || c.train.method == "dora") {
      return Err("train.recompute",
                 absl::StrCat("keep_mlp needs gate/up projections that run as one product; "
                              "train.method ",
                              c.train.method, " does not (use auto or full)"));
    }
  }
  if (c.train.early_stopping_patience < 0) {
    return Err("train.early_stopping_patience", "must be >= 0");
  }
  if (c.train.early_stopping_patience > 0 && !HasValidation(c)) {
    return Err("train.early_stopping_patience",
               "needs validation data (dataset.validation_path or dataset.validation_fraction)");
  }
  if (c.checkpoint.every_steps < 0) return Err("checkpoint.every_steps", "must be >= 0");
  if (c.checkpoint.keep_last < 1) return Err("checkpoint.keep_last", "must be >= 1");
  if (c.output_dir.empty()) return Err("output_dir", "required (where the adapter is written)");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<JobConfig> ParseJobConfig(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("job: not valid JSON");
  JobConfig c;
  ObjectReader r(j, "");
  RT_RETURN_IF_ERROR(r.CheckObject());
  RT_RETURN_IF_ERROR(r.Get("job_id", &c.job_id));
  RT_RETURN_IF_ERROR(r.Get("model", &c.model));
  RT_RETURN_IF_ERROR(r.Get("output_dir", &c.output_dir));
  RT_RETURN_IF_ERROR(r.Get("resume_from", &c.resume_from));
  RT_RETURN_IF_ERROR(ReadSection(r, "dataset", [&](ObjectReader& s) {
    RT_RETURN_IF_ERROR(s.Get("path", &c.dataset.path));
    RT_RETURN_IF_ERROR(s.Get("format", &c.dataset.format));
    RT_RETURN_IF_ERROR(s.Get("train_on_prompt", &c.dataset.train_on_prompt));
    RT_RETURN_IF_ERROR(s.Get("chat_template", &c.dataset.chat_template));
    if (const json* kwargs = s.Child("chat_template_kwargs"); kwargs != nullptr) {
      if (!kwargs->is_object()) {
        return Err(s.Path("chat_template_kwargs"),
                   "must be a JSON object of template variables, e.g. {\"enable_thinking\": false}");
      }
      c.dataset.chat_template_kwargs = kwargs->dump();
    }
    RT_RETURN_IF_ERROR(s.Get("packing", &c.dataset.packing));
    RT_RETURN_IF_ERROR(s.Get("validation_path", &c.dataset.validation_path));
    return s.Get("validation_fraction", &c.dataset.validation_fraction);
  }));
  RT_RETURN_IF_ERROR(ReadSection(r, "lora", [&](ObjectReader& s) {
    RT_RETURN_IF_ERROR(s.Get("r", &c.lora.r));
    RT_RETURN_IF_ERROR(s.Get("alpha", &c.lora.alpha));
    RT_RETURN_IF_ERROR(s.Get("dropout", &c.lora.dropout));
    RT_RETURN_IF_ERROR(s.Get("use_rslora", &c.lora.use_rslora));
    return s.Get("target_modules", &c.lora.target_modules);
  }));
  RT_RETURN_IF_ERROR(ReadSection(r, "optim", [&](ObjectReader& s) {
    RT_RETURN_IF_ERROR(s.Get("lr", &c.optim.lr));
    RT_RETURN_IF_ERROR(s.Get("weight_decay", &c.optim.weight_decay));
    RT_RETURN_IF_ERROR(s.Get("beta1", &c.optim.beta1));
    RT_RETURN_IF_ERROR(s.Get("beta2", &c.optim.beta2));
    RT_RETURN_IF_ERROR(s.Get("eps", &c.optim.eps));
    RT_RETURN_IF_ERROR(s.Get("schedule", &c.optim.schedule));
    RT_RETURN_IF_ERROR(s.Get("warmup_ratio", &c.optim.warmup_ratio));
    RT_RETURN_IF_ERROR(s.Get("warmup_steps", &c.optim.warmup_steps));
    return s.Get("max_grad_norm", &c.optim.max_grad_norm);
  }));
  RT_RETURN_IF_ERROR(ReadSection(r, "train", [&](ObjectReader& s) {
    RT_RETURN_IF_ERROR(s.Get("base", &c.train.base));
    RT_RETURN_IF_ERROR(s.Get("method", &c.train.method));
    RT_RETURN_IF_ERROR(s.Get("expand_every", &c.train.expand_every));
    RT_RETURN_IF_ERROR(s.Get("context_length", &c.train.context_length));
    RT_RETURN_IF_ERROR(s.Get("batch_size", &c.train.batch_size));
    RT_RETURN_IF_ERROR(s.Get("grad_accum", &c.train.grad_accum));
    RT_RETURN_IF_ERROR(s.Get("epochs", &c.train.epochs));
    RT_RETURN_IF_ERROR(s.Get("max_steps", &c.train.max_steps));
    RT_RETURN_IF_ERROR(s.Get("seed", &c.train.seed));
    RT_RETURN_IF_ERROR(s.Get("activation_checkpointing", &c.train.activation_checkpointing));
    RT_RETURN_IF_ERROR(s.Get("dtype", &c.train.dtype));
    RT_RETURN_IF_ERROR(s.Get("device", &c.train.device));
    RT_RETURN_IF_ERROR(s.Get("eval_every_steps", &c.train.eval_every_steps));
    RT_RETURN_IF_ERROR(s.Get("mlp_chunk_tokens", &c.train.mlp_chunk_tokens));
    RT_RETURN_IF_ERROR(s.Get("recompute", &c.train.recompute));
    return s.Get("early_stopping_patience", &c.train.early_stopping_patience);
  }));
  RT_RETURN_IF_ERROR(ReadSection(r, "dist", [&](ObjectReader& s) {
    RT_RETURN_IF_ERROR(s.Get("sharding", &c.dist.sharding));
    RT_RETURN_IF_ERROR(s.Get("cpu_offload", &c.dist.cpu_offload));
    RT_RETURN_IF_ERROR(s.Get("activation_offload", &c.dist.activation_offload));
    RT_RETURN_IF_ERROR(s.Get("offload_optimizer", &c.dist.offload_optimizer));
    RT_RETURN_IF_ERROR(s.Get("max_gpu_memory_gib", &c.dist.max_gpu_memory_gib));
    RT_RETURN_IF_ERROR(s.Get("backend", &c.dist.backend));
    return s.Get("timeout_seconds", &c.dist.timeout_seconds);
  }));
  RT_RETURN_IF_ERROR(ReadSection(r, "checkpoint", [&](ObjectReader& s) {
    RT_RETURN_IF_ERROR(s.Get("every_steps", &c.checkpoint.every_steps));
    RT_RETURN_IF_ERROR(s.Get("keep_last", &c.checkpoint.keep_last));
    return s.Get("keep_best", &c.checkpoint.keep_best);
  }));
  RT_RETURN_IF_ERROR(r.CheckUnknown());
  RT_RETURN_IF_ERROR(Validate(c));
  return c;
}

absl::StatusOr<JobConfig> LoadJobConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open job file"));
  std::stringstream ss;
  ss << in.rdbuf();
  auto c = ParseJobConfig(ss.str());
  if (!c.ok()) {
    return absl::Status(c.status().code(), absl::StrCat(path, ": ", c.status().message()));
  }
  return c;
}

std::string JobConfigToJson(const JobConfig& c) {
  json j = {
      {"job_id", c.job_id},
      {"model", c.model},
      {"output_dir", c.output_dir},
      {"resume_from", c.resume_from},
      {"dataset",
       {{"path", c.dataset.path}, {"format", c.dataset.format},
        {"train_on_prompt", c.dataset.train_on_prompt}, {"packing", c.dataset.packing},
        {"validation_path", c.dataset.validation_path},
        {"validation_fraction", c.dataset.validation_fraction},
        {"chat_template", c.dataset.chat_template},
        {"chat_template_kwargs", c.dataset.chat_template_kwargs.empty()
                                     ? json::object()
                                     : json::parse(c.dataset.chat_template_kwargs)}}},
      {"lora",
       {{"r", c.lora.r}, {"alpha", c.lora.alpha}, {"dropout", c.lora.dropout},
        {"use_rslora", c.lora.use_rslora}, {"target_modules", c.lora.target_modules}}},
      {"optim",
       {{"lr", c.optim.lr}, {"weight_decay", c.optim.weight_decay}, {"beta1", c.optim.beta1},
        {"beta2", c.optim.beta2}, {"eps", c.optim.eps}, {"schedule", c.optim.schedule},
        {"warmup_ratio", c.optim.warmup_ratio}, {"warmup_steps", c.optim.warmup_steps},
        {"max_grad_norm", c.optim.max_grad_norm}}},
      {"train",
       {{"base", c.train.base}, {"method", c.train.method},
        {"expand_every", c.train.expand_every},
        {"context_length", c.train.context_length}, {"batch_size", c.train.batch_size},
        {"grad_accum", c.train.grad_accum}, {"epochs", c.train.epochs},
        {"max_steps", c.train.max_steps}, {"seed", c.train.seed},
        {"activation_checkpointing", c.train.activation_checkpointing},
        {"dtype", c.train.dtype}, {"device", c.train.device},
        {"eval_every_steps", c.train.eval_every_steps},
        {"early_stopping_patience", c.train.early_stopping_patience},
        {"mlp_chunk_tokens", c.train.mlp_chunk_tokens},
        {"recompute", c.train.recompute}}},
      {"dist",
       {{"sharding", c.dist.sharding}, {"cpu_offload", c.dist.cpu_offload},
        {"activation_offload", c.dist.activation_offload},
        {"offload_optimizer", c.dist.offload_optimizer},
        {"max_gpu_memory_gib", c.dist.max_gpu_memory_gib},
        {"timeout_seconds", c.dist.timeout_seconds}, {"backend", c.dist.backend}}},
      {"checkpoint",
       {{"every_steps", c.checkpoint.every_steps}, {"keep_last", c.checkpoint.keep_last},
        {"keep_best", c.checkpoint.keep_best}}},
  };
  return j.dump(2);
}

}  // namespace rigtune::train
