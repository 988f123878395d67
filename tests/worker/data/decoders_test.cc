#include "worker/data/decoders.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rigtune::data {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Decode(const nlohmann::json& config, std::vector<std::string> tokens) {
  auto decoder = ParseDecoder(config);
  EXPECT_TRUE(decoder.ok()) << decoder.status();
  EXPECT_TRUE((*decoder)->DecodeChain(&tokens).ok());
  return tokens;
}

TEST(DecodersTest, ByteLevelRestoresBytes) {
  EXPECT_THAT(Decode({{"type", "ByteLevel"}}, {"Hello", "\xc4\xa0world"}),
              ElementsAre("Hello world"));
}

TEST(DecodersTest, ByteLevelReplacesInvalidUtf8) {
  // "é" (U+00E9) is the symbol of byte 0xE9, a lone lead byte.
  EXPECT_THAT(Decode({{"type", "ByteLevel"}}, {"\xc3\xa9", "x"}), ElementsAre("\xef\xbf\xbdx"));
}

TEST(DecodersTest, ByteFallbackDecodesValidRuns) {
  EXPECT_THAT(Decode({{"type", "ByteFallback"}}, {"<0xE6>", "<0x97>", "<0xA5>", "a"}),
              ElementsAre("\xe6\x97\xa5", "a"));
}

TEST(DecodersTest, ByteFallbackInvalidRunGivesOneReplacementPerByte) {
  EXPECT_THAT(Decode({{"type", "ByteFallback"}}, {"<0xE6>", "<0x97>", "a"}),
              ElementsAre("\xef\xbf\xbd\xef\xbf\xbd", "a"));
}

TEST(DecodersTest, MetaspaceDropsReplacementOfFirstToken) {
  EXPECT_THAT(
      Decode({{"type", "Metaspace"}, {"replacement", "\xe2\x96\x81"}, {"prepend_scheme", "always"}},
             {"\xe2\x96\x81Hey", "\xe2\x96\x81you"}),
      ElementsAre("Hey", " you"));
}

TEST(DecodersTest, StripRemovesCountedCharacters) {
  EXPECT_THAT(Decode({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 1}}, {"  a  "}),
              ElementsAre(" a "));
}

TEST(DecodersTest, Llama2SequenceRoundTrips) {
  const nlohmann::json config = {
      {"type", "Sequence"},
      {"decoders",
       {{{"type", "Replace"}, {"pattern", {{"String", "\xe2\x96\x81"}}}, {"content", " "}},
        {{"type", "ByteFallback"}},
        {{"type", "Fuse"}},
        {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  EXPECT_THAT(Decode(config, {"\xe2\x96\x81Hi", "\xe2\x96\x81", "<0x41>"}), ElementsAre("Hi A"));
}

}  // namespace
}  // namespace rigtune::data
