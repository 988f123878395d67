// Adopting checkpoints that a worker wrote but rigtuned never recorded.
//
// A worker records a checkpoint in two steps: it writes the folder, then
// reports it (WorkerService) and the daemon stores it as the job's
// resume_from. A daemon killed between the two (kill -9, power loss; and the
// checkpoint every worker writes on its way out after its parent died) left
// a newer checkpoint on disk than the store knows. On start, rigtuned looks
// in the job's <output_dir>/checkpoints/ for step-<N> folders newer than the
// recorded one and adopts the newest whose manifest verifies
// (worker/train/checkpoint_manifest.h), so the steps in between are not
// trained (and reported) twice. A damaged folder is passed over.
#ifndef RIGTUNE_SERVER_CHECKPOINT_ADOPTION_H_
#define RIGTUNE_SERVER_CHECKPOINT_ADOPTION_H_

#include <optional>
#include <string>

#include "rigtune/v1/job_service.pb.h"

namespace rigtune::server {

// The newest verified checkpoint under <output_dir>/checkpoints with a step
// above that of `recorded` (a step-<N> folder; empty: none recorded), with
// its step and loss (from trainer_state.json) filled in. nullopt when there
// is none, or when `recorded` is not a step-<N> folder (nothing to compare).
std::optional<rigtune::v1::Checkpoint> NewerCheckpointOnDisk(const std::string& output_dir,
                                                             const std::string& recorded);

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_CHECKPOINT_ADOPTION_H_
