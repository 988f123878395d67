// Reading a job file for `rigtune submit`: YAML or JSON holding a
// rigtune.v1.JobSpec (field names as in the .proto), then overrides from the
// command line ("train.max_steps=50", "lora.r=16", "labels.team=nlp").
// Relative model, dataset and output paths are made absolute: against the
// job file's folder for the file's values, the current folder for flags.
#ifndef RIGTUNE_CLIENT_JOB_FILE_H_
#define RIGTUNE_CLIENT_JOB_FILE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "rigtune/v1/job_service.pb.h"

namespace rigtune::client {

// The job file as JSON ("" or "-": an empty spec). Errors name the file.
absl::StatusOr<nlohmann::json> LoadJobFile(const std::string& path);

// Applies "dotted.key=value" overrides; value is parsed as JSON when it can
// be (numbers, true/false, lists) and taken as a string otherwise.
absl::Status ApplyOverrides(const std::vector<std::string>& overrides, nlohmann::json& spec);

// Resolves relative model/dataset/output paths against `base_dir`.
void AbsolutizePaths(nlohmann::json& spec, const std::string& base_dir);

// The JSON as a JobSpec; unknown fields are errors naming them.
absl::StatusOr<rigtune::v1::JobSpec> ToJobSpec(const nlohmann::json& spec);

}  // namespace rigtune::client

#endif  // RIGTUNE_CLIENT_JOB_FILE_H_
