#include "client/render.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace rigtune::client {
namespace {

TEST(RenderTest, ValidationEventIsItsOwnLine) {
  rigtune::v1::JobEvent event;
  event.set_seq(7);
  auto* v = event.mutable_validation();
  v->set_step(20);
  v->set_loss(1.3104);
  v->set_perplexity(3.7074);
  v->set_tokens(5120);
  EXPECT_THAT(FormatEvent(event),
              ::testing::EndsWith("#7 validation step 20  loss 1.3104  perplexity 3.707  "
                                  "5120 tokens"));
}

}  // namespace
}  // namespace rigtune::client
