#include "worker/data/validation_split.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace rigtune::data {
namespace {

using ::testing::HasSubstr;

std::vector<Example> Numbered(int n) {
  std::vector<Example> out(n);
  for (int i = 0; i < n; ++i) {
    out[i].line = i + 1;
    out[i].completion = "example " + std::to_string(i + 1);
  }
  return out;
}

std::vector<int64_t> Lines(const std::vector<Example>& examples) {
  std::vector<int64_t> out;
  for (const Example& e : examples) out.push_back(e.line);
  return out;
}

TEST(ValidationSplitTest, SameSeedGivesTheSameSplit) {
  auto a = SplitForValidation(Numbered(50), 0.2, 7);
  auto b = SplitForValidation(Numbered(50), 0.2, 7);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(Lines(a->validation), Lines(b->validation));
  EXPECT_EQ(Lines(a->train), Lines(b->train));
  auto other = SplitForValidation(Numbered(50), 0.2, 8);
  ASSERT_TRUE(other.ok());
  EXPECT_NE(Lines(other->validation), Lines(a->validation));
}

TEST(ValidationSplitTest, PartsAreDisjointCompleteAndSized) {
  auto s = SplitForValidation(Numbered(50), 0.2, 7);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->validation.size(), 10u);
  EXPECT_EQ(s->train.size(), 40u);
  std::set<int64_t> all;
  for (int64_t l : Lines(s->validation)) all.insert(l);
  for (int64_t l : Lines(s->train)) all.insert(l);
  EXPECT_EQ(all.size(), 50u);
  // Both parts keep the file's order.
  EXPECT_TRUE(std::is_sorted(s->validation.begin(), s->validation.end(),
                             [](const Example& a, const Example& b) { return a.line < b.line; }));
  EXPECT_TRUE(std::is_sorted(s->train.begin(), s->train.end(),
                             [](const Example& a, const Example& b) { return a.line < b.line; }));
}

TEST(ValidationSplitTest, HoldsOutAtLeastOneExample) {
  auto s = SplitForValidation(Numbered(3), 0.01, 1);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->validation.size(), 1u);
  EXPECT_EQ(s->train.size(), 2u);
}

TEST(ValidationSplitTest, RejectsFractionsOutsideTheRange) {
  for (double f : {0.0, -0.1, 0.51, 1.0}) {
    auto s = SplitForValidation(Numbered(10), f, 1);
    ASSERT_FALSE(s.ok()) << f;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.status().message(), HasSubstr("dataset.validation_fraction"));
  }
}

TEST(ValidationSplitTest, RejectsADatasetTooSmallToSplit) {
  auto s = SplitForValidation(Numbered(1), 0.5, 1);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("at least 2"));
}

}  // namespace
}  // namespace rigtune::data
