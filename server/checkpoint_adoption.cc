#include "server/checkpoint_adoption.h"

#include <filesystem>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "nlohmann/json.hpp"
#include "worker/train/checkpoint_manifest.h"

namespace rigtune::server {

namespace {

namespace fs = std::filesystem;

constexpr char kStepPrefix[] = "step-";

// N for a folder named step-<N>, else -1.
int64_t StepOf(const fs::path& folder) {
  const std::string name = folder.filename().string();
  int64_t step = -1;
  if (!absl::StartsWith(name, kStepPrefix) ||
      !absl::SimpleAtoi(name.substr(sizeof(kStepPrefix) - 1), &step)) {
    return -1;
  }
  return step;
}

}  // namespace

std::optional<rigtune::v1::Checkpoint> NewerCheckpointOnDisk(const std::string& output_dir,
                                                             const std::string& recorded) {
  const int64_t recorded_step = recorded.empty() ? -1 : StepOf(fs::path(recorded));
  if (!recorded.empty() && recorded_step < 0) return std::nullopt;
  std::map<int64_t, fs::path, std::greater<>> newer;
  std::error_code error;
  for (fs::directory_iterator it(fs::path(output_dir) / "checkpoints", error), end;
       !error && it != end; it.increment(error)) {
    const int64_t step = StepOf(it->path());
    if (step > recorded_step && it->is_directory(error)) newer[step] = it->path();
  }
  for (const auto& [step, path] : newer) {
    if (!train::VerifyCheckpoint(path.string()).ok()) continue;
    rigtune::v1::Checkpoint checkpoint;
    checkpoint.set_step(step);
    checkpoint.set_path(path.string());
    absl::StatusOr<std::string> state = train::ReadWholeFile((path / train::kTrainerState).string());
    if (state.ok()) {
      nlohmann::json json = nlohmann::json::parse(*state, nullptr, false);
      if (json.is_object() && json.contains("loss") && json["loss"].is_number()) {
        checkpoint.set_loss(json["loss"].get<double>());
      }
    }
    return checkpoint;
  }
  return std::nullopt;
}

}  // namespace rigtune::server
