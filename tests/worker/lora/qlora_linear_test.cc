#include "worker/lora/qlora_linear.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <stdexcept>
#include <vector>

namespace rigtune::lora {
namespace {

quant::FrozenWeight RandomNf4(int64_t out, int64_t in, uint64_t seed) {
  at::manual_seed(seed);
  auto q = quant::Nf4Tensor::Quantize(at::randn({out, in}) * 0.1);
  EXPECT_TRUE(q.ok()) << q.status();
  return *q;
}

at::Tensor Dense(const quant::FrozenWeight& w) { return *w.Dequantize(at::kFloat); }

double RelErr(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).norm() / b.norm()).item<double>();
}

TEST(Nf4MatmulTest, ForwardAndInputGradientMatchDenseWeight) {
  quant::FrozenWeight w = RandomNf4(48, 80, 1);
  DequantWorkspace ws;
  at::Tensor x = at::randn({3, 5, 80}).requires_grad_(true);
  at::Tensor y = Nf4Matmul(x, w, ws);
  at::Tensor g = at::randn_like(y);
  y.backward(g);

  at::Tensor x_ref = x.detach().clone().requires_grad_(true);
  at::Tensor y_ref = at::matmul(x_ref, Dense(w).t());
  y_ref.backward(g);
  EXPECT_LT(RelErr(y, y_ref), 1e-6);
  EXPECT_LT(RelErr(x.grad(), x_ref.grad()), 1e-6);
}

TEST(Nf4MatmulTest, WorkspaceIsSharedAcrossShapes) {
  quant::FrozenWeight big = RandomNf4(64, 64, 2), small = RandomNf4(8, 16, 3);
  DequantWorkspace ws;
  at::Tensor x1 = at::randn({2, 64}), x2 = at::randn({2, 16});
  at::Tensor y1 = Nf4Matmul(x1, big, ws);
  const int64_t bytes = ws.bytes();
  at::Tensor y2 = Nf4Matmul(x2, small, ws);
  EXPECT_EQ(ws.bytes(), bytes);  // the smaller weight reuses the buffer
  EXPECT_LT(RelErr(y1, at::matmul(x1, Dense(big).t())), 1e-6);
  EXPECT_LT(RelErr(y2, at::matmul(x2, Dense(small).t())), 1e-6);
}

TEST(QLoraLinearTest, FreshAdapterLeavesOutputUnchanged) {
  quant::FrozenWeight w = RandomNf4(32, 40, 4);
  QLoraLinear lin(w, at::Tensor(), LoraSpec{8, 2.0, 0.0}, 7);
  DequantWorkspace ws;
  at::Tensor x = at::randn({4, 40});
  EXPECT_TRUE(at::equal(lin.lora_b(), at::zeros({32, 8})));
  EXPECT_LT(RelErr(lin.Forward(x, ws, true, 0), at::matmul(x, Dense(w).t())), 1e-6);
}

TEST(QLoraLinearTest, KaimingUniformInitOfA) {
  QLoraLinear lin(RandomNf4(16, 400, 5), at::Tensor(), LoraSpec{64, 1.0, 0.0}, 9);
  const double bound = 1.0 / std::sqrt(400.0);
  EXPECT_LE(lin.lora_a().abs().max().item<double>(), bound);
  EXPECT_GT(lin.lora_a().abs().max().item<double>(), 0.9 * bound);
  QLoraLinear same(RandomNf4(16, 400, 5), at::Tensor(), LoraSpec{64, 1.0, 0.0}, 9);
  EXPECT_TRUE(at::equal(lin.lora_a(), same.lora_a()));  // seeded
}

TEST(QLoraLinearTest, GradientsMatchDenseLora) {
  quant::FrozenWeight w = RandomNf4(24, 32, 6);
  at::Tensor bias = at::randn({24});
  QLoraLinear lin(w, bias, LoraSpec{4, 0.5, 0.0}, 11);
  {
    c10::NoGradGuard no_grad;
    lin.lora_b().normal_();
  }
  DequantWorkspace ws;
  at::Tensor x = at::randn({6, 32});
  at::Tensor y = lin.Forward(x, ws, true, 0);
  at::Tensor g = at::randn_like(y);
  y.backward(g);

  at::Tensor a = lin.lora_a().detach().clone().requires_grad_(true);
  at::Tensor b = lin.lora_b().detach().clone().requires_grad_(true);
  at::Tensor y_ref =
      at::matmul(x, Dense(w).t()) + bias + at::matmul(at::matmul(x, a.t()), b.t()) * 0.5;
  y_ref.backward(g);
  EXPECT_LT(RelErr(y, y_ref), 1e-6);
  EXPECT_LT(RelErr(lin.lora_a().grad(), a.grad()), 1e-6);
  EXPECT_LT(RelErr(lin.lora_b().grad(), b.grad()), 1e-6);
}

