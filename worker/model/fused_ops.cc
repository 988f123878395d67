#include "worker/model/fused_ops.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/float_format.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "worker/profile/step_profiler.h"
#include "worker/quant/float_format_of.h"

#ifdef RIGTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace rigtune::model {
namespace {

using kernels::FloatFormat;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// `t`'s element format; std::invalid_argument naming `what` for other dtypes.
FloatFormat FormatOf(const at::Tensor& t, const char* what) {
  auto fmt = quant::FloatFormatOf(t.scalar_type(), what);
  if (!fmt.ok()) throw std::invalid_argument(std::string(fmt.status().message()));
  return *fmt;
}

// The CUDA half of a RunOnDevice call: a launch expression using `stream`,
// left out of CPU-only builds (where the kernels are not declared).
#ifdef RIGTUNE_WITH_CUDA
#define RIGTUNE_CUDA_LAUNCH(...) [&](cudaStream_t stream) { return __VA_ARGS__; }
#else
#define RIGTUNE_CUDA_LAUNCH(...) nullptr
#endif

// Runs `cpu(begin, end)` over row ranges on the CPU thread pool, or
// `cuda(stream)` on the tensor's device; one place decides which.
template <typename Cpu, typename Cuda>
void RunOnDevice(const at::Tensor& t, int64_t rows, int64_t cols, const char* op, Cpu cpu,
                 Cuda cuda) {
  profile::ScopedPhase phase(profile::Phase::kElementwise, t);
  if (!t.is_cuda()) {
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, cols));
    at::parallel_for(0, rows, grain, cpu);
    return;
  }
#ifdef RIGTUNE_WITH_CUDA
  const c10::cuda::CUDAGuard guard(t.device());
  const cudaError_t err = cuda(at::cuda::getCurrentCUDAStream(t.device().index()).stream());
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(op) + " (CUDA): " + cudaGetErrorString(err));
  }
#else
  (void)cuda;
  throw std::runtime_error(std::string(op) + ": this build has no CUDA support");
#endif
}

struct RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            double eps) {
    const FloatFormat fmt = FormatOf(x, "FusedRmsNorm: x");
    const at::Tensor xc = x.contiguous();
    const at::Tensor w = weight.to(x.scalar_type()).contiguous();
    const int64_t cols = x.size(-1);
    if (w.numel() != cols) {
      throw std::invalid_argument("FusedRmsNorm: weight has " + std::to_string(w.numel()) +
                                  " elements, the last dimension of x " + std::to_string(cols));
    }
    const int64_t rows = cols == 0 ? 0 : xc.numel() / cols;
    at::Tensor y = at::empty_like(xc);
    at::Tensor rstd = at::empty({rows}, x.options().dtype(at::kFloat));
    const float e = static_cast<float>(eps);
    RunOnDevice(
        xc, rows, cols, "FusedRmsNorm",
        [&](int64_t b, int64_t end) {
          kernels::RmsNormForwardCpu(xc.data_ptr(), cols, w.data_ptr(), b, end, cols, e, fmt,
                                     y.data_ptr(), cols, rstd.data_ptr<float>());
        },
        RIGTUNE_CUDA_LAUNCH(kernels::RmsNormForwardCuda(xc.data_ptr(), cols, w.data_ptr(), rows,
                                                        cols, e, fmt, y.data_ptr(), cols,
                                                        rstd.data_ptr<float>(), stream)));
    ctx->save_for_backward({xc, w, rstd});
    ctx->saved_data["weight_dtype"] = weight.scalar_type();
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& w = saved[1];
    const at::Tensor& rstd = saved[2];
    const FloatFormat fmt = FormatOf(x, "FusedRmsNorm backward");
    const at::Tensor dy = grad_out[0].to(x.scalar_type()).contiguous();
    const int64_t cols = x.size(-1);
    const int64_t rows = rstd.numel();
    at::Tensor dx = at::empty_like(x);
    RunOnDevice(
        x, rows, cols, "FusedRmsNorm backward",
        [&](int64_t b, int64_t end) {
          kernels::RmsNormBackwardCpu(dy.data_ptr(), cols, x.data_ptr(), cols, w.data_ptr(),
                                      rstd.data_ptr<float>(), b, end, cols, fmt, dx.data_ptr(),
                                      cols);
        },
        RIGTUNE_CUDA_LAUNCH(kernels::RmsNormBackwardCuda(dy.data_ptr(), cols, x.data_ptr(), cols,
                                                         w.data_ptr(), rstd.data_ptr<float>(), rows,
                                                         cols, fmt, dx.data_ptr(), cols, stream)));
    // The weight's gradient only when it trains (train.method full): the
    // sum over rows of dy · round(x · rstd), the rounded normalized input
    // transformers multiplies the weight by, accumulated in float32.
    at::Tensor dw;
    if (ctx->needs_input_grad(1)) {
      const at::Tensor normed =
          (x.to(at::kFloat).view({rows, cols}) * rstd.unsqueeze(1)).to(x.scalar_type());
      dw = (dy.view({rows, cols}).to(at::kFloat) * normed.to(at::kFloat))
               .sum(0)
               .to(ctx->saved_data["weight_dtype"].toScalarType());
    }
    return {dx, dw, at::Tensor()};
  }
};

