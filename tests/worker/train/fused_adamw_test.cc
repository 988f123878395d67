// The multi-tensor AdamW's CPU twin (kernels/adamw.h) against the ATen
// reference step (AdamW::Update), and the clipping coefficient folded into
// AdamW::Step against clipping the gradients first. The CUDA kernels are
// checked against the same twin in tests/gpu/adamw_cuda_test.cc.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <vector>

#include "kernels/adamw.h"
#include "worker/train/fused_adamw.h"
#include "worker/train/optimizer.h"

namespace rigtune::train {
namespace {

double RelErr(const at::Tensor& a, const at::Tensor& b) {
  const double scale = std::max(b.abs().max().item<double>(), 1e-30);
  return (a - b).abs().max().item<double>() / scale;
}

// Odd sizes, one empty tensor and one that spans several kernel chunks.
std::vector<at::Tensor> MakeParams(uint64_t seed) {
  at::manual_seed(seed);
  std::vector<at::Tensor> ps;
  for (int64_t n : {1, 7, 64, 0, 4097, 12345}) ps.push_back(at::randn({n}));
  ps.push_back(at::randn({33, 65}));
  return ps;
}

std::vector<at::Tensor> Clones(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& t : ts) out.push_back(t.clone());
  return out;
}

struct Case {
  AdamWOptions options;
  double lr;
};

class FusedAdamWTwinTest : public ::testing::TestWithParam<Case> {};

// Six steps, clipped on some: the twin's parameters and moments stay within
// float32 rounding (1e-6 relative) of the ATen step's.
TEST_P(FusedAdamWTwinTest, TwinMatchesTheReferenceStepOverSeveralSteps) {
  const Case c = GetParam();
  std::vector<at::Tensor> ref_params = MakeParams(1);
  std::vector<at::Tensor> twin_params = Clones(ref_params);
  AdamW ref(ref_params, c.options);
  std::vector<at::Tensor> m, v;
  for (const at::Tensor& p : twin_params) {
    m.push_back(at::zeros_like(p));
    v.push_back(at::zeros_like(p));
  }
  const double scales[] = {1.0, 0.37, 1.0, 0.05, 1.0, 0.9};
  for (int step = 1; step <= 6; ++step) {
    std::vector<at::Tensor> grads;
    for (const at::Tensor& p : ref_params) grads.push_back(at::randn_like(p) * 3);
    ref.Step(grads, c.lr, scales[step - 1]);
    std::vector<kernels::AdamWTensor> table;
    for (size_t i = 0; i < grads.size(); ++i) {
      table.push_back({twin_params[i].data_ptr<float>(), grads[i].data_ptr<float>(),
                       m[i].data_ptr<float>(), v[i].data_ptr<float>(), grads[i].numel()});
    }
    kernels::AdamWCpu(table.data(), static_cast<int64_t>(table.size()),
                      ref.Scalars(c.lr, scales[step - 1]));
  }
  for (size_t i = 0; i < ref_params.size(); ++i) {
    if (ref_params[i].numel() == 0) continue;
    EXPECT_LT(RelErr(twin_params[i], ref_params[i]), 1e-6) << "param " << i;
    EXPECT_LT(RelErr(m[i], ref.exp_avg()[i]), 1e-6) << "exp_avg " << i;
    EXPECT_LT(RelErr(v[i], ref.exp_avg_sq()[i]), 1e-6) << "exp_avg_sq " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Hyperparameters, FusedAdamWTwinTest,
    ::testing::Values(Case{AdamWOptions{0.9, 0.999, 1e-8, 0.0}, 2e-4},
                      Case{AdamWOptions{0.9, 0.99, 1e-6, 0.1}, 1e-2},
                      // β₁ < 0.5: torch.lerp's other branch.
                      Case{AdamWOptions{0.3, 0.95, 1e-8, 0.01}, 3e-3}));

// Folding the clipping coefficient into the step gives exactly what clipping
// the gradients in place and stepping gave.
TEST(AdamWGradScaleTest, FoldedScaleEqualsClippingFirst) {
  std::vector<at::Tensor> a_params = MakeParams(2);
  std::vector<at::Tensor> b_params = Clones(a_params);
  AdamW a(a_params, AdamWOptions{0.9, 0.999, 1e-8, 0.05});
  AdamW b(b_params, AdamWOptions{0.9, 0.999, 1e-8, 0.05});
  for (int step = 0; step < 3; ++step) {
    std::vector<at::Tensor> grads;
    for (const at::Tensor& p : a_params) grads.push_back(at::randn_like(p) * 10);
    std::vector<at::Tensor> clipped = Clones(grads);
    const double norm = ClipGradNorm(clipped, 1.0);
    a.Step(clipped, 1e-3);
    const double coef = ClipCoefficient(GlobalGradNorm(grads), 1.0);
    EXPECT_LT(coef, 1.0);
    EXPECT_DOUBLE_EQ(GlobalGradNorm(grads), norm);
    b.Step(grads, 1e-3, coef);
  }
  for (size_t i = 0; i < a_params.size(); ++i) {
    EXPECT_TRUE(at::equal(a_params[i], b_params[i])) << i;
    EXPECT_TRUE(at::equal(a.exp_avg_sq()[i], b.exp_avg_sq()[i])) << i;
  }
}

TEST(AdamWGradScaleTest, ClipCoefficient) {
  EXPECT_DOUBLE_EQ(ClipCoefficient(0.5, 1.0), 1.0);
  EXPECT_NEAR(ClipCoefficient(4.0, 1.0), 1.0 / (4.0 + 1e-6), 1e-15);
  EXPECT_DOUBLE_EQ(ClipCoefficient(100.0, 0.0), 1.0);  // max_norm 0: no clipping
}

TEST(SumOfSquaresTest, TwinMatchesTheReferenceNorm) {
  std::vector<at::Tensor> grads = MakeParams(3);
  std::vector<kernels::FloatSpan> spans;
  for (const at::Tensor& g : grads) spans.push_back({g.data_ptr<float>(), g.numel()});
  const double twin = kernels::SumOfSquaresCpu(spans.data(), static_cast<int64_t>(spans.size()));
  const double norm = GlobalGradNorm(grads);
  EXPECT_NEAR(twin, norm * norm, 1e-12 * twin);
}

TEST(FusedAdamWTest, CpuTensorsTakeTheReferencePath) {
  std::vector<at::Tensor> ps = MakeParams(4);
  EXPECT_FALSE(CanFuseAdamW(ps, ps, ps, ps));
  EXPECT_FALSE(FusedSumOfSquares(ps).has_value());
}

}  // namespace
}  // namespace rigtune::train