// The adapter folded into the base product (one autograd node) gives the
// dense formula's input gradient, with h = x and with a dropout mask (h ≠ x).
TEST(QLoraLinearTest, InputGradientMatchesDenseLora) {
  for (double dropout : {0.0, 0.5}) {
    quant::FrozenWeight w = RandomNf4(24, 32, 8);
    QLoraLinear lin(w, at::Tensor(), LoraSpec{4, 0.5, dropout}, 12);
    {
      c10::NoGradGuard no_grad;
      lin.lora_b().normal_();
    }
    DequantWorkspace ws;
    at::Tensor x = at::randn({2, 6, 32}).requires_grad_(true);
    at::Tensor y = lin.Forward(x, ws, true, 77);
    at::Tensor g = at::randn_like(y);
    y.backward(g);

    // The same mask, drawn the way Forward draws it.
    at::Tensor mask = at::ones_like(x);
    if (dropout > 0) {
      at::Generator gen = at::globalContext().defaultGenerator(x.device()).clone();
      gen.set_current_seed(77);
      mask = at::empty_like(x).bernoulli_(1 - dropout, gen).div_(1 - dropout);
    }
    at::Tensor x_ref = x.detach().clone().requires_grad_(true);
    at::Tensor a = lin.lora_a().detach(), b = lin.lora_b().detach();
    at::Tensor y_ref =
        at::matmul(x_ref, Dense(w).t()) + at::matmul(at::matmul(x_ref * mask, a.t()), b.t()) * 0.5;
    y_ref.backward(g);
    EXPECT_LT(RelErr(y, y_ref), 1e-6) << "dropout " << dropout;
    EXPECT_LT(RelErr(x.grad(), x_ref.grad()), 1e-6) << "dropout " << dropout;
  }
}

// Note [A product whose value is never read]: the gradient-only forward
// backpropagates as the dense LoRA oracle does (x, A, B), with and without
// an adapter, and its value is a zero stand-in of the output's shape.
TEST(QLoraLinearTest, GradientOnlyForwardBackpropagatesAsDenseLora) {
  for (int64_t r : {4, 0}) {
    quant::FrozenWeight w = RandomNf4(24, 40, 11);
    QLoraLinear lin(w, at::Tensor(), LoraSpec{r, r > 0 ? 2.0 / r : 0.0, 0.0}, 12);
    if (r > 0) {
      c10::NoGradGuard no_grad;
      lin.lora_b().normal_();
    }
    ASSERT_TRUE(lin.CanSkipValue(/*training=*/true));
    DequantWorkspace ws;
    at::manual_seed(13);
    at::Tensor x = at::randn({2, 3, 40}).requires_grad_(true);
    at::Tensor y = lin.GradientOnlyForward(x, ws);
    ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 3, 24}));
    EXPECT_EQ(y.abs().sum().item<double>(), 0.0);
    at::Tensor g = at::randn({2, 3, 24});
    y.backward(g);

    at::Tensor x_ref = x.detach().clone().requires_grad_(true);
    at::Tensor y_ref = at::matmul(x_ref, Dense(w).t());
    at::Tensor a_ref, b_ref;
    if (r > 0) {
      a_ref = lin.lora_a().detach().clone().requires_grad_(true);
      b_ref = lin.lora_b().detach().clone().requires_grad_(true);
      y_ref = y_ref + lin.scale() * at::matmul(at::matmul(x_ref, a_ref.t()), b_ref.t());
    }
    y_ref.backward(g);
    EXPECT_LT(RelErr(x.grad(), x_ref.grad()), 1e-6) << "r " << r;
    if (r > 0) {
      EXPECT_LT(RelErr(lin.lora_a().grad(), a_ref.grad()), 1e-6);
      EXPECT_LT(RelErr(lin.lora_b().grad(), b_ref.grad()), 1e-6);
    }
  }
}

TEST(QLoraLinearTest, GradientOnlyForwardRefusesWhatReadsTheProduct) {
  QLoraLinear biased(RandomNf4(8, 16, 14), at::zeros({8}), LoraSpec{2, 1.0, 0.0}, 15);
  QLoraLinear dropout(RandomNf4(8, 16, 16), at::Tensor(), LoraSpec{2, 1.0, 0.1}, 17);
  QLoraLinear dora(RandomNf4(8, 16, 18), at::Tensor(), LoraSpec{2, 1.0, 0.0, true}, 19);
  EXPECT_FALSE(biased.CanSkipValue(true));
  EXPECT_FALSE(dropout.CanSkipValue(true));
  EXPECT_TRUE(dropout.CanSkipValue(false));
  EXPECT_FALSE(dora.CanSkipValue(true));
  DequantWorkspace ws;
  EXPECT_THROW(biased.GradientOnlyForward(at::randn({2, 16}), ws), std::invalid_argument);
}

TEST(QLoraLinearTest, DropoutMaskIsAFunctionOfTheSeed) {
  QLoraLinear lin(RandomNf4(16, 16, 7), at::Tensor(), LoraSpec{4, 1.0, 0.5}, 3);
  {
    c10::NoGradGuard no_grad;
    lin.lora_b().normal_();
  }
  DequantWorkspace ws;
  at::Tensor x = at::randn({8, 16});
  c10::NoGradGuard no_grad;
  at::Tensor a = lin.Forward(x, ws, true, 123), b = lin.Forward(x, ws, true, 123);
  at::Tensor c = lin.Forward(x, ws, true, 124), eval = lin.Forward(x, ws, false, 123);
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_FALSE(at::equal(a, c));
  EXPECT_FALSE(at::equal(a, eval));  // no dropout outside training
}

}  // namespace
}  // namespace rigtune::lora
