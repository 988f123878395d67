#include "worker/quant/frozen_weight.h"

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace rigtune::quant {

const char* BaseFormatName(BaseFormat format) {
  switch (format) {
    case BaseFormat::kNf4: return "nf4";
    case BaseFormat::kBf16: return "bf16";
    case BaseFormat::kHqq4: return "hqq4";
  }
  return "?";
}

std::vector<std::string> BaseFormatNames() { return {"nf4", "bf16", "hqq4"}; }

absl::StatusOr<BaseFormat> ParseBaseFormat(absl::string_view name, absl::string_view field) {
  for (BaseFormat f : {BaseFormat::kNf4, BaseFormat::kBf16, BaseFormat::kHqq4}) {
    if (name == BaseFormatName(f)) return f;
  }
  return absl::InvalidArgumentError(absl::StrCat(field, ": must be one of ",
                                                 absl::StrJoin(BaseFormatNames(), ", "),
                                                 "; got '", name, "'"));
}

FrozenWeight::FrozenWeight(Nf4Tensor nf4) : format_(BaseFormat::kNf4), nf4_(std::move(nf4)) {}

FrozenWeight::FrozenWeight(Hqq4Tensor hqq4)
    : format_(BaseFormat::kHqq4), hqq4_(std::move(hqq4)) {}

FrozenWeight FrozenWeight::Dense(at::Tensor weight) {
  FrozenWeight w;
  w.format_ = BaseFormat::kBf16;
  w.dense_ = std::move(weight);
  return w;
}

absl::StatusOr<FrozenWeight> FrozenWeight::Make(const at::Tensor& weight, BaseFormat format,
                                                at::ScalarType dense_dtype) {
  if (format == BaseFormat::kBf16) {
    if (weight.dim() != 2 || !at::isFloatingType(weight.scalar_type())) {
      return absl::InvalidArgumentError("a dense base weight must be a 2-D float tensor");
    }
    return Dense(weight.to(dense_dtype).contiguous());
  }
  if (format == BaseFormat::kHqq4) {
    auto q = Hqq4Tensor::Quantize(weight);
    if (!q.ok()) return q.status();
    return FrozenWeight(*std::move(q));
  }
  auto q = Nf4Tensor::Quantize(weight);
  if (!q.ok()) return q.status();
  return FrozenWeight(*std::move(q));
}

std::vector<int64_t> FrozenWeight::shape() const {
  switch (format_) {
    case BaseFormat::kBf16: return dense_.sizes().vec();
    case BaseFormat::kHqq4: return hqq4_.shape();
    default: return nf4_.shape();
  }
}

int64_t FrozenWeight::numel() const {
  switch (format_) {
    case BaseFormat::kBf16: return dense_.numel();
    case BaseFormat::kHqq4: return hqq4_.numel();
    default: return nf4_.numel();
  }
}

at::Device FrozenWeight::device() const {
  switch (format_) {
    case BaseFormat::kBf16: return dense_.device();
    case BaseFormat::kHqq4: return hqq4_.device();
    default: return nf4_.device();
  }
}

int64_t FrozenWeight::bytes() const {
  switch (format_) {
    case BaseFormat::kBf16: return dense_.numel() * static_cast<int64_t>(dense_.element_size());
    case BaseFormat::kHqq4: return hqq4_.bytes();
    default: return nf4_.bytes();
  }
}

absl::Status FrozenWeight::DequantizeInto(at::Tensor& out) const {
  if (format_ == BaseFormat::kNf4) return nf4_.DequantizeInto(out);
  if (format_ == BaseFormat::kHqq4) return hqq4_.DequantizeInto(out);
  if (out.numel() != dense_.numel()) {
    return absl::InvalidArgumentError(absl::StrCat("dense base: output has ", out.numel(),
                                                   " elements, the weight ", dense_.numel()));
  }
  out.view(dense_.sizes()).copy_(dense_);
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> FrozenWeight::Dequantize(at::ScalarType dtype) const {
  if (is_dense()) return dense_.to(dtype, /*non_blocking=*/false, /*copy=*/true);
  if (format_ == BaseFormat::kHqq4) return hqq4_.Dequantize(dtype);
  return nf4_.Dequantize(dtype);
}

FrozenWeight FrozenWeight::To(at::Device device) const {
  if (is_dense()) return Dense(dense_.to(device));
  if (format_ == BaseFormat::kHqq4) return FrozenWeight(hqq4_.To(device));
  return FrozenWeight(nf4_.To(device));
}

}  // namespace rigtune::quant
