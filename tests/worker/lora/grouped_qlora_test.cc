#include "worker/lora/grouped_qlora.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <stdexcept>
#include <vector>

namespace rigtune::lora {
namespace {

QLoraLinear RandomLinear(int64_t out, int64_t in, int64_t r, double dropout, uint64_t seed) {
  at::manual_seed(seed);
  auto w = quant::Nf4Tensor::Quantize(at::randn({out, in}) * 0.1);
  EXPECT_TRUE(w.ok()) << w.status();
  QLoraLinear lin(*w, at::Tensor(), LoraSpec{r, 2.0 / static_cast<double>(r), dropout}, seed);
  if (r > 0) {
    c10::NoGradGuard no_grad;
    lin.lora_b().normal_();
  }
  return lin;
}

double RelErr(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).norm() / b.norm()).item<double>();
}

std::vector<const QLoraLinear*> Pointers(const std::vector<QLoraLinear>& ls) {
  std::vector<const QLoraLinear*> p;
  for (const QLoraLinear& l : ls) p.push_back(&l);
  return p;
}

// Grouped vs each linear on its own: outputs side by side, the same input
// gradient and the same A/B gradients (ranks and out sizes differ per linear).
TEST(GroupedQLoraTest, MatchesSeparateLinears) {
  std::vector<QLoraLinear> ls;
  ls.push_back(RandomLinear(48, 40, 8, 0.0, 1));
  ls.push_back(RandomLinear(16, 40, 4, 0.0, 2));
  ls.push_back(RandomLinear(24, 40, 8, 0.0, 3));
  ASSERT_TRUE(CanGroup(Pointers(ls), /*training=*/true));
  DequantWorkspace ws;
  at::Tensor x = at::randn({3, 5, 40}).requires_grad_(true);
  at::Tensor y = GroupedForward(Pointers(ls), x, ws);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{3, 5, 88}));
  at::Tensor g = at::randn_like(y);
  y.backward(g);
  std::vector<at::Tensor> grad_a, grad_b;
  for (QLoraLinear& l : ls) {
    grad_a.push_back(l.lora_a().grad().clone());
    grad_b.push_back(l.lora_b().grad().clone());
    l.lora_a().mutable_grad().reset();
    l.lora_b().mutable_grad().reset();
  }

  at::Tensor x_ref = x.detach().clone().requires_grad_(true);
  std::vector<at::Tensor> parts;
  for (const QLoraLinear& l : ls) parts.push_back(l.Forward(x_ref, ws, true, 0));
  at::Tensor y_ref = at::cat(parts, -1);
  y_ref.backward(g);
  EXPECT_LT(RelErr(y, y_ref), 1e-6);
  EXPECT_LT(RelErr(x.grad(), x_ref.grad()), 1e-6);
  for (size_t i = 0; i < ls.size(); ++i) {
    EXPECT_LT(RelErr(grad_a[i], ls[i].lora_a().grad()), 1e-6) << i;
    EXPECT_LT(RelErr(grad_b[i], ls[i].lora_b().grad()), 1e-6) << i;
  }
}

// KeptGroupedForward against a dense ATen oracle (x·Wᵢᵀ + sᵢ·(x·Aᵢᵀ)·Bᵢᵀ,
// autograd): it hands back the kept product as it is, and backpropagates
// the oracle's gradients for x, every A and every B; also for one linear
// (Phi-3's fused gate_up_proj).
TEST(GroupedQLoraTest, KeptProductBackpropagatesAsTheDenseOracle) {
  for (size_t count : {size_t{2}, size_t{1}}) {
    std::vector<QLoraLinear> ls;
    ls.push_back(RandomLinear(24, 40, 8, 0.0, 21));
    if (count == 2) ls.push_back(RandomLinear(16, 40, 4, 0.0, 22));
    ASSERT_TRUE(CanRunAsOneProduct(Pointers(ls), /*training=*/true));
    EXPECT_EQ(CanGroup(Pointers(ls), true), count == 2);
    DequantWorkspace ws;
    at::manual_seed(23);
    const at::Tensor x0 = at::randn({2, 5, 40});
    at::Tensor kept;
    {
      c10::NoGradGuard no_grad;
      kept = GroupedForward(Pointers(ls), x0, ws);
    }
    at::Tensor x = x0.clone().requires_grad_(true);
    at::Tensor y = KeptGroupedForward(Pointers(ls), x, kept, ws);
    EXPECT_TRUE(at::equal(y, kept));
    at::Tensor g = at::randn_like(y);
    y.backward(g);

    at::Tensor x_ref = x0.clone().requires_grad_(true);
    std::vector<at::Tensor> parts, a_ref, b_ref;
    for (const QLoraLinear& l : ls) {
      const at::Tensor w = BaseWeightIn(l.weight(), ws, at::kFloat, at::kCPU).clone();
      a_ref.push_back(l.lora_a().detach().clone().requires_grad_(true));
      b_ref.push_back(l.lora_b().detach().clone().requires_grad_(true));
      parts.push_back(at::matmul(x_ref, w.t()) +
                      l.scale() * at::matmul(at::matmul(x_ref, a_ref.back().t()),
                                             b_ref.back().t()));
    }
    at::Tensor y_ref = at::cat(parts, -1);
    y_ref.backward(g);
    EXPECT_LT(RelErr(kept, y_ref), 1e-6);
    EXPECT_LT(RelErr(x.grad(), x_ref.grad()), 1e-6) << count;
    for (size_t i = 0; i < ls.size(); ++i) {
      EXPECT_LT(RelErr(ls[i].lora_a().grad(), a_ref[i].grad()), 1e-6) << i;
      EXPECT_LT(RelErr(ls[i].lora_b().grad(), b_ref[i].grad()), 1e-6) << i;
    }
  }
}

