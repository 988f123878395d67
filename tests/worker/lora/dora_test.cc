// DoRA (worker/lora/dora.h) against the same formula written with plain ATen
// autograd ops, on an NF4 and a dense base: outputs and the gradients of x,
// A, B and the magnitude, with and without a dropout-style adapter input;
// DoRA linears stay out of grouped products; the row norms are computed once
// per adapter update (Note [DoRA norm cache]).
#include "worker/lora/dora.h"

#include "worker/lora/grouped_qlora.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "worker/train/optimizer.h"

namespace rigtune::lora {
namespace {

double RelErr(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).norm() / b.norm()).item<double>();
}

quant::FrozenWeight Base(bool dense, const at::Tensor& w) {
  auto f = quant::FrozenWeight::Make(w, dense ? quant::BaseFormat::kBf16 : quant::BaseFormat::kNf4,
                                     at::kFloat);
  EXPECT_TRUE(f.ok()) << f.status();
  return *f;
}

class DoraTest : public ::testing::TestWithParam<bool> {};  // dense base?

TEST_P(DoraTest, FreshAdapterStartsAtTheRowNormsAndChangesNothing) {
  at::manual_seed(1);
  quant::FrozenWeight w = Base(GetParam(), at::randn({24, 64}) * 0.1);
  const at::Tensor dense = *w.Dequantize(at::kFloat);
  QLoraLinear lin(w, at::Tensor(), LoraSpec{4, 2.0, 0.0, /*dora=*/true}, /*seed=*/7);
  ASSERT_TRUE(lin.is_dora());
  EXPECT_LT(RelErr(lin.magnitude(), at::linalg_vector_norm(dense, 2, at::IntArrayRef{1})), 1e-6);
  EXPECT_TRUE(lin.magnitude().requires_grad());
  DequantWorkspace ws;
  const at::Tensor x = at::randn({3, 64});
  EXPECT_LT(RelErr(lin.Forward(x, ws, true, 0), at::matmul(x, dense.t())), 1e-6);
}

TEST_P(DoraTest, MatchesTheAutogradReference) {
  at::manual_seed(2);
  quant::FrozenWeight w = Base(GetParam(), at::randn({32, 64}) * 0.1);
  const at::Tensor dense = *w.Dequantize(at::kFloat);
  const double s = 0.5;
  for (bool dropout : {false, true}) {
    SCOPED_TRACE(dropout ? "dropout" : "no dropout");
    at::Tensor a = (at::randn({4, 64}) * 0.1).requires_grad_(true);
    at::Tensor b = (at::randn({32, 4}) * 0.1).requires_grad_(true);
    at::Tensor m = (at::rand({32}) + 0.5).requires_grad_(true);
    at::Tensor x = at::randn({2, 5, 64}).requires_grad_(true);
    const at::Tensor mask = (at::rand_like(x) > 0.3).to(at::kFloat) / 0.7;
    at::Tensor h = dropout ? x * mask : x;
    DequantWorkspace ws;
    at::Tensor y = DoraProduct(x, h, a, b, m, w, ws, s);
    const at::Tensor g = at::randn_like(y);
    const auto grads = torch::autograd::grad({y}, {x, a, b, m}, {g});

    // PEFT's formula, the weight norm detached.
    const at::Tensor ar = a.detach().clone().requires_grad_(true);
    const at::Tensor br = b.detach().clone().requires_grad_(true);
    const at::Tensor mr = m.detach().clone().requires_grad_(true);
    const at::Tensor xr = x.detach().clone().requires_grad_(true);
    at::Tensor hr = dropout ? xr * mask : xr;
    const at::Tensor norm =
        at::linalg_vector_norm(dense + s * at::mm(br, ar), 2, at::IntArrayRef{1}).detach();
    const at::Tensor f = mr / norm;
    const at::Tensor base_h = at::matmul(hr, dense.t());
    const at::Tensor y_ref = at::matmul(xr, dense.t()) + (f - 1) * base_h +
                             f * s * at::matmul(at::matmul(hr, ar.t()), br.t());
    const auto ref = torch::autograd::grad({y_ref}, {xr, ar, br, mr}, {g});
    EXPECT_LT(RelErr(y, y_ref), 1e-5);
    for (size_t k = 0; k < ref.size(); ++k) EXPECT_LT(RelErr(grads[k], ref[k]), 1e-5) << k;
  }
}

