#include "worker/train/checkpointer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <functional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/train/adapter_export.h"
#include "worker/train/checkpoint.h"

namespace rigtune::train {
namespace {

using TensorMap = std::map<std::string, at::Tensor>;

// Calls fn(layer, proj, part, index) for every adapter tensor of `m`,
// `index` being its place in LlamaModel::LoraParameters() (and so in the
// AdamW the single-process Trainer builds from them).
void ForEachLora(const model::LlamaModel& m,
                 const std::function<void(int64_t, int, lora::AdapterPart, size_t)>& fn) {
  size_t index = 0;
  for (int64_t i = 0; i < static_cast<int64_t>(m.layers.size()); ++i) {
    for (int p = 0; p < model::kNumProj; ++p) {
      for (lora::AdapterPart part : lora::AdapterParts(m.layers[i].proj[p].spec())) {
        fn(i, p, part, index++);
      }
    }
  }
}

at::Tensor ToCpu(const at::Tensor& t) { return t.detach().to(at::kCPU, at::kFloat).contiguous(); }

// The single-process model's moments by PEFT key + suffix.
TensorMap MomentsOf(const model::LlamaModel& m, AdamW& opt) {
  TensorMap out;
  ForEachLora(m, [&](int64_t i, int p, lora::AdapterPart part, size_t k) {
    const std::string key = PeftKey(i, p, part, m.config.fused_projections);
    out[key + dist::FsdpLayers::kExpAvgSuffix] = ToCpu(opt.exp_avg()[k]);
    out[key + dist::FsdpLayers::kExpAvgSqSuffix] = ToCpu(opt.exp_avg_sq()[k]);
  });
  return out;
}

absl::Status CopyInto(const TensorMap& from, const std::string& key, at::Tensor& dst) {
  auto it = from.find(key);
  if (it == from.end()) return absl::InvalidArgumentError(absl::StrCat(key, ": missing"));
  if (it->second.sizes() != dst.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat(key, " has shape ", c10::str(it->second.sizes()),
                                                   ", the model expects ", c10::str(dst.sizes()),
                                                   " (was it trained with another lora.r?)"));
  }
  dst.copy_(it->second);
  return absl::OkStatus();
}

// The single-process inverse of AdapterTensors + MomentsOf.
absl::Status LoadIntoModel(const TrainingCheckpoint& c, model::LlamaModel& m, AdamW& opt) {
  absl::Status status;
  ForEachLora(m, [&](int64_t i, int p, lora::AdapterPart part, size_t k) {
    if (!status.ok()) return;
    const std::string key = PeftKey(i, p, part, m.config.fused_projections);
    status = CopyInto(c.adapter, key, m.layers[i].proj[p].adapter(part));
    if (status.ok()) {
      status = CopyInto(c.optimizer, key + dist::FsdpLayers::kExpAvgSuffix, opt.exp_avg()[k]);
    }
    if (status.ok()) {
      status = CopyInto(c.optimizer, key + dist::FsdpLayers::kExpAvgSqSuffix, opt.exp_avg_sq()[k]);
    }
  });
  return status;
}

// train.method full: the masters by Hugging Face name, and their moments.
absl::Status LoadFullState(const TrainingCheckpoint& c, FullModelLayers& full, AdamW& opt) {
  if (auto s = full.LoadMasterState(c.adapter); !s.ok()) return s;
  const std::vector<NamedTensor>& tensors = full.tensors();
  for (size_t k = 0; k < tensors.size(); ++k) {
    const std::string& name = tensors[k].name;
    if (auto s = CopyInto(c.optimizer, name + dist::FsdpLayers::kExpAvgSuffix, opt.exp_avg()[k]);
        !s.ok()) {
      return s;
    }
    if (auto s =
            CopyInto(c.optimizer, name + dist::FsdpLayers::kExpAvgSqSuffix, opt.exp_avg_sq()[k]);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status InDir(const std::string& dir, const absl::Status& s) {
  if (s.ok() || absl::StrContains(s.message(), dir)) return s;
  return absl::Status(s.code(), absl::StrCat("checkpoint ", dir, ": ", s.message()));
}

}  // namespace

absl::Status Checkpointer::Resume(const std::string& dir) {
  auto c = ReadCheckpoint(dir);
  if (!c.ok()) return InDir(dir, c.status());
  c10::NoGradGuard no_grad;
  AdamW& opt = parts_.trainer->optimizer();
  absl::Status loaded;
  if (parts_.full != nullptr) {
    loaded = LoadFullState(*c, *parts_.full, opt);
  } else if (parts_.fsdp != nullptr) {
    TensorMap state = c->adapter;
    state.insert(c->optimizer.begin(), c->optimizer.end());
    loaded = parts_.fsdp->LoadTrainableState(state, opt.exp_avg(), opt.exp_avg_sq());
  } else {
    loaded = LoadIntoModel(*c, *parts_.model, opt);
  }
  if (!loaded.ok()) return InDir(dir, loaded);
  opt.set_step(c->state.step);
  // Both batch sources keep a global position (the same on every rank), so
  // under another world size rank 0's is the one to continue from.
  const bool same_world = c->state.world_size == parts_.world_size;
  const std::string& position = c->state.data_positions[same_world ? parts_.rank : 0];
  if (auto s = parts_.data->Restore(position); !s.ok()) return InDir(dir, s);
  if (parts_.validation != nullptr) {
    parts_.validation->best = c->state.best_validation_loss;
    parts_.validation->best_step = c->state.best_validation_step;
    parts_.validation->evals_since_best = c->state.evals_since_best;
  }
  saved_step_ = c->state.step;
  return absl::OkStatus();
}

bool Checkpointer::Due() const {
  const int64_t every = config_.checkpoint.every_steps;
  const int64_t step = parts_.trainer->steps_done();
  return every > 0 && step > 0 && step % every == 0;
}

absl::StatusOr<std::vector<std::string>> Checkpointer::GatherPositions() {
  const std::string mine = parts_.data->Position();
  if (parts_.comm == nullptr || parts_.world_size == 1) return std::vector<std::string>{mine};
  const int64_t world = parts_.world_size;
  const auto on_device = at::TensorOptions().device(parts_.device);
  at::Tensor lengths = at::zeros({world}, at::kLong);
  lengths[parts_.rank] = static_cast<int64_t>(mine.size());
  lengths = lengths.to(on_device);
  if (auto s = parts_.comm->AllReduceSum(lengths); !s.ok()) return s;
  lengths = lengths.to(at::kCPU);
  const int64_t width = std::max<int64_t>(1, lengths.max().item<int64_t>());
  at::Tensor bytes = at::zeros({width}, at::kByte);
  std::copy(mine.begin(), mine.end(), bytes.data_ptr<uint8_t>());
  at::Tensor all = at::empty({world * width}, on_device.dtype(at::kByte));
  if (auto s = parts_.comm->AllGather(all, bytes.to(on_device)).Wait(); !s.ok()) return s;
  all = all.to(at::kCPU);
  std::vector<std::string> out;
  for (int64_t r = 0; r < world; ++r) {
    const char* p = reinterpret_cast<const char*>(all.data_ptr<uint8_t>()) + r * width;
    out.emplace_back(p, static_cast<size_t>(lengths[r].item<int64_t>()));
  }
  return out;
}

absl::StatusOr<std::optional<CheckpointInfo>> Checkpointer::Save(double loss) {
  const int64_t step = parts_.trainer->steps_done();
  if (step == 0 || step == saved_step_) return std::nullopt;
  c10::NoGradGuard no_grad;
  AdamW& opt = parts_.trainer->optimizer();
  TrainingCheckpoint c;
  if (parts_.full != nullptr) {
    c.adapter = parts_.full->MasterState();
    const std::vector<NamedTensor>& tensors = parts_.full->tensors();
    for (size_t k = 0; k < tensors.size(); ++k) {
      c.optimizer[tensors[k].name + dist::FsdpLayers::kExpAvgSuffix] = ToCpu(opt.exp_avg()[k]);
      c.optimizer[tensors[k].name + dist::FsdpLayers::kExpAvgSqSuffix] =
          ToCpu(opt.exp_avg_sq()[k]);
    }
  } else if (parts_.fsdp != nullptr) {
    auto state = parts_.fsdp->GatherTrainableState(opt.exp_avg(), opt.exp_avg_sq());
    if (!state.ok()) return state.status();
    for (auto& [key, t] : *state) {
      const bool moment = absl::EndsWith(key, dist::FsdpLayers::kExpAvgSuffix) ||
                          absl::EndsWith(key, dist::FsdpLayers::kExpAvgSqSuffix);
      (moment ? c.optimizer : c.adapter)[key] = std::move(t);
    }
  } else {
    c.adapter = AdapterTensors(*parts_.model);
    c.optimizer = MomentsOf(*parts_.model, opt);
  }
  auto positions = GatherPositions();
  if (!positions.ok()) return positions.status();
  c.state.step = step;
  c.state.total_steps = total_steps_;
  c.state.loss = loss;
  c.state.world_size = parts_.world_size;
  c.state.data_positions = *std::move(positions);
  c.state.seed = config_.train.seed;
  c.state.job_id = config_.job_id;
  if (parts_.validation != nullptr) {
    c.state.best_validation_loss = parts_.validation->best;
    c.state.best_validation_step = parts_.validation->best_step;
    c.state.evals_since_best = parts_.validation->evals_since_best;
  }
  if (parts_.last_validation != nullptr && parts_.last_validation->step == step) {
    c.state.validation_loss = parts_.last_validation->loss;
  }

  CheckpointInfo info{step, CheckpointFolder(config_.output_dir, step), loss};
  absl::Status written;
  if (parts_.rank == 0) {
    auto path = WriteCheckpoint(config_.output_dir, c, config_.lora, config_.model);
    written = path.ok() ? ApplyRetention(config_.output_dir, config_.checkpoint) : path.status();
  }
  if (parts_.comm != nullptr && parts_.world_size > 1) {
    // Every rank learns whether rank 0 managed, so that all fail together.
    at::Tensor ok = at::full({1}, written.ok() ? 1 : 0, at::kInt).to(parts_.device);
    if (auto s = parts_.comm->Broadcast(ok, 0); !s.ok()) return s;
    if (parts_.rank != 0 && ok.to(at::kCPU).item<int>() == 0) {
      return absl::InternalError(
          absl::StrCat("rank 0 could not write checkpoint ", info.path, " (see its log)"));
    }
  }
  if (!written.ok()) return written;
  saved_step_ = step;
  return info;
}

}  // namespace rigtune::train
