#include "worker/train/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/model/safetensors.h"
#include "worker/train/adapter_export.h"
#include "worker/train/checkpoint_manifest.h"

namespace rigtune::train {
namespace {

// Note [libstdc++ before LibTorch]: folders are walked with POSIX calls, not
// std::filesystem (see worker/CMakeLists.txt).

constexpr char kStepPrefix[] = "step-";
constexpr char kTmpSuffix[] = ".tmp";

absl::Status Errno(const std::string& path, const char* what) {
  return absl::InternalError(absl::StrCat(path, ": ", what, ": ", std::strerror(errno)));
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> ListNames(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

// rm -r `path` (symlinks are removed, never followed).
absl::Status RemoveTree(const std::string& path) {
  if (IsDirectory(path)) {
    for (const std::string& name : ListNames(path)) {
      if (auto s = RemoveTree(path + "/" + name); !s.ok()) return s;
    }
    if (::rmdir(path.c_str()) != 0) return Errno(path, "rmdir");
    return absl::OkStatus();
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return Errno(path, "unlink");
  return absl::OkStatus();
}

absl::Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno(dir, "open");
  const int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : Errno(dir, "fsync");
}

std::string StepName(int64_t step) { return absl::StrCat(kStepPrefix, step); }

// The step of a folder named step-<N> (-1 for any other name).
int64_t StepOf(const std::string& name) {
  if (!absl::StartsWith(name, kStepPrefix)) return -1;
  int64_t step = -1;
  if (!absl::SimpleAtoi(name.substr(std::strlen(kStepPrefix)), &step) || step < 0) return -1;
  return StepName(step) == name ? step : -1;
}

absl::StatusOr<std::map<std::string, at::Tensor>> ReadAllTensors(const std::string& path) {
  auto file = model::SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  std::map<std::string, at::Tensor> out;
  for (const std::string& name : file->Names()) {
    auto t = file->Read(name);
    if (!t.ok()) return t.status();
    out[name] = *std::move(t);
  }
  return out;
}

}  // namespace

std::string TrainerState::ToJson() const {
  nlohmann::json j{{"step", step},
                   {"total_steps", total_steps},
                   {"loss", loss},
                   {"world_size", world_size},
                   {"data_positions", data_positions},
                   {"seed", seed},
                   {"job_id", job_id}};
  // JSON has no NaN or infinity: the validation fields appear once known.
  if (std::isfinite(validation_loss)) j["validation_loss"] = validation_loss;
  if (std::isfinite(best_validation_loss)) {
    j["best_validation_loss"] = best_validation_loss;
    j["best_validation_step"] = best_validation_step;
    j["evals_since_best"] = evals_since_best;
  }
  return j.dump(2);
}

absl::StatusOr<TrainerState> TrainerState::FromJson(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("trainer_state.json: not a JSON object");
  }
  TrainerState s;
  try {
    s.step = j.at("step").get<int64_t>();
    s.total_steps = j.at("total_steps").get<int64_t>();
    s.loss = j.at("loss").get<double>();
    s.world_size = j.at("world_size").get<int64_t>();
    s.data_positions = j.at("data_positions").get<std::vector<std::string>>();
    s.seed = j.at("seed").get<uint64_t>();
    s.job_id = j.at("job_id").get<std::string>();
    if (j.contains("validation_loss")) s.validation_loss = j["validation_loss"].get<double>();
    if (j.contains("best_validation_loss")) {
      s.best_validation_loss = j["best_validation_loss"].get<double>();
      s.best_validation_step = j.at("best_validation_step").get<int64_t>();
      s.evals_since_best = j.at("evals_since_best").get<int64_t>();
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("trainer_state.json: ", e.what()));
  }
  if (s.world_size < 1 || static_cast<int64_t>(s.data_positions.size()) != s.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("trainer_state.json: world_size ", s.world_size,
                                                   " with ", s.data_positions.size(),
                                                   " data positions"));
  }
  return s;
}

std::string CheckpointsRoot(const std::string& output_dir) { return output_dir + "/checkpoints"; }

std::string CheckpointFolder(const std::string& output_dir, int64_t step) {
  return CheckpointsRoot(output_dir) + "/" + StepName(step);
}

absl::StatusOr<std::string> WriteCheckpoint(const std::string& output_dir,
                                            const TrainingCheckpoint& checkpoint,
                                            const LoraConfig& lora, const std::string& base_model) {
  const std::string root = CheckpointsRoot(output_dir);
  if (auto s = model::CreateDirectories(root); !s.ok()) return s;
  // What an interrupted write left behind is never read: clear it.
  for (const std::string& name : ListNames(root)) {
    if (absl::EndsWith(name, kTmpSuffix)) {
      if (auto s = RemoveTree(root + "/" + name); !s.ok()) return s;
    }
  }
  const int64_t step = checkpoint.state.step;
  const std::string final_dir = CheckpointFolder(output_dir, step);
  const std::string tmp = final_dir + kTmpSuffix;
  // Each writer below writes a temp file, fsyncs it, renames it and fsyncs `tmp`.
  if (auto s = SaveAdapter(checkpoint.adapter, lora, base_model, tmp); !s.ok()) return s;
  if (auto s = model::WriteSafetensors(tmp + "/" + kOptimizer, checkpoint.optimizer,
                                       {{"format", "pt"}, {"optimizer", "adamw"}});
      !s.ok()) {
    return s;
  }
  if (auto s = model::WriteFileAtomically(tmp + "/" + kTrainerState, checkpoint.state.ToJson());
      !s.ok()) {
    return s;
  }
  auto manifest = MakeManifest(tmp, step, {kAdapter, kAdapterConfig, kOptimizer, kTrainerState});
  if (!manifest.ok()) return manifest.status();
  if (auto s = model::WriteFileAtomically(tmp + "/" + kManifest, *manifest); !s.ok()) return s;
  if (auto s = SyncDirectory(tmp); !s.ok()) return s;
  if (IsDirectory(final_dir)) {
    if (auto s = RemoveTree(final_dir); !s.ok()) return s;
  }
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) return Errno(final_dir, "rename");
  if (auto s = SyncDirectory(root); !s.ok()) return s;
  return final_dir;
}

