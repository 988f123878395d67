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
  const at::Tensor& packed() const { return packed_; }  // uint8 [(n+1)/2]
  const at::Tensor& absmax() const { return absmax_; }  // float32 [blocks] or uint8 when nested
  const at::Tensor& nested_absmax() const { return nested_absmax_; }  // float32 [ceil(blocks/256)]
  // The 256-entry 8-bit map the nested absmax codes index (float32; empty
  // when not nested). Quantize uses kernels::DynamicMap8(); a loaded
  // checkpoint keeps its own `nested_quant_map`.
  const at::Tensor& nested_quant_map() const { return nested_map_; }
  float nested_offset() const { return offset_; }
  int64_t bytes() const;  // packed + absmax + nested absmax and map: the on-device footprint

  // bitsandbytes' serialized layout under `prefix` ("model.layers.0.mlp.up_proj"):
  // prefix.weight, .weight.absmax, .weight.quant_map, .weight.nested_absmax,
  // .weight.nested_quant_map, .weight.quant_state.bitsandbytes__nf4 (an empty
  // prefix gives "weight", "weight.absmax", ...: a bare Linear4bit's keys).
  // `weight` is uint8 [(n+1)/2, 1] as bitsandbytes stores it; the JSON
  // quant_state is a CPU uint8 tensor with bitsandbytes' exact bytes; the
  // other tensors stay on device().
  std::map<std::string, at::Tensor> ToStateDict(const std::string& prefix) const;
  // Reads the same layout, whatever device the tensors are on (they must all
  // be on one device, except the JSON tensor). `weight` may be stored as uint8
  // or as any dtype viewing the same bytes (bitsandbytes' quant_storage).
  // Fails with INVALID_ARGUMENT naming the key on a missing or mis-sized
  // tensor, a quant_type other than nf4, a blocksize other than 64, a
  // quant_map other than the NF4 table, or unreadable JSON.
  static absl::StatusOr<Nf4Tensor> FromStateDict(const std::map<std::string, at::Tensor>& tensors,
                                                 const std::string& prefix);

  // Builds from raw parts (used by FSDP gather and by loaders); validates
  // sizes, dtypes and devices. `absmax` is float32, or uint8 codes when
  // nested; then `nested_absmax` holds the float32 scales and
  // `nested_quant_map` the 256-entry map (empty: kernels::DynamicMap8()).
  static absl::StatusOr<Nf4Tensor> FromParts(std::vector<int64_t> shape, at::ScalarType dtype,
                                             at::Tensor packed, at::Tensor absmax,
                                             at::Tensor nested_absmax, float offset,
                                             at::Tensor nested_quant_map = {});

  Nf4Tensor() = default;

 private:
  std::vector<int64_t> shape_;
  at::ScalarType dtype_ = at::kFloat;
  bool nested_ = false;
  at::Tensor packed_;
  at::Tensor absmax_;
  at::Tensor nested_absmax_;
  at::Tensor nested_map_;
  float offset_ = 0.f;
};

}  // namespace rigtune::quant

#endif  // RIGTUNE_WORKER_QUANT_NF4_TENSOR_H_