TEST(GroupedQLoraTest, KeptProductMustMatchTheInput) {
  std::vector<QLoraLinear> ls;
  ls.push_back(RandomLinear(8, 16, 2, 0.0, 24));
  ls.push_back(RandomLinear(8, 16, 2, 0.0, 25));
  DequantWorkspace ws;
  const at::Tensor x = at::randn({3, 16});
  EXPECT_THROW(KeptGroupedForward(Pointers(ls), x, at::zeros({3, 15}), ws),
               std::invalid_argument);
  EXPECT_THROW(KeptGroupedForward(Pointers(ls), x, at::zeros({3, 16}, at::kDouble), ws),
               std::invalid_argument);
}

// The output may be modified in place (RoPE rotates the fused Q/K/V rows):
// it must be the function's own tensor, not a view made inside it, and the
// gradient through the in-place op must still reach x and the adapters.
TEST(GroupedQLoraTest, OutputCanBeModifiedInPlace) {
  std::vector<QLoraLinear> ls;
  ls.push_back(RandomLinear(16, 24, 4, 0.0, 5));
  ls.push_back(RandomLinear(8, 24, 4, 0.0, 6));
  DequantWorkspace ws;
  at::Tensor x = at::randn({2, 3, 24}).requires_grad_(true);
  at::Tensor y = GroupedForward(Pointers(ls), x, ws);
  EXPECT_FALSE(y.is_view());
  y.mul_(3.0);
  y.sum().backward();
  at::Tensor x_ref = x.detach().clone().requires_grad_(true);
  std::vector<at::Tensor> parts;
  for (const QLoraLinear& l : ls) parts.push_back(l.Forward(x_ref, ws, true, 0));
  (at::cat(parts, -1) * 3.0).sum().backward();
  EXPECT_LT(RelErr(x.grad(), x_ref.grad()), 1e-6);
}

TEST(GroupedQLoraTest, WithoutAdaptersIsTheStackedBaseProduct) {
  std::vector<QLoraLinear> ls;
  ls.push_back(RandomLinear(8, 16, 0, 0.0, 4));
  ls.push_back(RandomLinear(12, 16, 0, 0.0, 5));
  DequantWorkspace ws;
  at::Tensor x = at::randn({4, 16}).requires_grad_(true);
  at::Tensor y = GroupedForward(Pointers(ls), x, ws);
  y.backward(at::ones_like(y));
  at::Tensor w =
      at::cat({*ls[0].weight().Dequantize(at::kFloat), *ls[1].weight().Dequantize(at::kFloat)});
  EXPECT_LT(RelErr(y, at::matmul(x.detach(), w.t())), 1e-6);
  EXPECT_LT(RelErr(x.grad(), at::ones({4, 20}).matmul(w)), 1e-6);
}

TEST(GroupedQLoraTest, DropoutInTrainingKeepsLinearsApart) {
  std::vector<QLoraLinear> ls;
  ls.push_back(RandomLinear(8, 16, 4, 0.1, 6));
  ls.push_back(RandomLinear(8, 16, 4, 0.1, 7));
  EXPECT_FALSE(CanGroup(Pointers(ls), /*training=*/true));
  EXPECT_TRUE(CanGroup(Pointers(ls), /*training=*/false));
}

}  // namespace
}  // namespace rigtune::lora
