#include "worker/data/tokenizer.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/data/char_tokenizer.h"

namespace rigtune::data {
namespace {

using ::rigtune::data::testing::CharTokenizerJson;
using ::rigtune::data::testing::Ids;
using ::rigtune::data::testing::kBos;
using ::rigtune::data::testing::kEos;
using ::rigtune::data::testing::MakeTokenizer;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

nlohmann::json WithMerges(std::vector<std::string> merged, nlohmann::json merges) {
  nlohmann::json spec = CharTokenizerJson();
  int id = 300;
  for (const std::string& token : merged) spec["model"]["vocab"][token] = id++;
  spec["model"]["merges"] = std::move(merges);
  return spec;
}

TEST(TokenizerTest, LowestRankMergeAppliesFirst) {
  auto tok = MakeTokenizer(WithMerges({"ab", "bc"}, {"b c", "a b"}));
  EXPECT_THAT(*tok->Encode("abc", false), ElementsAre('a', 301));
}

TEST(TokenizerTest, MergeOrderDecidesBetweenOverlappingPairs) {
  auto tok = MakeTokenizer(WithMerges({"ab", "bc"}, {"a b", "b c"}));
  EXPECT_THAT(*tok->Encode("abc", false), ElementsAre(300, 'c'));
}

TEST(TokenizerTest, MergesAcceptPairArrays) {
  auto tok = MakeTokenizer(WithMerges({"ab"}, nlohmann::json::array({{"a", "b"}})));
  EXPECT_THAT(*tok->Encode("ab", false), ElementsAre(300));
}

TEST(TokenizerTest, IgnoreMergesTakesWholePieceFromVocab) {
  nlohmann::json spec = WithMerges({"xyz"}, nlohmann::json::array());
  EXPECT_THAT(*MakeTokenizer(spec)->Encode("xyz", false), ElementsAre('x', 'y', 'z'));
  spec["model"]["ignore_merges"] = true;
  EXPECT_THAT(*MakeTokenizer(spec)->Encode("xyz", false), ElementsAre(300));
}

TEST(TokenizerTest, ByteFallbackEmitsUtf8Bytes) {
  nlohmann::json spec = CharTokenizerJson();
  spec["model"]["vocab"]["<0xE6>"] = 400;
  spec["model"]["vocab"]["<0x97>"] = 401;
  spec["model"]["vocab"]["<0xA5>"] = 402;
  spec["model"]["byte_fallback"] = true;
  EXPECT_THAT(*MakeTokenizer(spec)->Encode("a\xe6\x97\xa5", false),
              ElementsAre('a', 400, 401, 402));
}

TEST(TokenizerTest, FuseUnkMergesUnknownRuns) {
  nlohmann::json spec = CharTokenizerJson();
  EXPECT_THAT(*MakeTokenizer(spec)->Encode("\xc3\xa9\xc3\xa9"
                                           "a",
                                           false),
              ElementsAre(0, 0, 'a'));
  spec["model"]["fuse_unk"] = true;
  EXPECT_THAT(*MakeTokenizer(spec)->Encode("\xc3\xa9\xc3\xa9"
                                           "a",
                                           false),
              ElementsAre(0, 'a'));
}

TEST(TokenizerTest, SpecialTokensAreMatchedBeforeTheModel) {
  EXPECT_THAT(*MakeTokenizer(CharTokenizerJson())->Encode("a</s>b", false),
              ElementsAre('a', kEos, 'b'));
}

TEST(TokenizerTest, LongestAddedTokenWins) {
  nlohmann::json spec = CharTokenizerJson();
  spec["added_tokens"].push_back(
      {{"id", 500}, {"content", "</s>x"}, {"special", false}, {"normalized", false}});
  EXPECT_THAT(*MakeTokenizer(spec)->Encode("</s>x</s>", false), ElementsAre(500, kEos));
}

TEST(TokenizerTest, LstripAndRstripSwallowWhitespace) {
  nlohmann::json spec = CharTokenizerJson();
  spec["added_tokens"][1]["lstrip"] = true;
  spec["added_tokens"][1]["rstrip"] = true;
  auto enc = MakeTokenizer(spec)->EncodeWithOffsets("a  </s> b", false);
  EXPECT_THAT(enc->ids, ElementsAre('a', kEos, 'b'));
  EXPECT_THAT(enc->starts, ElementsAre(0, 1, 8));
}

TEST(TokenizerTest, SingleWordTokenIsNotMatchedInsideWords) {
  nlohmann::json spec = CharTokenizerJson();
  spec["added_tokens"].push_back(
      {{"id", 500}, {"content", "ab"}, {"single_word", true}, {"normalized", false}});
  EXPECT_THAT(*MakeTokenizer(spec)->Encode("ab cab", false), ElementsAre(500, ' ', 'c', 'a', 'b'));
}

TEST(TokenizerTest, PostProcessorAddsBosOnlyWithSpecialTokens) {
  nlohmann::json spec = CharTokenizerJson();
  spec["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {kBos}}, {"tokens", {"<s>"}}}}}}};
  auto tok = MakeTokenizer(spec);
  EXPECT_THAT(*tok->Encode("a", true), ElementsAre(kBos, 'a'));
  EXPECT_THAT(*tok->Encode("a", false), ElementsAre('a'));
}

TEST(TokenizerTest, DecodeCanSkipSpecialTokens) {
  auto tok = MakeTokenizer(CharTokenizerJson());
  const std::vector<int32_t> ids = {kBos, 'h', 'i', kEos};
  EXPECT_EQ(*tok->Decode(ids, false), "<s>hi</s>");
  EXPECT_EQ(*tok->Decode(ids, true), "hi");
}

TEST(TokenizerTest, DecodeRejectsIdsOutsideTheVocabulary) {
  const std::vector<int32_t> ids = {99999};
  EXPECT_THAT(MakeTokenizer(CharTokenizerJson())->Decode(ids, false).status().ToString(),
              HasSubstr("outside the vocabulary"));
}

TEST(TokenizerTest, InvalidUtf8IsReplacedBeforeEncoding) {
  nlohmann::json spec = CharTokenizerJson();
  spec["model"]["vocab"]["\xef\xbf\xbd"] = 450;
  EXPECT_THAT(*MakeTokenizer(spec)->Encode("a\xff", false), ElementsAre('a', 450));
}

TEST(TokenizerTest, UnsupportedNormalizerNamesTheField) {
  nlohmann::json spec = CharTokenizerJson();
  spec["normalizer"] = {{"type", "Precompiled"}};
  auto tok = Tokenizer::FromJson(spec.dump(), "");
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(tok.status().ToString(), HasSubstr("normalizer.type \"Precompiled\""));
}

TEST(TokenizerTest, MergeWithUnknownTokenNamesTheEntry) {
  auto tok = Tokenizer::FromJson(WithMerges({}, {"a q"}).dump(), "");
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(tok.status().ToString(), HasSubstr("model.merges[0]"));
}

TEST(TokenizerTest, ConfigTokenMissingFromVocabIsAnError) {
  auto tok = Tokenizer::FromJson(CharTokenizerJson().dump(), R"({"eos_token": "<eos>"})");
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(tok.status().ToString(), HasSubstr("eos_token"));
}

TEST(TokenizerTest, ConfigGivesBosEosAndPadFallsBackToEos) {
  auto tok = MakeTokenizer(CharTokenizerJson());
  EXPECT_EQ(tok->bos_id(), kBos);
  EXPECT_EQ(tok->eos_id(), kEos);
  EXPECT_EQ(tok->pad_id(), kEos);
  EXPECT_TRUE(tok->adds_bos());
  EXPECT_FALSE(tok->adds_eos());
}

TEST(TokenizerTest, LoadNamesMissingFile) {
  auto tok = Tokenizer::Load("/nonexistent/model");
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(tok.status().ToString(), HasSubstr("/nonexistent/model/tokenizer.json"));
}

TEST(TokenizerTest, OffsetsFollowTheNormalizer) {
  nlohmann::json spec = CharTokenizerJson();
  spec["model"]["vocab"]["\xe2\x96\x81"] = 460;  // ▁
  spec["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "Prepend"}, {"prepend", "\xe2\x96\x81"}},
        {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xe2\x96\x81"}}}}};
  auto enc = MakeTokenizer(spec)->EncodeWithOffsets("a b", false);
  EXPECT_THAT(enc->ids, ElementsAre(460, 'a', 460, 'b'));
  EXPECT_THAT(enc->starts, ElementsAre(0, 0, 1, 2));
}

}  // namespace
}  // namespace rigtune::data
