#include "worker/data/example_encoder.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/data/char_tokenizer.h"

namespace rigtune::data {
namespace {

using ::rigtune::data::testing::CharTokenizerJson;
using ::rigtune::data::testing::kBos;
using ::rigtune::data::testing::kEos;
using ::rigtune::data::testing::MakeTokenizer;
using ::testing::ElementsAre;

constexpr int32_t X = kIgnoreLabel;

RenderedExample PromptAndAnswer() {
  RenderedExample r;
  r.text =
      "ab"
      "cd";
  r.completion_spans = {{2, 4}};
  r.add_bos = true;
  r.add_eos = true;
  return r;
}

TEST(ExampleEncoderTest, OnlyCompletionTokensAreTargets) {
  auto tok = MakeTokenizer(CharTokenizerJson());
  auto ex = EncodeRendered(*tok, PromptAndAnswer(), {false, 64});
  EXPECT_THAT(ex->input_ids, ElementsAre(kBos, 'a', 'b', 'c', 'd', kEos));
  EXPECT_THAT(ex->labels, ElementsAre(X, X, X, 'c', 'd', kEos));
}

TEST(ExampleEncoderTest, TrainOnPromptTrainsEverythingButTheFirstToken) {
  auto tok = MakeTokenizer(CharTokenizerJson());
  auto ex = EncodeRendered(*tok, PromptAndAnswer(), {true, 64});
  EXPECT_THAT(ex->labels, ElementsAre(X, 'a', 'b', 'c', 'd', kEos));
}

TEST(ExampleEncoderTest, TruncationIsCountedWithTheDroppedEos) {
  auto tok = MakeTokenizer(CharTokenizerJson());
  auto ex = EncodeRendered(*tok, PromptAndAnswer(), {false, 4});
  EXPECT_THAT(ex->input_ids, ElementsAre(kBos, 'a', 'b', 'c'));
  EXPECT_TRUE(ex->truncated);
  EXPECT_TRUE(ex->dropped_eos);
}

TEST(ExampleEncoderTest, FittingExampleIsNotTruncated) {
  auto tok = MakeTokenizer(CharTokenizerJson());
  auto ex = EncodeRendered(*tok, PromptAndAnswer(), {false, 6});
  EXPECT_FALSE(ex->truncated);
  EXPECT_EQ(ex->trained_tokens(), 3);
}

TEST(ExampleEncoderTest, SpecialTokensInsideSpansAreTargets) {
  auto tok = MakeTokenizer(CharTokenizerJson());
  RenderedExample r;
  r.text = "q<|eot_id|>a<|eot_id|>";
  r.completion_spans = {{11, r.text.size()}};
  auto ex = EncodeRendered(*tok, r, {false, 64});
  EXPECT_THAT(ex->labels, ElementsAre(X, X, 'a', testing::kEot));
}

TEST(ExampleEncoderTest, TinyContextIsRejected) {
  auto tok = MakeTokenizer(CharTokenizerJson());
  EXPECT_FALSE(EncodeRendered(*tok, PromptAndAnswer(), {false, 1}).ok());
}

}  // namespace
}  // namespace rigtune::data
