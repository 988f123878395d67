// `rigtune plan job.yaml`: what the job needs on each GPU and in host
// memory, from the model's config.json (read here) or its random: shape and
// the job's settings, without a daemon and without running anything. The
// numbers are the worker's first log line and the daemon's admission check
// (worker/plan).
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "client/commands.h"
#include "client/job_file.h"
#include "worker/model/config.h"
#include "worker/plan/fit_advice.h"
#include "worker/plan/plan_report.h"
#include "worker/train/job_config.h"

namespace rigtune::client {
namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "rigtune plan: %s\n", message.c_str());
  return kExitUsage;
}

// The job file as its workers will read it: the spec without the
// scheduling fields (worker/train/job_config.h).
absl::StatusOr<train::JobConfig> WorkerJob(nlohmann::json spec) {
  for (const char* scheduling : {"gpus", "priority", "labels", "max_restarts"}) {
    spec.erase(scheduling);
  }
  if (!spec.contains("output_dir")) spec["output_dir"] = "/planned";
  return train::ParseJobConfig(spec.dump());
}

}  // namespace

int Plan(const PlanOptions& options, bool json) {
  absl::StatusOr<nlohmann::json> spec_json = BuildSpecJson(options.job);
  if (!spec_json.ok()) return Fail(std::string(spec_json.status().message()));
  absl::StatusOr<rigtune::v1::JobSpec> spec = ToJobSpec(*spec_json);
  if (!spec.ok()) return Fail(std::string(spec.status().message()));
  absl::StatusOr<train::JobConfig> job = WorkerJob(*spec_json);
  if (!job.ok()) return Fail(std::string(job.status().message()));
  absl::StatusOr<model::ModelConfig> model = model::SourceModelConfig(job->model);
  if (!model.ok()) return Fail(absl::StrCat("model: ", model.status().message()));

  const int gpus = spec->has_gpus() && spec->gpus() > 0 ? spec->gpus() : 1;
  const plan::PlanDevice device = plan::DeviceForJob(*job, options.gpu_memory_gib, gpus);
  const plan::MemoryPlan memory = plan::PlanMemory(*model, *job, device);
  const std::vector<plan::FitOption> fits = plan::SuggestFits(*model, *job, device);
  if (json) {
    nlohmann::json out = plan::PlanJson(memory, fits);
    out["model"] = job->model;
    std::printf("%s\n", out.dump().c_str());
  } else {
    const std::string ranks =
        gpus > 1 ? absl::StrCat(gpus, " GPUs, ", job->dist.sharding) : std::string("1 GPU");
    // What trains: the adapter's rank, or the method when weights train.
    const std::string& method = job->train.method;
    const std::string trains =
        method == "full" || method == "llama_pro"
            ? absl::StrCat(job->train.base, " ", method)
            : absl::StrCat(job->train.base, " ", method, " r=", job->lora.r);
    std::printf("%s: batch %lld x %lld tokens, %s, %s%s%s%s\n%s", job->model.c_str(),
                static_cast<long long>(job->train.batch_size),
                static_cast<long long>(job->train.context_length), trains.c_str(), ranks.c_str(),
                job->dist.cpu_offload ? ", cpu_offload" : "",
                job->dist.activation_offload ? ", activation_offload" : "",
                job->dist.offload_optimizer ? ", offload_optimizer" : "",
                plan::PlanText(memory, fits).c_str());
  }
  std::fflush(stdout);
  return memory.fits() ? kExitOk : kExitError;
}

}  // namespace rigtune::client
