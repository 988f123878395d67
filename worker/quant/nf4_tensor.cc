// Nf4Tensor: quantize, dequantize and raw parts. The bitsandbytes state-dict
// layout lives in nf4_state_dict.cc; the arithmetic in kernels/nf4*.
#include "worker/quant/nf4_tensor.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/nf4.h"
#include "worker/quant/float_format_of.h"

#ifdef RIGTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace rigtune::quant {
namespace {

using kernels::FloatFormat;
using kernels::kNf4BlockSize;
using kernels::kNf4NestedBlockSize;

// CPU work is split into chunks of whole nested blocks (256 * 64 elements),
// so every chunk starts on a 64-block and on a 256-block of absmax.
constexpr int64_t kChunkElements = kNf4BlockSize * kNf4NestedBlockSize;

absl::Status NeedsCuda(const char* what) {
  return absl::FailedPreconditionError(
      absl::StrCat(what, ": the tensor is on a CUDA device but rigtune was built without CUDA"));
}

at::Tensor DynamicMapTensor(at::Device device) {
  const auto& map = kernels::DynamicMap8();
  return at::from_blob(const_cast<float*>(map.data()), {256}, at::kFloat).to(device, true, true);
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status CheckPart(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t numel,
                       at::Device device) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(name, " is missing"));
  if (t.scalar_type() != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be ", c10::toString(dtype),
                                                   ", got ", c10::toString(t.scalar_type())));
  }
  if (t.numel() != numel) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must have ", numel, " elements, got ", t.numel()));
  }
  if (t.device() != device) {
    return absl::InvalidArgumentError(absl::StrCat(name, " is on ", t.device().str(),
                                                   " but the packed weight is on ", device.str()));
  }
  return absl::OkStatus();
}

}  // namespace

int64_t Nf4Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

int64_t Nf4Tensor::bytes() const {
  int64_t total = 0;
  for (const at::Tensor* t : {&packed_, &absmax_, &nested_absmax_, &nested_map_}) {
    if (t->defined()) total += t->nbytes();
  }
  return total;
}

