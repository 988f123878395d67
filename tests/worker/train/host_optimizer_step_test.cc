#include "worker/train/host_optimizer_step.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <vector>

namespace rigtune::train {
namespace {

// Three parameters, as three layers' adapter shards.
std::vector<at::Tensor> Params() {
  at::manual_seed(7);
  return {at::randn({5}), at::randn({8}), at::randn({3})};
}

std::vector<at::Tensor> Clone(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& t : ts) out.push_back(t.clone());
  return out;
}

TEST(HostOptimizerStepTest, TwoStepsOnTheThreadEqualAdamWStep) {
  const AdamWOptions options{0.9, 0.99, 1e-8, 0.1};
  std::vector<at::Tensor> p_ref = Params(), p_host = Clone(p_ref);
  AdamW ref(p_ref, options), host(p_host, options);
  HostOptimizerStep step;
  for (int s = 0; s < 2; ++s) {
    std::vector<at::Tensor> grads = Clone(p_ref);
    for (at::Tensor& g : grads) g.mul_(0.5 + s).sin_();
    std::vector<at::Tensor> host_grads = Clone(grads);
    ref.Step(grads, 0.01);
    step.Start(host, host_grads, 0.01);
    EXPECT_EQ(host.step(), s + 1);  // counted at once: the next step's dropout seeds use it
    step.WaitAll();
    for (size_t i = 0; i < p_ref.size(); ++i) {
      EXPECT_TRUE(at::equal(p_host[i], p_ref[i])) << "step " << s << " param " << i;
      EXPECT_TRUE(at::equal(host.exp_avg_sq()[i], ref.exp_avg_sq()[i]));
      // Zeroed for the next step's accumulation.
      EXPECT_EQ(host_grads[i].abs().sum().item<float>(), 0.0f);
    }
  }
}

TEST(HostOptimizerStepTest, WaitForReturnsOnceThatParameterIsUpdated) {
  std::vector<at::Tensor> params = Params(), before = Clone(params);
  AdamW opt(params, AdamWOptions{});
  HostOptimizerStep step;
  step.WaitFor(0);  // no step running: returns at once
  step.Start(opt, Clone(params), 0.1);
  step.WaitFor(1);
  EXPECT_FALSE(at::equal(params[0], before[0]));
  EXPECT_FALSE(at::equal(params[1], before[1]));
  EXPECT_TRUE(step.active());
  step.WaitAll();
  EXPECT_FALSE(step.active());
  EXPECT_FALSE(at::equal(params[2], before[2]));
}

}  // namespace
}  // namespace rigtune::train
