#include "worker/data/pre_tokenizers.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rigtune::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> PreTokenize(const nlohmann::json& config,
                                     std::vector<NormalizedText> pieces) {
  auto pre = ParsePreTokenizer(config);
  EXPECT_TRUE(pre.ok()) << pre.status();
  EXPECT_TRUE((*pre)->PreTokenize(&pieces).ok());
  std::vector<std::string> out;
  for (const NormalizedText& p : pieces) out.push_back(p.text);
  return out;
}

std::vector<std::string> PreTokenize(const nlohmann::json& config, const std::string& text) {
  return PreTokenize(config, {NormalizedText::FromOriginal(text, 0)});
}

nlohmann::json Split(const std::string& behavior, bool invert = false) {
  return {{"type", "Split"},
          {"pattern", {{"Regex", "\\d"}}},
          {"behavior", behavior},
          {"invert", invert}};
}

TEST(PreTokenizersTest, SplitIsolated) {
  EXPECT_THAT(PreTokenize(Split("Isolated"), "a12b3"), ElementsAre("a", "1", "2", "b", "3"));
}

TEST(PreTokenizersTest, SplitRemoved) {
  EXPECT_THAT(PreTokenize(Split("Removed"), "a12b3"), ElementsAre("a", "b"));
}

TEST(PreTokenizersTest, SplitMergedWithPrevious) {
  EXPECT_THAT(PreTokenize(Split("MergedWithPrevious"), "a12b3"), ElementsAre("a1", "2", "b3"));
}

TEST(PreTokenizersTest, SplitMergedWithNext) {
  EXPECT_THAT(PreTokenize(Split("MergedWithNext"), "a12b3"), ElementsAre("a", "1", "2b", "3"));
}

TEST(PreTokenizersTest, SplitContiguous) {
  EXPECT_THAT(PreTokenize(Split("Contiguous"), "a12b3"), ElementsAre("a", "12", "b", "3"));
}

TEST(PreTokenizersTest, SplitInvertedMergedWithNext) {
  EXPECT_THAT(PreTokenize(Split("MergedWithNext", true), "a12b3"), ElementsAre("a1", "2", "b3"));
}

TEST(PreTokenizersTest, Llama3PatternKeepsContractionsAndDigitTriples) {
  const nlohmann::json config = {
      {"type", "Split"},
      {"pattern",
       {{"Regex",
         R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
      {"behavior", "Isolated"}};
  EXPECT_THAT(PreTokenize(config, "I'LL pay 12345  now"),
              ElementsAre("I", "'LL", " pay", " ", "123", "45", " ", " now"));
}

TEST(PreTokenizersTest, NelCountsAsWhitespaceLikeOniguruma) {
  const nlohmann::json config = {
      {"type", "Split"}, {"pattern", {{"Regex", R"(\s+)"}}}, {"behavior", "Removed"}};
  EXPECT_THAT(PreTokenize(config,
                          "a\xc2\x85"
                          "b"),
              ElementsAre("a", "b"));
}

TEST(PreTokenizersTest, ByteLevelMapsSpaceAndAddsPrefix) {
  const nlohmann::json config = {
      {"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  EXPECT_THAT(PreTokenize(config, "hi there"), ElementsAre("\xc4\xa0hi", "\xc4\xa0there"));
}

TEST(PreTokenizersTest, MetaspaceFirstPrefixesOnlyTheStartOfTheText) {
  const nlohmann::json config = {{"type", "Metaspace"},
                                 {"replacement", "\xe2\x96\x81"},
                                 {"prepend_scheme", "first"},
                                 {"split", false}};
  EXPECT_THAT(PreTokenize(config, {NormalizedText::FromOriginal("a b", 0),
                                   NormalizedText::FromOriginal("c", 7)}),
              ElementsAre("\xe2\x96\x81"
                          "a\xe2\x96\x81"
                          "b",
                          "c"));
}

TEST(PreTokenizersTest, MetaspaceSplitKeepsReplacementWithNextWord) {
  const nlohmann::json config = {{"type", "Metaspace"},
                                 {"replacement", "\xe2\x96\x81"},
                                 {"prepend_scheme", "always"},
                                 {"split", true}};
  EXPECT_THAT(PreTokenize(config, "Hey  you"),
              ElementsAre("\xe2\x96\x81Hey", "\xe2\x96\x81", "\xe2\x96\x81you"));
}

TEST(PreTokenizersTest, UnknownTypeNamesTheField) {
  auto pre = ParsePreTokenizer({{"type", "BertPreTokenizer"}});
  ASSERT_FALSE(pre.ok());
  EXPECT_THAT(pre.status().ToString(), HasSubstr("pre_tokenizer.type \"BertPreTokenizer\""));
}

}  // namespace
}  // namespace rigtune::data