// Rotates the first `heads` heads of each row of `x` [tokens, width]
// (contiguous) in place.
void Rotate(at::Tensor& x, int64_t heads, const at::Tensor& cos, const at::Tensor& sin,
            bool backward) {
  const FloatFormat fmt = FormatOf(x, "RotaryInPlace: x");
  const int64_t width = x.size(-1);
  const int64_t head_dim = cos.size(-1);
  const int64_t tokens = x.numel() / width;
  if (head_dim % 2 != 0 || heads * head_dim > width || cos.numel() != tokens * head_dim ||
      sin.numel() != cos.numel()) {
    throw std::invalid_argument(
        "RotaryInPlace: x is [..., " + std::to_string(width) + "], too narrow for " +
        std::to_string(heads) + " heads or not matching the tables [..., " +
        std::to_string(head_dim) + "] for " +
        std::to_string(cos.numel() / std::max<int64_t>(1, head_dim)) + " tokens");
  }
  RunOnDevice(
      x, tokens, width, "RotaryInPlace",
      [&](int64_t b, int64_t end) {
        kernels::RopeCpu(x.data_ptr(), width, cos.data_ptr(), sin.data_ptr(), b, end, heads,
                         head_dim, fmt, backward);
      },
      RIGTUNE_CUDA_LAUNCH(kernels::RopeCuda(x.data_ptr(), width, cos.data_ptr(), sin.data_ptr(),
                                            tokens, heads, head_dim, fmt, backward, stream)));
}

