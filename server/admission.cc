#include "server/admission.h"

#include "absl/strings/str_cat.h"
#include "server/job_file.h"
#include "worker/model/config.h"
#include "worker/plan/fit_advice.h"
#include "worker/train/job_config.h"

namespace rigtune::server {

absl::Status CheckJobFitsMemory(const rigtune::v1::JobSpec& spec, int gpus, double card_gib) {
  const bool capped = spec.dist().has_max_gpu_memory_gib() && spec.dist().max_gpu_memory_gib() > 0;
  if (gpus <= 0 || (!capped && card_gib <= 0)) return absl::OkStatus();
  // The job exactly as its workers will read it.
  JobFileContext context;
  context.output_dir = "/planned";
  absl::StatusOr<train::JobConfig> job =
      train::ParseJobConfig(JobFileJson(spec, context).dump());
  if (!job.ok()) return absl::InvalidArgumentError(absl::StrCat("spec.", job.status().message()));
  absl::StatusOr<model::ModelConfig> model = model::SourceModelConfig(spec.model());
  if (!model.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("spec.model: ", model.status().message()));
  }
  return plan::CheckFits(*model, *job, plan::DeviceForJob(*job, card_gib, gpus));
}

}  // namespace rigtune::server