absl::StatusOr<TrainingCheckpoint> ReadCheckpoint(const std::string& dir) {
  if (auto s = VerifyCheckpoint(dir); !s.ok()) return s;
  TrainingCheckpoint c;
  auto state_text = ReadWholeFile(dir + "/" + kTrainerState);
  if (!state_text.ok()) return state_text.status();
  auto state = TrainerState::FromJson(*state_text);
  if (!state.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", dir, ": ", state.status().message()));
  }
  c.state = *std::move(state);
  auto adapter = ReadAllTensors(dir + "/" + kAdapter);
  if (!adapter.ok()) return adapter.status();
  c.adapter = *std::move(adapter);
  auto optimizer = ReadAllTensors(dir + "/" + kOptimizer);
  if (!optimizer.ok()) return optimizer.status();
  c.optimizer = *std::move(optimizer);
  return c;
}

std::vector<CheckpointEntry> ListCheckpoints(const std::string& output_dir) {
  const std::string root = CheckpointsRoot(output_dir);
  std::vector<CheckpointEntry> out;
  for (const std::string& name : ListNames(root)) {
    const int64_t step = StepOf(name);
    const std::string path = root + "/" + name;
    if (step < 0 || !IsDirectory(path)) continue;
    struct stat st;
    if (::stat((path + "/" + kManifest).c_str(), &st) != 0) continue;
    CheckpointEntry e{step, std::numeric_limits<double>::infinity(), path};
    if (auto text = ReadWholeFile(path + "/" + kTrainerState); text.ok()) {
      if (auto state = TrainerState::FromJson(*text); state.ok()) {
        e.loss = state->loss;
        e.validation_loss = state->validation_loss;
      }
    }
    out.push_back(e);
  }
  std::sort(out.begin(), out.end(),
            [](const CheckpointEntry& a, const CheckpointEntry& b) { return a.step < b.step; });
  return out;
}

absl::Status ApplyRetention(const std::string& output_dir, const CheckpointConfig& config) {
  std::vector<CheckpointEntry> all = ListCheckpoints(output_dir);
  const int64_t keep_last = std::max<int64_t>(1, config.keep_last);
  const int64_t n = static_cast<int64_t>(all.size());
  int64_t best = -1;
  if (config.keep_best) {
    bool validated = false;
    for (const CheckpointEntry& e : all) validated = validated || std::isfinite(e.validation_loss);
    auto key = [&](const CheckpointEntry& e) { return validated ? e.validation_loss : e.loss; };
    for (int64_t i = 0; i < n; ++i) {
      if (validated && !std::isfinite(all[i].validation_loss)) continue;
      if (best < 0 || key(all[i]) < key(all[best])) best = i;
    }
  }
  for (int64_t i = 0; i + keep_last < n; ++i) {
    if (i == best) continue;
    if (auto s = RemoveTree(all[i].path); !s.ok()) return s;
  }
  if (n > keep_last) return SyncDirectory(CheckpointsRoot(output_dir));
  return absl::OkStatus();
}

}  // namespace rigtune::train
