#include "worker/train/fused_adamw.h"

#include <ATen/ATen.h>

#include <optional>
#include <stdexcept>
#include <string>

#ifdef RIGTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace rigtune::train {
namespace {

#ifdef RIGTUNE_WITH_CUDA
bool Fusable(const at::Tensor& t, const at::Device& device) {
  return t.defined() && t.is_cuda() && t.device() == device && t.scalar_type() == at::kFloat &&
         t.is_contiguous();
}

void Check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(what) + " (CUDA): " + cudaGetErrorString(err));
  }
}

// The device of the first defined tensor, or nullopt when none is defined.
std::optional<at::Device> FirstDevice(const std::vector<at::Tensor>& tensors) {
  for (const at::Tensor& t : tensors) {
    if (t.defined()) return t.device();
  }
  return std::nullopt;
}
#endif  // RIGTUNE_WITH_CUDA

}  // namespace

bool CanFuseAdamW(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                  const std::vector<at::Tensor>& exp_avg,
                  const std::vector<at::Tensor>& exp_avg_sq) {
#ifdef RIGTUNE_WITH_CUDA
  if (params.size() != grads.size() || params.size() != exp_avg.size() ||
      params.size() != exp_avg_sq.size()) {
    return false;
  }
  const std::optional<at::Device> device = FirstDevice(grads);
  if (!device || !device->is_cuda()) return false;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!grads[i].defined()) continue;
    for (const at::Tensor* t : {&params[i], &grads[i], &exp_avg[i], &exp_avg_sq[i]}) {
      if (!Fusable(*t, *device) || t->numel() != params[i].numel()) return false;
    }
  }
  return true;
#else
  (void)params, (void)grads, (void)exp_avg, (void)exp_avg_sq;
  return false;
#endif
}

void FusedAdamWStep(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                    const std::vector<at::Tensor>& exp_avg,
                    const std::vector<at::Tensor>& exp_avg_sq, const kernels::AdamWScalars& s) {
#ifdef RIGTUNE_WITH_CUDA
  std::vector<kernels::AdamWTensor> table;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!grads[i].defined() || params[i].numel() == 0) continue;
    table.push_back({params[i].data_ptr<float>(), grads[i].data_ptr<float>(),
                     exp_avg[i].data_ptr<float>(), exp_avg_sq[i].data_ptr<float>(),
                     params[i].numel()});
  }
  if (table.empty()) return;
  const at::Device device = *FirstDevice(grads);
  const c10::cuda::CUDAGuard guard(device);
  // Scratch from the caching allocator on the current stream: freed (for
  // reuse by later work on this stream) once the kernel has read it.
  at::Tensor scratch =
      at::empty({static_cast<int64_t>(kernels::AdamWScratchBytes(table.size()))},
                at::TensorOptions().dtype(at::kByte).device(device));
  Check(kernels::AdamWCuda(table.data(), static_cast<int64_t>(table.size()), s,
                           scratch.data_ptr(), at::cuda::getCurrentCUDAStream().stream()),
        "FusedAdamWStep");
#else
  (void)params, (void)grads, (void)exp_avg, (void)exp_avg_sq, (void)s;
  throw std::logic_error("FusedAdamWStep: this build has no CUDA support");
#endif
}

std::optional<double> FusedSumOfSquares(const std::vector<at::Tensor>& tensors) {
#ifdef RIGTUNE_WITH_CUDA
  const std::optional<at::Device> device = FirstDevice(tensors);
  if (!device || !device->is_cuda()) return std::nullopt;
  std::vector<kernels::FloatSpan> spans;
  for (const at::Tensor& t : tensors) {
    if (!t.defined()) continue;
    if (!Fusable(t, *device)) return std::nullopt;
    if (t.numel() > 0) spans.push_back({t.data_ptr<float>(), t.numel()});
  }
  const c10::cuda::CUDAGuard guard(*device);
  const auto count = static_cast<int64_t>(spans.size());
  const auto options = at::TensorOptions().device(*device);
  at::Tensor scratch = at::empty(
      {static_cast<int64_t>(kernels::SumOfSquaresScratchBytes(spans.data(), count))},
      options.dtype(at::kByte));
  at::Tensor result = at::empty({}, options.dtype(at::kDouble));
  Check(kernels::SumOfSquaresCuda(spans.data(), count, scratch.data_ptr(),
                                  result.data_ptr<double>(),
                                  at::cuda::getCurrentCUDAStream().stream()),
        "FusedSumOfSquares");
  return result.item<double>();
#else
  (void)tensors;
  return std::nullopt;
#endif
}

}  // namespace rigtune::train
