#include "worker/quant/hqq4_tensor.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/hqq4.h"
#include "worker/quant/float_format_of.h"

#ifdef RIGTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace rigtune::quant {
namespace {

// Note [hqq's solver]
// ~~~~~~~~~~~~~~~~~~~
// hqq 0.2.8's Quantizer.quantize with its 4-bit defaults (group 64, axis 1,
// optimize, round_zero), step by step, with the same tensor ops in the same
// order so that float rounding agrees:
//   W = w.float().reshape(-1, 64); lo, hi = min, max per group
//   s = 15 / (hi − lo), 1 where |hi − lo| <= 1e-4, at most 2e4; z = round(−lo · s)
//   solver (float16 on CUDA, float32 on the CPU), beta = 10, p = 0.7:
//     repeat at most 20 times:
//       q  = clamp(round(W·s + z), 0, 15);  Wr = (q − z) / s
//       We = shrink(W − Wr)   (sign(x)·max(|x| − |x|^(p−1)/beta, 0))
//       z  = mean over the group of (q − (W − We)·s)
//       stop when mean|W − Wr| (of this iteration's Wr) is not below the best
//   (z is updated before the test, so the iteration that stops still moves it)
//   q = clamp(round(W·s + z), 0, 15) with the float32 W; scale = 1 / s.
constexpr double kBeta = 10.0;
constexpr double kLpNorm = 0.7;
constexpr int kIters = 20;
constexpr double kMaxCode = 15.0;

at::Tensor Shrink(const at::Tensor& x) {
  at::Tensor out = x.abs();
  out.sub_(out.pow(kLpNorm - 1.0).mul_(1.0 / kBeta)).clamp_min_(0.0);
  return out.mul_(x.sign());
}

}  // namespace

absl::StatusOr<Hqq4Tensor> Hqq4Tensor::Quantize(const at::Tensor& weight) {
  if (!weight.defined() || weight.numel() == 0 || !at::isFloatingType(weight.scalar_type())) {
    return absl::InvalidArgumentError("hqq4: the weight must be a non-empty float tensor");
  }
  if (weight.numel() % (2 * kGroupSize) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("hqq4: ", weight.numel(), " elements is not a multiple of ",
                     2 * kGroupSize, " (groups of 64, packed two groups per byte row)"));
  }
  c10::NoGradGuard no_grad;
  const at::Tensor w = weight.to(at::kFloat).reshape({-1, kGroupSize});
  const at::Tensor lo = std::get<0>(w.min(1, /*keepdim=*/true));
  const at::Tensor hi = std::get<0>(w.max(1, /*keepdim=*/true));
  const at::Tensor denom = hi - lo;
  // Python's `15 / t` is t.reciprocal() * 15: the same here, rounding included.
  at::Tensor scale = denom.reciprocal() * kMaxCode;
  scale = at::where(denom.abs() <= 1e-4, at::full_like(scale, 1.0), scale).clamp(c10::nullopt,
                                                                               2e4);
  at::Tensor zero = (-lo * scale).round();

  const at::ScalarType solve = w.is_cuda() ? at::kHalf : at::kFloat;
  const at::Tensor wf = w.to(solve);
  at::Tensor s = scale.to(solve), z = zero.to(solve);
  at::Tensor best = at::full({}, std::numeric_limits<float>::infinity(),
                             w.options().dtype(at::kFloat));
  for (int i = 0; i < kIters; ++i) {
    const at::Tensor q = at::round(wf * s + z).clamp_(0.0, kMaxCode);
    const at::Tensor wr = (q - z) / s;
    const at::Tensor we = Shrink(wf - wr);
    z = at::mean(q - (wf - we) * s, at::IntArrayRef{1}, /*keepdim=*/true);
    const at::Tensor error = at::abs(wf - wr).mean().to(at::kFloat);
    if (error.lt(best).item<bool>()) {
      best = error;
    } else {
      break;
    }
  }
  const at::Tensor q = at::round(w * s + z).clamp_(0.0, kMaxCode).to(at::kByte);
  const int64_t half = q.size(0) / 2;
  Hqq4Tensor t;
  t.shape_ = weight.sizes().vec();
  t.packed_ = q.narrow(0, 0, half).bitwise_left_shift(4).bitwise_or_(q.narrow(0, half, half));
  t.scale_ = s.reciprocal().to(at::kFloat).reshape({-1}).contiguous();
  t.zero_ = z.to(at::kFloat).reshape({-1}).contiguous();
  return t;
}

