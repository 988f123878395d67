// transformers' Llama formulas spelled in ATen ops: the independent oracle
// for worker/model/fused_ops.h (CPU test) and for the CUDA kernels (GPU
// test), plus a helper that runs an op forward and backward.
#ifndef RIGTUNE_TESTS_WORKER_MODEL_FUSED_OPS_REFERENCE_H_
#define RIGTUNE_TESTS_WORKER_MODEL_FUSED_OPS_REFERENCE_H_

#include <ATen/ATen.h>

#include <functional>
#include <vector>

namespace rigtune::model::testing {

// LlamaRMSNorm.forward.
inline at::Tensor RmsNormReference(const at::Tensor& x, const at::Tensor& w, double eps) {
  at::Tensor h = x.to(at::kFloat);
  h = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return w * h.to(x.scalar_type());
}

// apply_rotary_pos_emb on x [B, T, heads * hd] with cos, sin [B, T, hd].
inline at::Tensor RopeReference(const at::Tensor& x, int64_t heads, const at::Tensor& cos,
                                const at::Tensor& sin) {
  const int64_t hd = cos.size(-1), half = hd / 2;
  at::Tensor v = x.reshape({x.size(0), x.size(1), heads, hd});
  at::Tensor rotated = at::cat({-v.narrow(-1, half, half), v.narrow(-1, 0, half)}, -1);
  return (v * cos.unsqueeze(2) + rotated * sin.unsqueeze(2)).reshape(x.sizes());
}

// LlamaMLP's act_fn(gate) * up.
inline at::Tensor SwigluReference(const at::Tensor& gate, const at::Tensor& up) {
  return at::silu(gate) * up;
}

// Rotary tables for positions 0..T-1 of a batch of B rows (as MakeAttentionInputs).
inline std::vector<at::Tensor> RopeTables(int64_t batch, int64_t seq, int64_t hd,
                                          at::ScalarType dtype) {
  at::Tensor inv = 1.0 / at::pow(10000.0, at::arange(0, hd, 2, at::kFloat) / double(hd));
  at::Tensor pos = at::arange(seq, at::kFloat).unsqueeze(0).expand({batch, seq}) + 3;
  at::Tensor freqs = pos.unsqueeze(-1) * inv;
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

// Output of `op(inputs)` and the gradients of <output, grad_out> w.r.t. each
// input (fresh leaves are made from `inputs`, which are left untouched).
struct ForwardBackward {
  at::Tensor out;
  std::vector<at::Tensor> grads;
};
inline ForwardBackward RunForwardBackward(
    const std::function<at::Tensor(std::vector<at::Tensor>&)>& op,
    const std::vector<at::Tensor>& inputs, const at::Tensor& grad_out) {
  std::vector<at::Tensor> leaves;
  std::vector<at::Tensor> args;
  for (const at::Tensor& t : inputs) {
    leaves.push_back(t.detach().clone().requires_grad_(true));
    // An op may rotate its input in place, so it gets a non-leaf copy.
    args.push_back(leaves.back() * 1);
  }
  at::Tensor out = op(args);
  out.backward(grad_out);
  ForwardBackward r{out.detach().clone(), {}};
  for (const at::Tensor& l : leaves) r.grads.push_back(l.grad());
  return r;
}

// ‖a − b‖ / ‖b‖ in float32 on the CPU.
inline double RelErr(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor x = a.to(at::kCPU, at::kFloat), y = b.to(at::kCPU, at::kFloat);
  return ((x - y).norm() / y.norm().clamp_min(1e-30)).item<double>();
}

}  // namespace rigtune::model::testing

#endif  // RIGTUNE_TESTS_WORKER_MODEL_FUSED_OPS_REFERENCE_H_
