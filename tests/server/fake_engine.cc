// A stand-in engine for service tests: LoadJobConfig and RunJob with the
// real signatures (worker/train/job_config.h, run_job.h), linked with the
// real worker/main.cc into `fake-rigtune-worker`. It "trains" by sleeping,
// writes checkpoints in the engine's folder layout, resumes from them and
// honours should_stop, so the daemon, the CLI and the worker's coordinator
// link are exercised end to end without LibTorch.
//
// Knobs (environment, inherited from the daemon):
//   RIGTUNE_FAKE_STEP_MS        sleep per step (default 30)
//   RIGTUNE_FAKE_CRASH_AT_STEP  exit(3) on reaching that step, once per output_dir
//   RIGTUNE_FAKE_FAIL           RunJob returns an error at step 2 (INTERNAL, which a
//                               relaunch may fix); "bad_data": FAILED_PRECONDITION
//                               "dataset too small" before the first step
// With train.eval_every_steps = N it reports a validation loss of 4 / step
// every N steps.
// MergeAdapter (the worker's `merge` command) is not part of what it stands in for.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "worker/train/checkpoint_manifest.h"
#include "worker/train/job_config.h"
#include "worker/train/merge.h"
#include "worker/train/run_job.h"

namespace rigtune::train {

namespace {

namespace fs = std::filesystem;

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* value = std::getenv(name);
  int64_t parsed = 0;
  return value != nullptr && absl::SimpleAtoi(value, &parsed) ? parsed : fallback;
}

// A checkpoint folder in the engine's layout (worker/train/checkpoint.h),
// with stand-in data files and a real manifest, so that rigtuned's check of
// unrecorded checkpoints (server/checkpoint_adoption.h) sees what it would
// see from the real engine.
void WriteCheckpoint(const std::string& output_dir, int64_t step, const RunCallbacks& callbacks,
                     double loss) {
  const fs::path dir = fs::path(output_dir) / "checkpoints" / absl::StrCat("step-", step);
  std::error_code error;
  fs::create_directories(dir, error);
  for (const char* name : {kAdapter, kAdapterConfig, kOptimizer}) {
    std::ofstream(dir / name) << name << " of step " << step;
  }
  std::ofstream(dir / kTrainerState) << nlohmann::json{{"step", step}, {"loss", loss}}.dump();
  absl::StatusOr<std::string> manifest =
      MakeManifest(dir.string(), step, {kAdapter, kAdapterConfig, kOptimizer, kTrainerState});
  if (manifest.ok()) std::ofstream(dir / kManifest) << *manifest;
  if (callbacks.on_checkpoint) callbacks.on_checkpoint({step, dir.string(), loss});
}

}  // namespace

absl::StatusOr<JobConfig> LoadJobConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json json = nlohmann::json::parse(text.str(), nullptr, false);
  if (json.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not JSON"));
  JobConfig config;
  config.job_id = json.value("job_id", "");
  config.model = json.value("model", "");
  config.output_dir = json.value("output_dir", "");
  config.resume_from = json.value("resume_from", "");
  if (json.contains("train")) {
    config.train.max_steps = json["train"].value("max_steps", 0);
    config.train.eval_every_steps = json["train"].value("eval_every_steps", 0);
  }
  if (json.contains("checkpoint")) {
    config.checkpoint.every_steps = json["checkpoint"].value("every_steps", 0);
  }
  return config;
}

absl::StatusOr<RunResult> RunJob(const JobConfig& config, const RunCallbacks& callbacks) {
  const int64_t total = config.train.max_steps > 0 ? config.train.max_steps : 10;
  const int64_t step_ms = EnvInt("RIGTUNE_FAKE_STEP_MS", 30);
  const int64_t crash_at = EnvInt("RIGTUNE_FAKE_CRASH_AT_STEP", -1);
  const bool rank0 = EnvInt("RANK", 0) == 0;
  int64_t start = 0;
  if (!config.resume_from.empty()) {
    if (absl::Status s = VerifyCheckpoint(config.resume_from); !s.ok()) return s;
    absl::StatusOr<std::string> state = ReadWholeFile(config.resume_from + "/" + kTrainerState);
    nlohmann::json json = nlohmann::json::parse(state.value_or(""), nullptr, false);
    if (!json.is_object() || !json.contains("step")) {
      return absl::DataLossError(absl::StrCat("checkpoint ", config.resume_from, " unreadable"));
    }
    start = json["step"].get<int64_t>();
  }
  if (callbacks.on_log) {
    callbacks.on_log(absl::StrCat("fake engine: steps ", start + 1, "..", total, " of ",
                                  config.model));
  }
  const char* fail = std::getenv("RIGTUNE_FAKE_FAIL");
  if (fail != nullptr && std::string(fail) == "bad_data") {
    return absl::FailedPreconditionError(
        "dataset too small: 0 rows cannot fill one global batch of 1 rows");
  }
  RunResult result;
  double loss = 3.0;
  for (int64_t step = start + 1; step <= total; ++step) {
    if (callbacks.should_stop && callbacks.should_stop()) {
      if (rank0 && step - 1 > start) {
        WriteCheckpoint(config.output_dir, step - 1, callbacks, loss);
      }
      result.stopped_early = true;
      break;
    }
    if (step == crash_at) {
      const fs::path marker = fs::path(config.output_dir) / absl::StrCat(".crashed-rank", EnvInt("RANK", 0));
      std::error_code error;
      if (!fs::exists(marker, error)) {
        fs::create_directories(config.output_dir, error);
        std::ofstream(marker) << "crashed";
        _exit(3);
      }
    }
    if (fail != nullptr && step == 2) {
      return absl::InternalError("fake engine: asked to fail at step 2");
    }
    absl::SleepFor(absl::Milliseconds(step_ms));
    loss = 3.0 / static_cast<double>(step);
    StepMetrics metrics;
    metrics.step = step;
    metrics.total_steps = total;
    metrics.loss = loss;
    metrics.learning_rate = 2e-4;
    metrics.tokens = 128;
    metrics.tokens_per_second = 128.0 * 1000 / static_cast<double>(step_ms + 1);
    metrics.step_seconds = static_cast<double>(step_ms) / 1000;
    if (callbacks.on_step) callbacks.on_step(metrics);
    const int64_t every = config.train.eval_every_steps;
    if (every > 0 && step % every == 0 && callbacks.on_validation) {
      callbacks.on_validation({step, 4.0 / static_cast<double>(step), 0, 64});
    }
    result.steps = step;
    result.tokens_trained += 128;
    if (rank0 && config.checkpoint.every_steps > 0 && step % config.checkpoint.every_steps == 0) {
      WriteCheckpoint(config.output_dir, step, callbacks, loss);
    }
  }
  result.final_loss = loss;
  if (!result.stopped_early) {
    result.adapter_path = absl::StrCat(config.output_dir, "/adapter");
    std::error_code error;
    fs::create_directories(result.adapter_path, error);
    std::ofstream(fs::path(result.adapter_path) / "adapter_config.json") << "{}";
  }
  return result;
}

// worker/main.cc also offers `merge`; the stand-in has no weights to merge.
absl::Status MergeAdapter(const MergeOptions& options) {
  return absl::FailedPreconditionError("the stand-in engine cannot merge adapters");
}

}  // namespace rigtune::train
