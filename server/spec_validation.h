// Validation at the door: a JobSpec either passes every check here or the
// request fails with INVALID_ARGUMENT naming the first bad field, e.g.
//   "spec.lora.r: must be in [1, 1024], got 0"
//   "spec.dataset.path: /etc/passwd is outside the data roots (/srv/data)"
//   "spec.lora.target_modules[0]: 'nonexistent_proj' is not a module of
//    LlamaForCausalLM (its modules: q_proj, ...)"
// and nothing is stored.
#ifndef RIGTUNE_SERVER_SPEC_VALIDATION_H_
#define RIGTUNE_SERVER_SPEC_VALIDATION_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "rigtune/v1/job_service.pb.h"

namespace rigtune::server {

// Folders the daemon may read models and datasets from and write outputs
// to. An empty list leaves that kind of path unrestricted.
struct PathRoots {
  std::vector<std::string> model;
  std::vector<std::string> data;
  std::vector<std::string> output;
};

struct SpecLimits {
  int total_gpus = 0;
  PathRoots roots;
};

absl::Status ValidateJobSpec(const rigtune::v1::JobSpec& spec, const SpecLimits& limits);

// OK when `path` is absolute and, after resolving symlinks and "..", lies in
// one of `roots` (or `roots` is empty). Errors name `field`.
absl::Status CheckUnderRoots(const std::string& field, const std::string& path,
                             const std::vector<std::string>& roots, const std::string& kind);

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_SPEC_VALIDATION_H_
