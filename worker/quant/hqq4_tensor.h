// Hqq4Tensor: a frozen weight quantized with HQQ (half-quadratic
// quantization) to 4 bits, as the `hqq` package's default 4-bit settings do:
// groups of 64 consecutive elements of the row-major flattened weight (its
// axis=1), a scale and a zero point per group, the zero point first rounded
// and then refined by hqq's proximal solver (lp-norm 0.7, beta 10, at most
// 20 iterations, stopping at the first that does not lower the mean
// absolute error). No calibration data; seconds for a 70B model on a GPU.
//
//   q = clamp(round(w / scale + zero), 0, 15),   w ≈ (q − zero) · scale
//
// See Note [hqq's solver] in hqq4_tensor.cc for the exact steps it mirrors.
// Codes are packed as hqq packs them: the group-major [groups, 64] code
// matrix split into its first and second halves of rows, the first half in
// the high nibble: packed[i, j] = q[i, j] << 4 | q[i + groups/2, j].
//
// Example:
//   ASSIGN_OR_RETURN(Hqq4Tensor w, Hqq4Tensor::Quantize(weight_bf16));
//   RETURN_IF_ERROR(w.DequantizeInto(buffer));
#ifndef RIGTUNE_WORKER_QUANT_HQQ4_TENSOR_H_
#define RIGTUNE_WORKER_QUANT_HQQ4_TENSOR_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace rigtune::quant {

class Hqq4Tensor {
 public:
  static constexpr int64_t kGroupSize = 64;

  // Quantizes a floating-point tensor whose element count is a multiple of
  // 128 (an even number of groups of 64, as hqq's packing needs). On CUDA the
  // solver runs in float16 and on the CPU in float32, as hqq's does; the
  // scale and zero are kept in that dtype's precision, stored as float32.
  // INVALID_ARGUMENT on an empty, non-float or mis-sized tensor.
  static absl::StatusOr<Hqq4Tensor> Quantize(const at::Tensor& weight);
  // Builds from raw parts (FSDP gathers, tests); validates sizes and dtypes.
  static absl::StatusOr<Hqq4Tensor> FromParts(std::vector<int64_t> shape, at::Tensor packed,
                                              at::Tensor scale, at::Tensor zero);

  // out = (q − zero) · scale, in out's dtype (computed in float32). On a CUDA
  // device through kernels/hqq4.h's kernel (`out` contiguous, float32,
  // float16 or bfloat16), on the CPU through ATen ops; both give hqq's bits.
  absl::Status DequantizeInto(at::Tensor& out) const;
  absl::StatusOr<at::Tensor> Dequantize(at::ScalarType dtype) const;
  // The unpacked codes, uint8 [groups, 64] (tests and checkpoints).
  at::Tensor Codes() const;

  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t numel() const;
  int64_t groups() const { return numel() / kGroupSize; }
  at::Device device() const { return packed_.device(); }
  Hqq4Tensor To(at::Device device) const;
  const at::Tensor& packed() const { return packed_; }  // uint8 [groups/2, 64]
  const at::Tensor& scale() const { return scale_; }    // float32 [groups]
  const at::Tensor& zero() const { return zero_; }      // float32 [groups]
  int64_t bytes() const;

  Hqq4Tensor() = default;

 private:
  absl::Status DequantizeCuda(at::Tensor& out) const;

  std::vector<int64_t> shape_;
  at::Tensor packed_;
  at::Tensor scale_;
  at::Tensor zero_;
};

}  // namespace rigtune::quant

#endif  // RIGTUNE_WORKER_QUANT_HQQ4_TENSOR_H_
