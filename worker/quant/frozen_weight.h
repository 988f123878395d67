// FrozenWeight: the frozen base weight of a linear layer, in whichever
// format the job chose for its base (`train.base` in the job file).
//
//   nf4   bitsandbytes NF4 (4 bits + block constants), see Nf4Tensor
//   hqq4  HQQ 4-bit (groups of 64, a scale and zero each), see Hqq4Tensor
//   bf16  no quantization: the weight as a dense tensor in the compute dtype
//         (bf16 on GPUs; whatever train.dtype says, e.g. fp32 on the CPU)
//
// Layers ask only for the weight in the compute dtype and never branch on
// the format (a dense base in that dtype is used as it is, anything else is
// dequantized into a reused workspace), so a new base format is one more case here, in the
// FSDP layout (worker/dist/layer_layout.cc) and in the memory planner.
//
// Example:
//   ASSIGN_OR_RETURN(FrozenWeight w, FrozenWeight::Make(weight, BaseFormat::kBf16, at::kFloat));
//   RETURN_IF_ERROR(w.DequantizeInto(buffer));
#ifndef RIGTUNE_WORKER_QUANT_FROZEN_WEIGHT_H_
#define RIGTUNE_WORKER_QUANT_FROZEN_WEIGHT_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/quant/hqq4_tensor.h"
#include "worker/quant/nf4_tensor.h"

namespace rigtune::quant {

enum class BaseFormat { kNf4, kBf16, kHqq4 };

// "nf4" | "bf16" | "hqq4". The job-file spelling of a format.
const char* BaseFormatName(BaseFormat format);
// The inverse; INVALID_ARGUMENT naming `field` and listing the formats.
absl::StatusOr<BaseFormat> ParseBaseFormat(absl::string_view name,
                                           absl::string_view field = "train.base");
// Every supported spelling, for help texts and error messages.
std::vector<std::string> BaseFormatNames();

class FrozenWeight {
 public:
  FrozenWeight() = default;
  // An NF4 base (implicit: loaders and FSDP gathers hand in Nf4Tensors).
  FrozenWeight(Nf4Tensor nf4);  // NOLINT(google-explicit-constructor)
  explicit FrozenWeight(Hqq4Tensor hqq4);
  // A dense base: `weight` [out, in], kept as it is (a view is fine: FSDP
  // hands in views of a gathered buffer).
  static FrozenWeight Dense(at::Tensor weight);
  // `weight` in `format`: quantized (nf4, hqq4) or cast to `dense_dtype` (bf16).
  static absl::StatusOr<FrozenWeight> Make(const at::Tensor& weight, BaseFormat format,
                                           at::ScalarType dense_dtype);

  BaseFormat format() const { return format_; }
  bool is_dense() const { return format_ == BaseFormat::kBf16; }
  std::vector<int64_t> shape() const;
  int64_t numel() const;
  at::Device device() const;
  int64_t bytes() const;  // on-device footprint
  // NF4 only: whether absmax is double-quantized, and its mean offset
  // (false and 0 for a dense base).
  bool double_quant() const { return format_ == BaseFormat::kNf4 && nf4_.double_quant(); }
  float nested_offset() const { return format_ == BaseFormat::kNf4 ? nf4_.nested_offset() : 0.f; }

  const Nf4Tensor& nf4() const { return nf4_; }    // valid when format() == kNf4
  const Hqq4Tensor& hqq4() const { return hqq4_; }  // valid when format() == kHqq4
  const at::Tensor& dense() const { return dense_; }  // valid when is_dense()

  // Writes the weight into `out` (shape()-many elements, a float dtype).
  absl::Status DequantizeInto(at::Tensor& out) const;
  // A fresh tensor of `dtype` holding the weight.
  absl::StatusOr<at::Tensor> Dequantize(at::ScalarType dtype) const;
  FrozenWeight To(at::Device device) const;

 private:
  BaseFormat format_ = BaseFormat::kNf4;
  Nf4Tensor nf4_;
  Hqq4Tensor hqq4_;
  at::Tensor dense_;
};

}  // namespace rigtune::quant

#endif  // RIGTUNE_WORKER_QUANT_FROZEN_WEIGHT_H_
