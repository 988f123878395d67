// The kernels' element format (kernels/float_format.h) of a LibTorch dtype.
#ifndef RIGTUNE_WORKER_QUANT_FLOAT_FORMAT_OF_H_
#define RIGTUNE_WORKER_QUANT_FLOAT_FORMAT_OF_H_

#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/float_format.h"

namespace rigtune::quant {

// float32, float16 or bfloat16; anything else is INVALID_ARGUMENT naming
// `what` ("DequantizeInto: `out`").
inline absl::StatusOr<kernels::FloatFormat> FloatFormatOf(at::ScalarType dtype, const char* what) {
  switch (dtype) {
    case at::kFloat:
      return kernels::FloatFormat::kFloat32;
    case at::kHalf:
      return kernels::FloatFormat::kFloat16;
    case at::kBFloat16:
      return kernels::FloatFormat::kBFloat16;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(what, " must be float32, float16 or bfloat16, got ", c10::toString(dtype)));
  }
}

}  // namespace rigtune::quant

#endif  // RIGTUNE_WORKER_QUANT_FLOAT_FORMAT_OF_H_
