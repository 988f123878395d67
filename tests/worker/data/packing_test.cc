#include "worker/data/packing.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rigtune::data {
namespace {

using ::testing::ElementsAre;

constexpr int32_t X = kIgnoreLabel;
constexpr int32_t kPad = 0;

EncodedExample Example(std::vector<int32_t> ids, std::vector<int32_t> labels) {
  EncodedExample ex;
  ex.input_ids = std::move(ids);
  ex.labels = std::move(labels);
  return ex;
}

const EncodedExample kA = Example({1, 2, 3}, {X, 2, 3});
const EncodedExample kB = Example({4, 5}, {X, 5});
const EncodedExample kC = Example({6, 7, 8, 9}, {X, X, 8, 9});

TEST(PackingTest, NextFitStartsANewRowWhenFull) {
  const std::vector<const EncodedExample*> all = {&kA, &kB, &kC};
  auto rows = PackExamples(all, 6);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_THAT(rows[0].input_ids, ElementsAre(1, 2, 3, 4, 5));
  EXPECT_THAT(rows[0].cu_seqlens, ElementsAre(0, 3, 5));
  EXPECT_THAT(rows[1].cu_seqlens, ElementsAre(0, 4));
}

TEST(PackingTest, PositionsRestartPerExample) {
  const std::vector<const EncodedExample*> all = {&kA, &kB};
  auto rows = PackExamples(all, 8);
  EXPECT_THAT(rows[0].position_ids, ElementsAre(0, 1, 2, 0, 1));
}

TEST(PackingTest, TargetsNeverCrossExampleBoundaries) {
  const std::vector<const EncodedExample*> all = {&kA, &kB};
  auto rows = PackExamples(all, 8);
  Batch b = MakeBatch({&rows[0]}, kPad);
  // Position 2 (last of A) must not predict B's first token 4.
  EXPECT_THAT(b.target_ids, ElementsAre(2, 3, X, 5, X));
  EXPECT_EQ(b.target_tokens, 3);
}

TEST(PackingTest, TargetsEqualTheUnpackedShift) {
  const std::vector<const EncodedExample*> all = {&kA, &kB, &kC};
  auto packed = PackExamples(all, 16);
  Batch p = MakeBatch({&packed[0]}, kPad);
  std::vector<int32_t> expected;
  for (const EncodedExample* ex : all) {
    for (size_t i = 0; i < ex->labels.size(); ++i) {
      expected.push_back(i + 1 < ex->labels.size() ? ex->labels[i + 1] : X);
    }
  }
  EXPECT_EQ(p.target_ids, expected);
}

TEST(PackingTest, SegmentsGiveTheBlockDiagonalMask) {
  const std::vector<const EncodedExample*> all = {&kA, &kB};
  auto rows = PackExamples(all, 8);
  Batch b = MakeBatch({&rows[0]}, kPad);
  EXPECT_THAT(b.segment_ids, ElementsAre(0, 0, 0, 1, 1));
}

TEST(PackingTest, PaddingFillsShortRows) {
  const std::vector<const EncodedExample*> all = {&kA, &kB};
  auto rows = OneExamplePerRow(all);
  Batch b = MakeBatch({&rows[0], &rows[1]}, kPad);
  EXPECT_EQ(b.seq_len, 3);
  EXPECT_THAT(b.input_ids, ElementsAre(1, 2, 3, 4, 5, kPad));
  EXPECT_THAT(b.attention_mask, ElementsAre(1, 1, 1, 1, 1, 0));
  EXPECT_THAT(b.labels, ElementsAre(X, 2, 3, X, 5, X));
  EXPECT_THAT(b.segment_ids, ElementsAre(0, 0, 0, 0, 0, -1));
  EXPECT_EQ(b.real_tokens, 5);
}

}  // namespace
}  // namespace rigtune::data