TEST_P(DoraTest, DoraLinearsDoNotJoinGroupedProducts) {
  at::manual_seed(3);
  QLoraLinear lora(Base(GetParam(), at::randn({16, 64})), at::Tensor(), LoraSpec{4, 1.0, 0.0}, 1);
  QLoraLinear dora(Base(GetParam(), at::randn({16, 64})), at::Tensor(),
                   LoraSpec{4, 1.0, 0.0, /*dora=*/true}, 2);
  QLoraLinear other(Base(GetParam(), at::randn({8, 64})), at::Tensor(), LoraSpec{4, 1.0, 0.0}, 3);
  EXPECT_TRUE(CanGroup({&lora, &other}, true));  // any base format groups
  EXPECT_FALSE(CanGroup({&lora, &dora}, true));
}

TEST_P(DoraTest, RowNormsAreComputedOncePerAdapterUpdate) {
  at::manual_seed(4);
  quant::FrozenWeight w = Base(GetParam(), at::randn({24, 64}) * 0.1);
  const double s = 0.5;
  at::Tensor a = (at::randn({4, 64}) * 0.1).requires_grad_(true);
  at::Tensor b = (at::randn({24, 4}) * 0.1).requires_grad_(true);
  DequantWorkspace ws;
  DoraNormCache cache;
  const at::Tensor first = cache.Get(w, a, b, s, ws);
  EXPECT_TRUE(first.equal(DoraRowNorms(w, a, b, s, ws)));
  EXPECT_TRUE(cache.Get(w, a, b, s, ws).is_same(first));  // unchanged A, B: no recompute
  EXPECT_EQ(cache.computed(), 1);

  {  // An in-place write (what loading an adapter or a checkpoint does).
    c10::NoGradGuard no_grad;
    b.add_(0.05);
  }
  const at::Tensor second = cache.Get(w, a, b, s, ws);
  EXPECT_EQ(cache.computed(), 2);
  EXPECT_FALSE(second.equal(first));
  EXPECT_TRUE(second.equal(DoraRowNorms(w, a, b, s, ws)));

  // An optimizer update.
  train::AdamW opt({a, b}, train::AdamWOptions{});
  opt.Step({at::randn_like(a), at::randn_like(b)}, 1e-2);
  const at::Tensor third = cache.Get(w, a, b, s, ws);
  EXPECT_EQ(cache.computed(), 3);
  EXPECT_TRUE(third.equal(DoraRowNorms(w, a, b, s, ws)));

  // Other adapter tensors (a copy holding the same values) are another key.
  const at::Tensor a2 = a.detach().clone();
  EXPECT_TRUE(cache.Get(w, a2, b, s, ws).equal(third));
  EXPECT_EQ(cache.computed(), 4);
}

TEST_P(DoraTest, LinearForwardFollowsItsAdapterAcrossUpdates) {
  at::manual_seed(5);
  QLoraLinear lin(Base(GetParam(), at::randn({16, 64}) * 0.1), at::Tensor(),
                  LoraSpec{4, 2.0, 0.0, /*dora=*/true}, /*seed=*/9);
  DequantWorkspace ws;
  const at::Tensor x = at::randn({3, 64});
  auto uncached = [&] {
    return DoraProduct(x, x, lin.lora_a(), lin.lora_b(), lin.magnitude(), lin.weight(), ws,
                       lin.scale());
  };
  const at::Tensor y0 = lin.Forward(x, ws, true, 0);
  EXPECT_TRUE(lin.Forward(x, ws, true, 0).equal(y0));
  EXPECT_TRUE(y0.equal(uncached()));
  train::AdamW opt({lin.lora_a(), lin.lora_b(), lin.magnitude()}, train::AdamWOptions{});
  opt.Step(
      {at::randn_like(lin.lora_a()), at::randn_like(lin.lora_b()), at::randn_like(lin.magnitude())},
      1e-2);
  const at::Tensor y1 = lin.Forward(x, ws, true, 0);
  EXPECT_FALSE(y1.equal(y0));
  EXPECT_TRUE(y1.equal(uncached()));
}

INSTANTIATE_TEST_SUITE_P(Bases, DoraTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "bf16" : "nf4"; });

}  // namespace
}  // namespace rigtune::lora
