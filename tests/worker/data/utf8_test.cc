#include "worker/data/utf8.h"

#include "gtest/gtest.h"

namespace rigtune::data {
namespace {

TEST(Utf8Test, ValidTextIsUnchanged) {
  EXPECT_EQ(SanitizeUtf8("caf\xc3\xa9 \xf0\x9f\x98\x80"), "caf\xc3\xa9 \xf0\x9f\x98\x80");
}

TEST(Utf8Test, StrayByteBecomesOneReplacement) {
  EXPECT_EQ(SanitizeUtf8("a\xff"
                         "b"),
            "a\xef\xbf\xbd"
            "b");
}

TEST(Utf8Test, TruncatedSequenceBecomesOneReplacement) {
  EXPECT_EQ(SanitizeUtf8("\xe2\x82"), "\xef\xbf\xbd");
}

TEST(Utf8Test, OverlongEncodingReplacesEachByte) {
  EXPECT_EQ(SanitizeUtf8("\xc0\xaf"), "\xef\xbf\xbd\xef\xbf\xbd");
}

TEST(Utf8Test, SurrogateReplacesEachByte) {
  EXPECT_EQ(SanitizeUtf8("\xed\xa0\x80"), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
}

TEST(Utf8Test, DetectsInvalidText) {
  EXPECT_TRUE(IsValidUtf8("ok \xe6\x97\xa5"));
  EXPECT_FALSE(IsValidUtf8("\xe6\x97"));
}

TEST(Utf8Test, NelIsWhitespace) {
  EXPECT_TRUE(IsUnicodeWhitespace(0x85));
  EXPECT_FALSE(IsUnicodeWhitespace('x'));
}

}  // namespace
}  // namespace rigtune::data
