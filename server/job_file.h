// The worker's job file: the JSON form of worker/train/job_config.h that
// every rank reads (`rigtune-worker --job job.json`).
//
// JobSpec's job-file fields (numbers below 16) carry JobConfig's names, so
// the file is the spec's set fields, as plain JSON numbers, strings and
// bools, plus what the coordinator decides: job_id, output_dir, resume_from
// and, for a CPU job, train.device = "cpu". Unset fields are left out so the
// worker's defaults apply.
#ifndef RIGTUNE_SERVER_JOB_FILE_H_
#define RIGTUNE_SERVER_JOB_FILE_H_

#include <string>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "rigtune/v1/job_service.pb.h"

namespace rigtune::server {

struct JobFileContext {
  std::string job_id;
  std::string output_dir;
  std::string resume_from;  // empty: fresh start
  bool cpu_only = false;
};

nlohmann::json JobFileJson(const rigtune::v1::JobSpec& spec, const JobFileContext& context);

// Writes `contents` to `path` durably: a temp file in the same folder,
// fsync, rename, fsync of the folder. Readers see the old file or the new
// one, never a torn one.
absl::Status WriteFileAtomically(const std::string& path, const std::string& contents);

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_JOB_FILE_H_
