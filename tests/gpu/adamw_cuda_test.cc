// The multi-tensor AdamW and sum-of-squares CUDA kernels against their CPU
// twin (kernels/adamw_cpu.cc), and the engine's AdamW / gradient norm on a
// CUDA device (fused path) against the same on the CPU (ATen reference
// path), over several steps. The kernels avoid fused multiply-adds, so the
// twin comparison is exact (and within 1e-6 relative, the bound the engine
// comparison uses). Skipped without a CUDA device or build.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <vector>

#include "kernels/adamw.h"
#include "tests/gpu/skip_without_cuda.h"
#include "worker/train/fused_adamw.h"
#include "worker/train/optimizer.h"

namespace rigtune::train {
namespace {

double RelErr(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.cpu().to(at::kDouble), y = b.cpu().to(at::kDouble);
  const double scale = std::max(y.abs().max().item<double>(), 1e-30);
  return (x - y).abs().max().item<double>() / scale;
}

// Odd sizes: empty, one element, chunk edges (4096, 16384) and a tensor of
// several million elements, so blocks of many tensors share one launch.
std::vector<at::Tensor> MakeParams() {
  at::manual_seed(7);
  std::vector<at::Tensor> ps;
  for (int64_t n : {1, 0, 4095, 4096, 4097, 16385, 100003}) ps.push_back(at::randn({n}));
  ps.push_back(at::randn({64, 4096}));  // an A of r = 64
  ps.push_back(at::randn({11008, 64}));  // a B
  return ps;
}

std::vector<at::Tensor> To(const std::vector<at::Tensor>& ts, at::Device d) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& t : ts) out.push_back(t.to(d).clone());
  return out;
}

TEST(AdamWCuda, KernelMatchesCpuTwinOverSteps) {
  SKIP_WITHOUT_CUDA();
  for (const double beta1 : {0.9, 0.3}) {
    for (const double wd : {0.0, 0.1}) {
      SCOPED_TRACE(::testing::Message() << "beta1=" << beta1 << " wd=" << wd);
      std::vector<at::Tensor> cpu_p = MakeParams();
      std::vector<at::Tensor> gpu_p = To(cpu_p, at::kCUDA);
      std::vector<at::Tensor> cpu_m, cpu_v, gpu_m, gpu_v;
      for (const at::Tensor& p : cpu_p) {
        cpu_m.push_back(at::zeros_like(p));
        cpu_v.push_back(at::zeros_like(p));
        gpu_m.push_back(at::zeros_like(p).cuda());
        gpu_v.push_back(at::zeros_like(p).cuda());
      }
      const double scales[] = {1.0, 0.25, 1.0, 0.6, 1.0};
      for (int step = 1; step <= 5; ++step) {
        const kernels::AdamWScalars s =
            kernels::MakeAdamWScalars(1e-3, beta1, 0.999, 1e-8, wd, step, scales[step - 1]);
        std::vector<at::Tensor> cpu_g;
        for (const at::Tensor& p : cpu_p) cpu_g.push_back(at::randn_like(p));
        std::vector<at::Tensor> gpu_g = To(cpu_g, at::kCUDA);
        std::vector<kernels::AdamWTensor> cpu_t;
        for (size_t i = 0; i < cpu_p.size(); ++i) {
          cpu_t.push_back({cpu_p[i].data_ptr<float>(), cpu_g[i].data_ptr<float>(),
                           cpu_m[i].data_ptr<float>(), cpu_v[i].data_ptr<float>(),
                           cpu_p[i].numel()});
        }
        kernels::AdamWCpu(cpu_t.data(), static_cast<int64_t>(cpu_t.size()), s);
        ASSERT_TRUE(CanFuseAdamW(gpu_p, gpu_g, gpu_m, gpu_v));
        FusedAdamWStep(gpu_p, gpu_g, gpu_m, gpu_v, s);
      }
      for (size_t i = 0; i < cpu_p.size(); ++i) {
        if (cpu_p[i].numel() == 0) continue;
        EXPECT_LT(RelErr(gpu_p[i], cpu_p[i]), 1e-6) << "param " << i;
        EXPECT_LT(RelErr(gpu_m[i], cpu_m[i]), 1e-6) << "exp_avg " << i;
        EXPECT_LT(RelErr(gpu_v[i], cpu_v[i]), 1e-6) << "exp_avg_sq " << i;
        // Same roundings, no contraction on either side: the same bits.
        EXPECT_TRUE(at::equal(gpu_p[i].cpu(), cpu_p[i])) << "param " << i;
        EXPECT_TRUE(at::equal(gpu_v[i].cpu(), cpu_v[i])) << "exp_avg_sq " << i;
      }
    }
  }
}

