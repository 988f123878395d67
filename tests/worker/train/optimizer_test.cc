#include "worker/train/optimizer.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

namespace rigtune::train {
namespace {

TEST(AdamWTest, TwoStepsMatchTheClosedForm) {
  at::Tensor p = at::tensor({1.0f, -2.0f});
  AdamW opt({p}, AdamWOptions{0.9, 0.99, 1e-8, 0.1});
  at::Tensor g1 = at::tensor({0.5f, 0.25f}), g2 = at::tensor({-0.5f, 1.0f});
  opt.Step({g1}, 0.01);
  opt.Step({g2}, 0.01);
  for (int i = 0; i < 2; ++i) {
    double x = i == 0 ? 1.0 : -2.0, m = 0, v = 0;
    const double gs[2] = {g1[i].item<double>(), g2[i].item<double>()};
    for (int t = 1; t <= 2; ++t) {
      x *= 1 - 0.01 * 0.1;
      m = 0.9 * m + 0.1 * gs[t - 1];
      v = 0.99 * v + 0.01 * gs[t - 1] * gs[t - 1];
      const double mhat = m / (1 - std::pow(0.9, t)), vhat = v / (1 - std::pow(0.99, t));
      x -= 0.01 * mhat / (std::sqrt(vhat) + 1e-8);
    }
    EXPECT_NEAR(p[i].item<double>(), x, 1e-6) << i;
  }
  EXPECT_EQ(opt.step(), 2);
}

TEST(LrScheduleTest, CosineWithWarmup) {
  auto s = LrSchedule::Create("cosine", 1.0, 10, 110);
  ASSERT_TRUE(s.ok());
  EXPECT_DOUBLE_EQ(s->LearningRate(0), 0.0);
  EXPECT_DOUBLE_EQ(s->LearningRate(5), 0.5);
  EXPECT_DOUBLE_EQ(s->LearningRate(10), 1.0);
  EXPECT_NEAR(s->LearningRate(60), 0.5, 1e-12);
  EXPECT_NEAR(s->LearningRate(110), 0.0, 1e-12);
}

TEST(LrScheduleTest, LinearAndConstant) {
  auto lin = LrSchedule::Create("linear", 2.0, 0, 100);
  auto con = LrSchedule::Create("constant", 2.0, 4, 100);
  ASSERT_TRUE(lin.ok() && con.ok());
  EXPECT_DOUBLE_EQ(lin->LearningRate(25), 1.5);
  EXPECT_DOUBLE_EQ(con->LearningRate(2), 1.0);
  EXPECT_DOUBLE_EQ(con->LearningRate(50), 2.0);
}

TEST(LrScheduleTest, UnknownKindNamesTheField) {
  auto s = LrSchedule::Create("polynomial", 1.0, 0, 10);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), ::testing::HasSubstr("optim.schedule"));
}

TEST(ClipGradNormTest, ScalesToMaxNormAndReturnsTheOriginal) {
  at::Tensor a = at::tensor({3.0f}), b = at::tensor({4.0f});
  const double norm = ClipGradNorm({a, b}, 1.0);
  EXPECT_NEAR(norm, 5.0, 1e-6);
  EXPECT_NEAR(a.item<double>(), 0.6, 1e-5);
  EXPECT_NEAR(b.item<double>(), 0.8, 1e-5);
}

TEST(ClipGradNormTest, ReducerSeesTheLocalSquaredNorm) {
  at::Tensor a = at::tensor({3.0f});
  double seen = 0;
  const double norm = ClipGradNorm({a}, 0, [&](double sq) {
    seen = sq;
    return sq + 16.0;  // another rank holds a 4
  });
  EXPECT_NEAR(seen, 9.0, 1e-6);
  EXPECT_NEAR(norm, 5.0, 1e-6);
  EXPECT_NEAR(a.item<double>(), 3.0, 1e-6);  // max_norm 0: no clipping
}

}  // namespace
}  // namespace rigtune::train