absl::StatusOr<Nf4Tensor> Nf4Tensor::Quantize(const at::Tensor& weight,
                                              const Nf4QuantizeOptions& options) {
  if (!weight.defined()) return absl::InvalidArgumentError("Quantize: the weight is undefined");
  auto fmt = FloatFormatOf(weight.scalar_type(), "Quantize: the weight");
  if (!fmt.ok()) return fmt.status();
  if (weight.numel() == 0) {
    return absl::InvalidArgumentError(absl::StrCat("Quantize: the weight is empty (shape ",
                                                   ShapeString(weight.sizes().vec()), ")"));
  }
  if (!at::isfinite(weight).all().item<bool>()) {
    return absl::InvalidArgumentError("Quantize: the weight contains NaN or infinity");
  }
  const at::Tensor w = weight.contiguous();
  const int64_t n = w.numel();
  const int64_t num_blocks = kernels::Nf4NumBlocks(n);
  const auto u8 = w.options().dtype(at::kByte);
  const auto f32 = w.options().dtype(at::kFloat);

  Nf4Tensor out;
  out.shape_ = w.sizes().vec();
  out.dtype_ = w.scalar_type();
  out.packed_ = at::empty({kernels::Nf4PackedBytes(n)}, u8);
  at::Tensor absmax = at::empty({num_blocks}, f32);

  if (w.is_cuda()) {
#ifdef RIGTUNE_WITH_CUDA
    const c10::cuda::CUDAGuard guard(w.device());
    cudaStream_t stream = at::cuda::getCurrentCUDAStream(w.device().index()).stream();
    cudaError_t err = kernels::Nf4QuantizeCuda(
        w.data_ptr(), *fmt, n, out.packed_.data_ptr<uint8_t>(), absmax.data_ptr<float>(), stream);
    if (err != cudaSuccess) {
      return absl::InternalError(absl::StrCat("Nf4QuantizeCuda: ", cudaGetErrorString(err)));
    }
    if (options.double_quant) {
      out.nested_map_ = DynamicMapTensor(w.device());
      out.absmax_ = at::empty({num_blocks}, u8);
      out.nested_absmax_ = at::empty({kernels::Nf4NumNestedBlocks(num_blocks)}, f32);
      at::Tensor offset = at::empty({1}, f32);
      err = kernels::Nf4DoubleQuantCuda(
          absmax.data_ptr<float>(), num_blocks, out.nested_map_.data_ptr<float>(),
          out.absmax_.data_ptr<uint8_t>(), out.nested_absmax_.data_ptr<float>(),
          offset.data_ptr<float>(), stream);
      if (err != cudaSuccess) {
        return absl::InternalError(absl::StrCat("Nf4DoubleQuantCuda: ", cudaGetErrorString(err)));
      }
      out.offset_ = offset.item<float>();
      out.nested_ = true;
    } else {
      out.absmax_ = absmax;
    }
    return out;
#else
    return NeedsCuda("Quantize");
#endif
  }
  if (!w.is_cpu()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Quantize: unsupported device ", w.device().str()));
  }

  const auto* in = static_cast<const uint8_t*>(w.data_ptr());
  const int64_t elem = w.element_size();
  uint8_t* packed = out.packed_.data_ptr<uint8_t>();
  float* am = absmax.data_ptr<float>();
  const int64_t chunks = (n + kChunkElements - 1) / kChunkElements;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * kChunkElements;
      const int64_t count = std::min(kChunkElements, n - begin);
      kernels::Nf4QuantizeCpu(in + begin * elem, *fmt, count, packed + begin / 2,
                              am + begin / kNf4BlockSize);
    }
  });
  if (options.double_quant) {
    out.nested_map_ = DynamicMapTensor(w.device());
    out.absmax_ = at::empty({num_blocks}, u8);
    out.nested_absmax_ = at::empty({kernels::Nf4NumNestedBlocks(num_blocks)}, f32);
    out.offset_ = kernels::Nf4DoubleQuantCpu(am, num_blocks, out.nested_map_.data_ptr<float>(),
                                             out.absmax_.data_ptr<uint8_t>(),
                                             out.nested_absmax_.data_ptr<float>());
    out.nested_ = true;
  } else {
    out.absmax_ = absmax;
  }
  return out;
}

absl::Status Nf4Tensor::DequantizeInto(at::Tensor& out) const {
  if (!packed_.defined()) return absl::FailedPreconditionError("DequantizeInto: empty Nf4Tensor");
  if (!out.defined()) return absl::InvalidArgumentError("DequantizeInto: `out` is undefined");
  auto fmt = FloatFormatOf(out.scalar_type(), "DequantizeInto: `out`");
  if (!fmt.ok()) return fmt.status();
  const int64_t n = numel();
  if (out.numel() != n) {
    return absl::InvalidArgumentError(absl::StrCat("DequantizeInto: `out` has ", out.numel(),
                                                   " elements, the weight ", ShapeString(shape_),
                                                   " has ", n));
  }
  if (!out.is_contiguous()) {
    return absl::InvalidArgumentError("DequantizeInto: `out` must be contiguous");
  }
  if (out.device() != device()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DequantizeInto: `out` is on ", out.device().str(), ", the weight on ", device().str()));
  }
  const uint8_t* packed = packed_.data_ptr<uint8_t>();
  if (out.is_cuda()) {
#ifdef RIGTUNE_WITH_CUDA
    const c10::cuda::CUDAGuard guard(out.device());
    cudaStream_t stream = at::cuda::getCurrentCUDAStream(out.device().index()).stream();
    const cudaError_t err =
        nested_ ? kernels::Nf4DequantizeNestedCuda(
                      packed, absmax_.data_ptr<uint8_t>(), nested_absmax_.data_ptr<float>(),
                      nested_map_.data_ptr<float>(), offset_, n, *fmt, out.data_ptr(), stream)
                : kernels::Nf4DequantizeCuda(packed, absmax_.data_ptr<float>(), n, *fmt,
                                             out.data_ptr(), stream);
    if (err != cudaSuccess) {
      return absl::InternalError(absl::StrCat("Nf4 dequantize (CUDA): ", cudaGetErrorString(err)));
    }
    return absl::OkStatus();
#else
    return NeedsCuda("DequantizeInto");
#endif
  }
  auto* dst = static_cast<uint8_t*>(out.data_ptr());
  const int64_t elem = out.element_size();
  const int64_t chunks = (n + kChunkElements - 1) / kChunkElements;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * kChunkElements;
      const int64_t count = std::min(kChunkElements, n - begin);
      const int64_t block = begin / kNf4BlockSize;
      if (nested_) {
        kernels::Nf4DequantizeNestedCpu(
            packed + begin / 2, absmax_.data_ptr<uint8_t>() + block,
            nested_absmax_.data_ptr<float>() + block / kNf4NestedBlockSize,
            nested_map_.data_ptr<float>(), offset_, count, *fmt, dst + begin * elem);
      } else {
        kernels::Nf4DequantizeCpu(packed + begin / 2, absmax_.data_ptr<float>() + block, count,
                                  *fmt, dst + begin * elem);
      }
    }
  });
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> Nf4Tensor::Dequantize(at::ScalarType dtype) const {
  if (auto fmt = FloatFormatOf(dtype, "Dequantize: dtype"); !fmt.ok()) return fmt.status();
  if (!packed_.defined()) return absl::FailedPreconditionError("Dequantize: empty Nf4Tensor");
  at::Tensor out = at::empty(shape_, packed_.options().dtype(dtype));
  if (auto s = DequantizeInto(out); !s.ok()) return s;
  return out;
}