// What the trainer runs: the global norm, the clipping coefficient, one
// AdamW::Step with it folded in, on CUDA (fused) and on the CPU (reference).
TEST(AdamWCuda, EngineStepMatchesCpuReferenceOverSteps) {
  SKIP_WITHOUT_CUDA();
  std::vector<at::Tensor> cpu_p = MakeParams();
  std::vector<at::Tensor> gpu_p = To(cpu_p, at::kCUDA);
  const AdamWOptions options{0.9, 0.999, 1e-8, 0.01};
  AdamW cpu_opt(cpu_p, options), gpu_opt(gpu_p, options);
  for (int step = 0; step < 6; ++step) {
    std::vector<at::Tensor> cpu_g;
    for (const at::Tensor& p : cpu_p) cpu_g.push_back(at::randn_like(p) * (step % 2 ? 0.001 : 1));
    std::vector<at::Tensor> gpu_g = To(cpu_g, at::kCUDA);
    const double cpu_norm = GlobalGradNorm(cpu_g);
    const double gpu_norm = GlobalGradNorm(gpu_g);
    EXPECT_NEAR(gpu_norm, cpu_norm, 1e-9 * cpu_norm) << "step " << step;
    ASSERT_TRUE(FusedSumOfSquares(gpu_g).has_value());
    cpu_opt.Step(cpu_g, 2e-3, ClipCoefficient(cpu_norm, 1.0));
    gpu_opt.Step(gpu_g, 2e-3, ClipCoefficient(gpu_norm, 1.0));
    // The gradients are read, never written.
    for (size_t i = 0; i < cpu_g.size(); ++i) ASSERT_TRUE(at::equal(gpu_g[i].cpu(), cpu_g[i]));
  }
  for (size_t i = 0; i < cpu_p.size(); ++i) {
    if (cpu_p[i].numel() == 0) continue;
    EXPECT_LT(RelErr(gpu_p[i], cpu_p[i]), 1e-6) << "param " << i;
    EXPECT_LT(RelErr(gpu_opt.exp_avg()[i], cpu_opt.exp_avg()[i]), 1e-6) << i;
    EXPECT_LT(RelErr(gpu_opt.exp_avg_sq()[i], cpu_opt.exp_avg_sq()[i]), 1e-6) << i;
  }
}

// The fused kernel writes through raw pointers; Step bumps the version
// counters itself so caches keyed on them (DoRA's row norms) see the update.
TEST(AdamWCuda, FusedStepBumpsParameterVersions) {
  SKIP_WITHOUT_CUDA();
  std::vector<at::Tensor> p = To(MakeParams(), at::kCUDA);
  std::vector<at::Tensor> g;
  for (const at::Tensor& t : p) g.push_back(at::randn_like(t));
  AdamW opt(p, AdamWOptions{});
  ASSERT_TRUE(CanFuseAdamW(p, g, opt.exp_avg(), opt.exp_avg_sq()));
  std::vector<int64_t> before;
  for (const at::Tensor& t : p) before.push_back(t._version());
  opt.Step(g, 1e-3);
  for (size_t i = 0; i < p.size(); ++i) EXPECT_GT(p[i]._version(), before[i]) << i;
}

TEST(AdamWCuda, SumOfSquaresIsDeterministicAndMatchesTheTwin) {
  SKIP_WITHOUT_CUDA();
  std::vector<at::Tensor> cpu_g = MakeParams();
  std::vector<at::Tensor> gpu_g = To(cpu_g, at::kCUDA);
  std::vector<kernels::FloatSpan> spans;
  for (const at::Tensor& g : cpu_g) spans.push_back({g.data_ptr<float>(), g.numel()});
  const double twin = kernels::SumOfSquaresCpu(spans.data(), static_cast<int64_t>(spans.size()));
  const double a = *FusedSumOfSquares(gpu_g), b = *FusedSumOfSquares(gpu_g);
  EXPECT_EQ(a, b);
  EXPECT_NEAR(a, twin, 1e-12 * twin);
  EXPECT_FALSE(FusedSumOfSquares({}).has_value());  // no device to run on
}

// Gradients the kernel cannot take (non-contiguous, bf16) fall back to the
// reference path with the same result.
TEST(AdamWCuda, NonContiguousGradientsTakeTheReferencePath) {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(3);
  at::Tensor p = at::randn({128, 96});
  at::Tensor pg = p.cuda();
  AdamW cpu_opt({p}, AdamWOptions{}), gpu_opt({pg}, AdamWOptions{});
  at::Tensor g = at::randn({96, 128});
  at::Tensor gg = g.cuda().t();  // non-contiguous on the device
  ASSERT_FALSE(CanFuseAdamW({pg}, {gg}, gpu_opt.exp_avg(), gpu_opt.exp_avg_sq()));
  ASSERT_FALSE(FusedSumOfSquares({gg}).has_value());
  cpu_opt.Step({g.t().contiguous()}, 1e-3, 0.5);
  gpu_opt.Step({gg}, 1e-3, 0.5);
  EXPECT_LT(RelErr(pg, p), 1e-6);
}

}  // namespace
}  // namespace rigtune::train
