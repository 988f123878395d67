// Admission by memory: a job that the memory planner (worker/plan) says
// cannot fit its GPUs is refused at submission with the planner's one-line
// message, which names the need, the capacity and the settings that would
// fit. Nothing is stored.
//
// The capacity is the job's dist.max_gpu_memory_gib when set, else the
// daemon's --gpu-memory-gib (the size of each managed card, less 2 GiB for
// the CUDA context); with neither, or for a CPU job, every job is admitted.
//
//   INVALID_ARGUMENT: "does not fit: needs 59.71 GiB per GPU, 22.00 GiB
//   available (a 24 GiB card less 2 GiB for the CUDA context): frozen
//   weights 33.87 + ...; would fit: dist.activation_offload=true ..."
#ifndef RIGTUNE_SERVER_ADMISSION_H_
#define RIGTUNE_SERVER_ADMISSION_H_

#include "absl/status/status.h"
#include "rigtune/v1/job_service.pb.h"

namespace rigtune::server {

// `gpus`: the ranks the job will run (0 = a CPU job); `card_gib`: the
// daemon's --gpu-memory-gib (0 = unknown). Call after ValidateJobSpec.
absl::Status CheckJobFitsMemory(const rigtune::v1::JobSpec& spec, int gpus, double card_gib);

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_ADMISSION_H_
