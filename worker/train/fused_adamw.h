// The multi-tensor AdamW and gradient-norm kernels (kernels/adamw.h) glued
// to ATen tensors: one launch updates every parameter the optimizer holds,
// and one reduction (plus a tiny final pass) gives the squared global norm.
//
// Used by AdamW::Step and GlobalGradNorm when every tensor is float32,
// contiguous and on one CUDA device; elsewhere (the CPU engine, host-offloaded
// optimizer state) they keep the ATen reference path, which
// tests/worker/train/fused_adamw_test.cc pins against the kernels' CPU twin
// and tests/gpu/adamw_cuda_test.cc the CUDA kernels against the twin.
#ifndef RIGTUNE_WORKER_TRAIN_FUSED_ADAMW_H_
#define RIGTUNE_WORKER_TRAIN_FUSED_ADAMW_H_

#include <ATen/core/Tensor.h>

#include <optional>
#include <vector>

#include "kernels/adamw.h"

namespace rigtune::train {

// Whether FusedAdamWStep takes these (same length, parallel lists; entries
// whose gradient is undefined are skipped): a CUDA build, and every defined
// entry float32, contiguous, same shape across the four lists, one device.
bool CanFuseAdamW(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                  const std::vector<at::Tensor>& exp_avg,
                  const std::vector<at::Tensor>& exp_avg_sq);

// One AdamW update of every entry with a defined gradient, queued on the
// device's current stream. Requires CanFuseAdamW.
void FusedAdamWStep(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                    const std::vector<at::Tensor>& exp_avg,
                    const std::vector<at::Tensor>& exp_avg_sq, const kernels::AdamWScalars& s);

// Σ x² over the defined `tensors`, in double, when they are all float32,
// contiguous and on one CUDA device (waits for the result); nullopt
// otherwise, for the caller's reference path.
std::optional<double> FusedSumOfSquares(const std::vector<at::Tensor>& tensors);

}  // namespace rigtune::train

#endif  // RIGTUNE_WORKER_TRAIN_FUSED_ADAMW_H_
