// The fused ops on the CPU (the kernels' reference twins behind autograd)
// against transformers' formulas in ATen ops: values and input gradients.
#include "worker/model/fused_ops.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <stdexcept>

#include "tests/worker/model/fused_ops_reference.h"

namespace rigtune::model {
namespace {

using testing::RelErr;
using testing::RunForwardBackward;

constexpr double kFloatTol = 1e-6;
constexpr double kBf16Tol = 1e-2;

struct Case {
  at::ScalarType dtype;
  double tol;
};
const Case kCases[] = {{at::kFloat, kFloatTol}, {at::kBFloat16, kBf16Tol}};

TEST(FusedOpsTest, RmsNormMatchesReferenceAndGradient) {
  for (const Case& c : kCases) {
    at::manual_seed(1);
    at::Tensor x = at::randn({3, 7, 96}).to(c.dtype);
    at::Tensor w = (1 + 0.1 * at::randn({96})).to(c.dtype);
    at::Tensor g = at::randn({3, 7, 96}).to(c.dtype);
    auto fused = RunForwardBackward([&](auto& a) { return FusedRmsNorm(a[0], w, 1e-5); }, {x}, g);
    auto ref = RunForwardBackward([&](auto& a) { return testing::RmsNormReference(a[0], w, 1e-5); },
                                  {x}, g);
    EXPECT_LT(RelErr(fused.out, ref.out), c.tol) << c.dtype;
    EXPECT_LT(RelErr(fused.grads[0], ref.grads[0]), c.tol) << c.dtype;
  }
}

TEST(FusedOpsTest, RmsNormTakesNonContiguousInput) {
  at::manual_seed(2);
  at::Tensor x = at::randn({40, 6}).t();  // [6, 40], column-major
  at::Tensor w = at::randn({40});
  EXPECT_LT(RelErr(FusedRmsNorm(x, w, 1e-6), testing::RmsNormReference(x, w, 1e-6)), kFloatTol);
}

TEST(FusedOpsTest, RotaryMatchesReferenceAndGradient) {
  for (const Case& c : kCases) {
    at::manual_seed(3);
    const int64_t heads = 3, hd = 10;
    auto tables = testing::RopeTables(2, 5, hd, c.dtype);
    at::Tensor x = at::randn({2, 5, heads * hd}).to(c.dtype);
    at::Tensor g = at::randn({2, 5, heads * hd}).to(c.dtype);
    auto fused = RunForwardBackward(
        [&](auto& a) { return RotaryInPlace(a[0], heads, tables[0], tables[1]); }, {x}, g);
    auto ref = RunForwardBackward(
        [&](auto& a) { return testing::RopeReference(a[0], heads, tables[0], tables[1]); }, {x}, g);
    EXPECT_LT(RelErr(fused.out, ref.out), c.tol) << c.dtype;
    EXPECT_LT(RelErr(fused.grads[0], ref.grads[0]), c.tol) << c.dtype;
  }
}

TEST(FusedOpsTest, RotaryWritesIntoItsInput) {
  auto tables = testing::RopeTables(1, 4, 8, at::kFloat);
  at::Tensor x = at::randn({1, 4, 16});
  const at::Tensor expected = testing::RopeReference(x, 2, tables[0], tables[1]);
  c10::NoGradGuard no_grad;
  at::Tensor y = RotaryInPlace(x, 2, tables[0], tables[1]);
  EXPECT_EQ(y.data_ptr(), x.data_ptr());
  EXPECT_LT(RelErr(x, expected), kFloatTol);
}

TEST(FusedOpsTest, RotaryLeavesColumnsPastItsHeads) {
  auto tables = testing::RopeTables(2, 3, 8, at::kFloat);
  at::Tensor x = at::randn({2, 3, 40});  // 2 rotated heads, then 24 columns (a v) left alone
  const at::Tensor expected = at::cat(
      {testing::RopeReference(x.narrow(-1, 0, 16), 2, tables[0], tables[1]), x.narrow(-1, 16, 24)},
      -1);
  c10::NoGradGuard no_grad;
  RotaryInPlace(x, 2, tables[0], tables[1]);
  EXPECT_LT(RelErr(x, expected), kFloatTol);
}

TEST(FusedOpsTest, RotaryRejectsTooManyHeads) {
  auto tables = testing::RopeTables(1, 4, 8, at::kFloat);
  at::Tensor x = at::randn({1, 4, 24});
  c10::NoGradGuard no_grad;
  EXPECT_THROW(RotaryInPlace(x, 4, tables[0], tables[1]), std::invalid_argument);
}

TEST(FusedOpsTest, SwigluMatchesReferenceAndGradients) {
  for (const Case& c : kCases) {
    at::manual_seed(4);
    at::Tensor gate = (3 * at::randn({4, 33})).to(c.dtype);
    at::Tensor up = at::randn({4, 33}).to(c.dtype);
    at::Tensor g = at::randn({4, 33}).to(c.dtype);
    auto fused =
        RunForwardBackward([&](auto& a) { return FusedSwiglu(a[0], a[1]); }, {gate, up}, g);
    auto ref = RunForwardBackward([&](auto& a) { return testing::SwigluReference(a[0], a[1]); },
                                  {gate, up}, g);
    EXPECT_LT(RelErr(fused.out, ref.out), c.tol) << c.dtype;
    EXPECT_LT(RelErr(fused.grads[0], ref.grads[0]), c.tol) << c.dtype;
    EXPECT_LT(RelErr(fused.grads[1], ref.grads[1]), c.tol) << c.dtype;
  }
}

TEST(FusedOpsTest, SwigluOverFusedGateUpMatchesReference) {
  for (const Case& c : kCases) {
    at::manual_seed(5);
    at::Tensor gate_up = (2 * at::randn({3, 2, 34})).to(c.dtype);
    at::Tensor g = at::randn({3, 2, 17}).to(c.dtype);
    auto fused = RunForwardBackward([&](auto& a) { return FusedSwiglu(a[0]); }, {gate_up}, g);
    auto ref = RunForwardBackward(
        [&](auto& a) {
          return testing::SwigluReference(a[0].narrow(-1, 0, 17), a[0].narrow(-1, 17, 17));
        },
        {gate_up}, g);
    EXPECT_LT(RelErr(fused.out, ref.out), c.tol) << c.dtype;
    EXPECT_LT(RelErr(fused.grads[0], ref.grads[0]), c.tol) << c.dtype;
  }
}

// With overwrite_input the gradient lands in the product's own storage
// (nothing new of its size is allocated), equals the allocating backward's
// bit for bit, and the product's version moves on, so a second backward
// through the graph is refused instead of reading the gradient as the product.
TEST(FusedOpsTest, SwigluBackwardOverwritesItsProductWhenAsked) {
  at::manual_seed(6);
  const at::Tensor x = at::randn({5, 8}).requires_grad_(true);
  const at::Tensor w = at::randn({12, 8});
  const at::Tensor g = at::randn({5, 6});
  auto run = [&](bool overwrite) {
    x.mutable_grad() = at::Tensor();
    at::Tensor product = at::matmul(x, w.t());  // a non-leaf temporary, as in the MLP
    const void* storage = product.data_ptr();
    const int64_t version = product._version();
    at::Tensor out = FusedSwiglu(product, overwrite);
    at::Tensor grad_product;
    product.register_hook([&](const at::Tensor& grad) { grad_product = grad; });
    out.backward(g, /*retain_graph=*/true);
    EXPECT_EQ(grad_product.data_ptr() == storage, overwrite);
    EXPECT_EQ(product._version() != version, overwrite);
    if (overwrite) {
      EXPECT_THROW(out.backward(g), c10::Error);
    }
    return x.grad().clone();
  };
  const at::Tensor allocating = run(false);
  const at::Tensor overwriting = run(true);
  EXPECT_TRUE(at::equal(allocating, overwriting));
}

TEST(FusedOpsTest, SwigluTakesNonContiguousInputs) {
  at::Tensor gate = at::randn({9, 5}).t(), up = at::randn({9, 5}).t();
  EXPECT_LT(RelErr(FusedSwiglu(gate, up), testing::SwigluReference(gate, up)), kFloatTol);
}

TEST(FusedOpsTest, UnsupportedDtypeNamesTheOp) {
  at::Tensor x = at::randn({2, 4}, at::kDouble);
  try {
    FusedRmsNorm(x, at::ones({4}, at::kDouble), 1e-6);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("FusedRmsNorm"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace rigtune::model