absl::StatusOr<Hqq4Tensor> Hqq4Tensor::FromParts(std::vector<int64_t> shape, at::Tensor packed,
                                                 at::Tensor scale, at::Tensor zero) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const int64_t groups = n / kGroupSize;
  if (n % (2 * kGroupSize) != 0 || packed.scalar_type() != at::kByte ||
      packed.numel() != n / 2 || scale.scalar_type() != at::kFloat ||
      zero.scalar_type() != at::kFloat || scale.numel() != groups || zero.numel() != groups ||
      packed.device() != scale.device() || packed.device() != zero.device()) {
    return absl::InvalidArgumentError(
        "hqq4: packed codes (uint8, numel/2), scale and zero (float32, one per group of 64) "
        "do not fit the shape or are on different devices");
  }
  Hqq4Tensor t;
  t.shape_ = std::move(shape);
  t.packed_ = packed.reshape({groups / 2, kGroupSize});
  t.scale_ = scale.reshape({-1});
  t.zero_ = zero.reshape({-1});
  return t;
}

int64_t Hqq4Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

at::Tensor Hqq4Tensor::Codes() const {
  return at::cat({packed_.bitwise_right_shift(4), packed_.bitwise_and(15)}, 0);
}

absl::Status Hqq4Tensor::DequantizeInto(at::Tensor& out) const {
  if (out.numel() != numel() || !at::isFloatingType(out.scalar_type()) ||
      out.device() != device()) {
    return absl::InvalidArgumentError(
        absl::StrCat("hqq4: the output must hold ", numel(), " float elements on ",
                     device().str()));
  }
  if (out.is_cuda()) return DequantizeCuda(out);
  c10::NoGradGuard no_grad;
  // In float32 (in `out` itself when it is float32), rounded once to out's
  // dtype: the same as hqq's dequantize with a float32 compute dtype (Note
  // [hqq4 layout and rounding] in kernels/hqq4.h; the CUDA kernel gives the
  // same bits).
  at::Tensor o = out.view({-1, kGroupSize});
  at::Tensor w = out.scalar_type() == at::kFloat
                     ? o
                     : at::empty(o.sizes(), o.options().dtype(at::kFloat));
  const int64_t half = packed_.size(0);
  w.narrow(0, 0, half).copy_(packed_.bitwise_right_shift(4));
  w.narrow(0, half, half).copy_(packed_.bitwise_and(15));
  w.sub_(zero_.unsqueeze(1)).mul_(scale_.unsqueeze(1));
  if (!w.is_same(o)) o.copy_(w);
  return absl::OkStatus();
}

absl::Status Hqq4Tensor::DequantizeCuda(at::Tensor& out) const {
  auto fmt = FloatFormatOf(out.scalar_type(), "hqq4: the output");
  if (!fmt.ok()) return fmt.status();
  if (!out.is_contiguous()) {
    return absl::InvalidArgumentError("hqq4: the output must be contiguous");
  }
#ifdef RIGTUNE_WITH_CUDA
  const c10::cuda::CUDAGuard guard(out.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream(out.device().index()).stream();
  const at::Tensor packed = packed_.contiguous();
  const at::Tensor scale = scale_.contiguous();
  const at::Tensor zero = zero_.contiguous();
  const cudaError_t err =
      kernels::Hqq4DequantizeCuda(packed.data_ptr<uint8_t>(), scale.data_ptr<float>(),
                                  zero.data_ptr<float>(), numel(), *fmt, out.data_ptr(), stream);
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("hqq4 dequantize (CUDA): ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
#else
  return absl::FailedPreconditionError(
      "hqq4: the weight is on a CUDA device but rigtune was built without CUDA");
#endif
}

absl::StatusOr<at::Tensor> Hqq4Tensor::Dequantize(at::ScalarType dtype) const {
  at::Tensor out = at::empty(shape_, at::TensorOptions().dtype(dtype).device(device()));
  if (auto s = DequantizeInto(out); !s.ok()) return s;
  return out;
}

Hqq4Tensor Hqq4Tensor::To(at::Device device) const {
  Hqq4Tensor t = *this;
  t.packed_ = packed_.to(device);
  t.scale_ = scale_.to(device);
  t.zero_ = zero_.to(device);
  return t;
}

int64_t Hqq4Tensor::bytes() const { return packed_.numel() + 8 * scale_.numel(); }

}  // namespace rigtune::quant