struct RotaryFunction : public torch::autograd::Function<RotaryFunction> {
  static at::Tensor forward(AutogradContext* ctx, at::Tensor x, int64_t heads,
                            const at::Tensor& cos, const at::Tensor& sin) {
    if (!x.is_contiguous()) throw std::invalid_argument("RotaryInPlace: x must be contiguous");
    const at::Tensor c = cos.to(x.scalar_type()).contiguous();
    const at::Tensor s = sin.to(x.scalar_type()).contiguous();
    Rotate(x, heads, c, s, /*backward=*/false);
    ctx->mark_dirty({x});
    ctx->save_for_backward({c, s});
    ctx->saved_data["heads"] = heads;
    return x;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    at::Tensor dx = grad_out[0].clone(at::MemoryFormat::Contiguous);
    Rotate(dx, ctx->saved_data["heads"].toInt(), saved[0], saved[1], /*backward=*/true);
    return {dx, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// silu(g)·u over [rows, cols] blocks with row strides; `like` picks the device.
void SwigluForward(const at::Tensor& like, const void* g, int64_t ld_g, const void* u, int64_t ld_u,
                   int64_t rows, int64_t cols, void* out) {
  const FloatFormat fmt = FormatOf(like, "FusedSwiglu: gate");
  RunOnDevice(
      like, rows, cols, "FusedSwiglu",
      [&](int64_t b, int64_t end) {
        kernels::SwigluForwardCpu(g, ld_g, u, ld_u, b, end, cols, fmt, out, cols);
      },
      RIGTUNE_CUDA_LAUNCH(
          kernels::SwigluForwardCuda(g, ld_g, u, ld_u, rows, cols, fmt, out, cols, stream)));
}

void SwigluBackward(const at::Tensor& like, const void* d, const void* g, int64_t ld_g,
                    const void* u, int64_t ld_u, int64_t rows, int64_t cols, void* dg,
                    int64_t ld_dg, void* du, int64_t ld_du) {
  const FloatFormat fmt = FormatOf(like, "FusedSwiglu backward");
  RunOnDevice(
      like, rows, cols, "FusedSwiglu backward",
      [&](int64_t b, int64_t end) {
        kernels::SwigluBackwardCpu(d, cols, g, ld_g, u, ld_u, b, end, cols, fmt, dg, ld_dg, du,
                                   ld_du);
      },
      RIGTUNE_CUDA_LAUNCH(kernels::SwigluBackwardCuda(d, cols, g, ld_g, u, ld_u, rows, cols, fmt,
                                                      dg, ld_dg, du, ld_du, stream)));
}

int64_t Rows(const at::Tensor& t, int64_t cols) { return cols == 0 ? 0 : t.numel() / cols; }

struct SwigluFunction : public torch::autograd::Function<SwigluFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    if (gate.dim() == 0 || !gate.sizes().equals(up.sizes()) ||
        gate.scalar_type() != up.scalar_type()) {
      throw std::invalid_argument("FusedSwiglu: gate and up differ in shape or dtype");
    }
    const at::Tensor g = gate.contiguous();
    const at::Tensor u = up.contiguous();
    const int64_t cols = g.size(-1);
    at::Tensor out = at::empty_like(g);
    SwigluForward(g, g.data_ptr(), cols, u.data_ptr(), cols, Rows(g, cols), cols, out.data_ptr());
    ctx->save_for_backward({g, u});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &g = saved[0], &u = saved[1];
    const at::Tensor d = grad_out[0].to(g.scalar_type()).contiguous();
    const int64_t cols = g.size(-1);
    at::Tensor dg = at::empty_like(g);
    at::Tensor du = at::empty_like(u);
    SwigluBackward(g, d.data_ptr(), g.data_ptr(), cols, u.data_ptr(), cols, Rows(g, cols), cols,
                   dg.data_ptr(), cols, du.data_ptr(), cols);
    return {dg, du};
  }
};

// The second half of each row of `t` (its last dimension split in two).
void* SecondHalf(const at::Tensor& t) {
  return static_cast<char*>(t.data_ptr()) + t.size(-1) / 2 * t.element_size();
}

// Note [SwiGLU's gradient over its input]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// In the MLP the gate/up product is a temporary: once SwiGLU's backward has
// read it, nothing else does (the gate/up product node saves its input x,
// not its output). Its gradient has the same shape, so with
// `overwrite_input` the backward writes it over the product instead of
// allocating another [tokens, 2·intermediate] tensor: the largest tensor of
// the MLP backward is then alive once, not twice (336 MB at Llama-2-7B,
// 4 × 2048). The kernel reads every element before writing it (each element
// is read and written by one thread), so the aliasing is safe. The product's
// version is bumped, so a second backward through the same graph fails
// loudly rather than reading the gradient as the product.
struct SwigluHalvesFunction : public torch::autograd::Function<SwigluHalvesFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate_up,
                            bool overwrite_input) {
    if (gate_up.dim() == 0 || gate_up.size(-1) % 2 != 0) {
      throw std::invalid_argument("FusedSwiglu: gate_up's last dimension must be even");
    }
    const at::Tensor gu = gate_up.contiguous();
    const int64_t width = gu.size(-1), cols = width / 2;
    std::vector<int64_t> sizes = gu.sizes().vec();
    sizes.back() = cols;
    at::Tensor out = at::empty(sizes, gu.options());
    SwigluForward(gu, gu.data_ptr(), width, SecondHalf(gu), width, Rows(gu, width), cols,
                  out.data_ptr());
    ctx->save_for_backward({gu});
    ctx->saved_data["overwrite_input"] = overwrite_input;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const at::Tensor gu = ctx->get_saved_variables()[0];
    const at::Tensor d = grad_out[0].to(gu.scalar_type()).contiguous();
    const int64_t width = gu.size(-1), cols = width / 2;
    const bool in_place = ctx->saved_data["overwrite_input"].toBool() && !gu.is_leaf();
    at::Tensor dgu = in_place ? gu : at::empty_like(gu);
    SwigluBackward(gu, d.data_ptr(), gu.data_ptr(), width, SecondHalf(gu), width, Rows(gu, width),
                   cols, dgu.data_ptr(), width, SecondHalf(dgu), width);
    if (in_place) gu.unsafeGetTensorImpl()->bump_version();
    return {in_place ? gu.detach() : dgu, at::Tensor()};
  }
};

}  // namespace

at::Tensor FusedRmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return RmsNormFunction::apply(x, weight, eps);
}

at::Tensor RotaryInPlace(at::Tensor x, int64_t heads, const at::Tensor& cos,
                         const at::Tensor& sin) {
  return RotaryFunction::apply(std::move(x), heads, cos, sin);
}

at::Tensor FusedSwiglu(const at::Tensor& gate, const at::Tensor& up) {
  return SwigluFunction::apply(gate, up);
}

at::Tensor FusedSwiglu(const at::Tensor& gate_up, bool overwrite_input) {
  return SwigluHalvesFunction::apply(gate_up, overwrite_input);
}

}  // namespace rigtune::model