Nf4Tensor Nf4Tensor::To(at::Device device) const {
  Nf4Tensor t = *this;
  for (at::Tensor* p : {&t.packed_, &t.absmax_, &t.nested_absmax_, &t.nested_map_}) {
    if (p->defined()) *p = p->to(device);
  }
  return t;
}

absl::StatusOr<Nf4Tensor> Nf4Tensor::FromParts(std::vector<int64_t> shape, at::ScalarType dtype,
                                               at::Tensor packed, at::Tensor absmax,
                                               at::Tensor nested_absmax, float offset,
                                               at::Tensor nested_quant_map) {
  if (auto fmt = FloatFormatOf(dtype, "FromParts: dtype"); !fmt.ok()) return fmt.status();
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return absl::InvalidArgumentError("FromParts: negative dimension in the shape");
    n *= d;
  }
  if (n == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("FromParts: the shape ", ShapeString(shape), " has no elements"));
  }
  if (!packed.defined()) return absl::InvalidArgumentError("FromParts: packed is missing");
  const at::Device device = packed.device();
  const int64_t num_blocks = kernels::Nf4NumBlocks(n);
  if (auto s = CheckPart(packed, "packed", at::kByte, kernels::Nf4PackedBytes(n), device);
      !s.ok()) {
    return s;
  }
  if (!absmax.defined()) return absl::InvalidArgumentError("FromParts: absmax is missing");
  const bool nested = absmax.scalar_type() == at::kByte;
  if (auto s = CheckPart(absmax, "absmax", nested ? at::kByte : at::kFloat, num_blocks, device);
      !s.ok()) {
    return s;
  }
  Nf4Tensor t;
  if (nested) {
    if (auto s = CheckPart(nested_absmax, "nested_absmax", at::kFloat,
                           kernels::Nf4NumNestedBlocks(num_blocks), device);
        !s.ok()) {
      return s;
    }
    if (!nested_quant_map.defined()) nested_quant_map = DynamicMapTensor(device);
    if (auto s = CheckPart(nested_quant_map, "nested_quant_map", at::kFloat, 256, device);
        !s.ok()) {
      return s;
    }
    t.nested_absmax_ = nested_absmax.contiguous().view({-1});
    t.nested_map_ = nested_quant_map.contiguous().view({-1});
    t.offset_ = offset;
  } else if (nested_absmax.defined() && nested_absmax.numel() > 0) {
    return absl::InvalidArgumentError(
        "FromParts: nested_absmax given but absmax is float32 (nested absmax codes are uint8)");
  }
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.nested_ = nested;
  t.packed_ = packed.contiguous().view({-1});
  t.absmax_ = absmax.contiguous().view({-1});
  return t;
}

}  // namespace rigtune::quant
