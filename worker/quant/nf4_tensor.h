// Nf4Tensor: a frozen weight stored in bitsandbytes' NF4 layout.
//
// Packed 4-bit codes (two per byte, first element in the high nibble), one
// float32 absmax per 64-element block, optionally double-quantized: absmax
// minus its mean, 8-bit with the signed dynamic map in blocks of 256, plus a
// float32 scale per 256-block and the mean as offset. See
// Note [bitsandbytes NF4 layout] in kernels/nf4.h.
//
// Example:
//   ASSIGN_OR_RETURN(Nf4Tensor w, Nf4Tensor::Quantize(weight_bf16));
//   at::Tensor buf = at::empty(w.shape(), at::kBFloat16);   // reused per layer
//   RETURN_IF_ERROR(w.DequantizeInto(buf));
#ifndef RIGTUNE_WORKER_QUANT_NF4_TENSOR_H_
#define RIGTUNE_WORKER_QUANT_NF4_TENSOR_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace rigtune::quant {

struct Nf4QuantizeOptions {
  bool double_quant = true;  // bitsandbytes' compress_statistics
};

class Nf4Tensor {
 public:
  // Quantizes a floating-point tensor (fp32, fp16 or bf16; any shape, any
  // device). Fails with INVALID_ARGUMENT on an empty or non-float tensor.
  static absl::StatusOr<Nf4Tensor> Quantize(const at::Tensor& weight,
                                            const Nf4QuantizeOptions& options = {});

  // Writes the dequantized weight into `out`, which must already have shape()
  // elements, a float dtype, and live on this tensor's device. No allocation.
  absl::Status DequantizeInto(at::Tensor& out) const;
  // Convenience: allocates and returns a dequantized tensor of `dtype`.
  absl::StatusOr<at::Tensor> Dequantize(at::ScalarType dtype) const;

  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t numel() const;
  at::ScalarType dtype() const { return dtype_; }  // the original dtype
  bool double_quant() const { return nested_; }
  at::Device device() const { return packed_.device(); }
  // Moves every buffer to `device` (CPU <-> CUDA).
  Nf4Tensor To(at::Device device) const;

  // Raw state, for sharding and serialization.
  const at::Tensor& packed() const { return packed_; }          // uint8 [(n+1)/2]
  const at::Tensor& absmax() const { return absmax_; }          // float32 [blocks] or uint8 when nested
  const at::Tensor& nested_absmax() const { return nested_absmax_; }  // float32 [ceil(blocks/256)]
  float nested_offset() const { return offset_; }
  int64_t bytes() const;  // packed + constants: the on-device footprint

  // bitsandbytes' serialized layout under `prefix` ("model.layers.0.mlp.up_proj"):
  // prefix.weight, .weight.absmax, .weight.quant_map, .weight.nested_absmax,
  // .weight.nested_quant_map, .weight.quant_state.bitsandbytes__nf4.
  std::map<std::string, at::Tensor> ToStateDict(const std::string& prefix) const;
  static absl::StatusOr<Nf4Tensor> FromStateDict(const std::map<std::string, at::Tensor>& tensors,
                                                 const std::string& prefix);

  // Builds from raw parts (used by FSDP gather and by loaders); validates sizes.
  static absl::StatusOr<Nf4Tensor> FromParts(std::vector<int64_t> shape, at::ScalarType dtype,
                                             at::Tensor packed, at::Tensor absmax,
                                             at::Tensor nested_absmax, float offset);

  Nf4Tensor() = default;

 private:
  std::vector<int64_t> shape_;
  at::ScalarType dtype_ = at::kFloat;
  bool nested_ = false;
  at::Tensor packed_;
  at::Tensor absmax_;
  at::Tensor nested_absmax_;
  float offset_ = 0.f;
};

}  // namespace rigtune::quant

#endif  // RIGTUNE_WORKER_QUANT_NF4_TENSOR_H_
