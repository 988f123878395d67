#include "worker/data/unicode_normalizers.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/data/normalizers.h"

namespace rigtune::data {
namespace {

using ::testing::ElementsAre;

NormalizedText Apply(const nlohmann::json& config, const std::string& text) {
  auto n = ParseNormalizer(config);
  EXPECT_TRUE(n.ok()) << n.status();
  NormalizedText t = NormalizedText::FromOriginal(text, 0);
  EXPECT_TRUE((*n)->Normalize(&t).ok());
  return t;
}

std::string Normalized(const std::string& type, const std::string& text) {
  return Apply({{"type", type}}, text).text;
}

TEST(UnicodeNormalizersTest, NfcComposesAndNfdDecomposes) {
  EXPECT_EQ(Normalized("NFC", "Cafe\u0301"), "Caf\u00e9");
  EXPECT_EQ(Normalized("NFD", "Caf\u00e9"), "Cafe\u0301");
  EXPECT_EQ(Normalized("NFC", "Caf\u00e9"), "Caf\u00e9");
  EXPECT_EQ(Normalized("NFD", "Cafe\u0301"), "Cafe\u0301");
  EXPECT_EQ(Normalized("NFC", "\u212b"), "\u00c5");  // Angstrom sign: a singleton
}

TEST(UnicodeNormalizersTest, CombiningMarksAreReorderedByClass) {
  // Dot below (class 220) goes before acute (230) whatever the input order.
  EXPECT_EQ(Normalized("NFD", "a\u0301\u0323"), "a\u0323\u0301");
  EXPECT_EQ(Normalized("NFC", "a\u0301\u0323"), "\u1ea1\u0301");
  EXPECT_EQ(Normalized("NFC", "\u1e9b\u0323"), "\u1e9b\u0323");
  EXPECT_EQ(Normalized("NFKC", "\u1e9b\u0323"), "\u1e69");
}

TEST(UnicodeNormalizersTest, CompatibilityCharactersFoldOnlyInKForms) {
  EXPECT_EQ(Normalized("NFKC", "\ufb01nance"), "finance");
  EXPECT_EQ(Normalized("NFKD", "\ufb03"), "ffi");
  EXPECT_EQ(Normalized("NFC", "\ufb01"), "\ufb01");
  EXPECT_EQ(Normalized("NFKC", "\uff28\uff49\uff01\uff11"), "Hi!1");
  EXPECT_EQ(Normalized("NFKC", "x\u00b2 \u00bd"), "x2 1\u20442");
  EXPECT_EQ(Normalized("NFKD", "\u01c4"), "DZ\u030c");
}

TEST(UnicodeNormalizersTest, HangulComposesFromJamoAndDecomposes) {
  EXPECT_EQ(Normalized("NFC", "\u1112\u1161\u11ab"), "\ud55c");
  EXPECT_EQ(Normalized("NFD", "\ud55c"), "\u1112\u1161\u11ab");
  EXPECT_EQ(Normalized("NFC", "\uac00\u11a8"), "\uac01");  // LV syllable + trailing T
  EXPECT_EQ(Normalized("NFKC", "\u3131"), "\u1100");       // compatibility jamo
}

TEST(UnicodeNormalizersTest, CharactersNewerThanUnicode9AreLeftAlone) {
  // U+1DF6 (combining mark, Unicode 10) has no class in Hugging Face's tables,
  // so it blocks nothing and is not reordered.
  EXPECT_EQ(Normalized("NFD", "a\u1df6\u0323"), "a\u1df6\u0323");
  // U+1F16C (Unicode 12) has a compatibility mapping Hugging Face lacks.
  EXPECT_EQ(Normalized("NFKC", "\U0001f16c"), "\U0001f16c");
  EXPECT_EQ(Normalized("NFKC", "\U0001f16a"), "MC");  // Unicode 6.1: folded
}

TEST(UnicodeNormalizersTest, LowercaseFollowsRustCharToLowercase) {
  EXPECT_EQ(Normalized("Lowercase", "HeLLo"), "hello");
  EXPECT_EQ(Normalized("Lowercase", "\u0130"), "i\u0307");
  // No final-sigma rule: each capital sigma becomes a medial sigma.
  EXPECT_EQ(Normalized("Lowercase", "\u03a3\u039f\u03a6\u039f\u03a3"),
            "\u03c3\u03bf\u03c6\u03bf\u03c3");
  EXPECT_EQ(Normalized("Lowercase", "\u01c5\u212a\u1e9e"), "\u01c6k\u00df");
  EXPECT_EQ(Normalized("Lowercase", "\ua7cb\U00010d50"), "\u0264\U00010d70");  // Unicode 16
}

TEST(UnicodeNormalizersTest, ComposedCharacterMapsToItsFirstOriginalCharacter) {
  // "xe" + U+0301 (2 bytes): é comes from the 'e' at byte 1.
  NormalizedText t = Apply({{"type", "NFC"}}, "xe\u0301y");
  EXPECT_EQ(t.text, "x\u00e9y");
  EXPECT_THAT(t.source, ElementsAre(0, 1, 1, 4));
}

TEST(UnicodeNormalizersTest, DecomposedCharactersMapToTheirOriginal) {
  // "a" then é (bytes 1-2): e and U+0301 both come from byte 1.
  NormalizedText t = Apply({{"type", "NFD"}}, "a\u00e9b");
  EXPECT_EQ(t.text, "ae\u0301b");
  EXPECT_THAT(t.source, ElementsAre(0, 1, 1, 1, 3));
  t = Apply({{"type", "NFKC"}}, "\ufb01x");
  EXPECT_EQ(t.text, "fix");
  EXPECT_THAT(t.source, ElementsAre(0, 0, 3));
  t = Apply({{"type", "Lowercase"}}, "\u0130!");
  EXPECT_THAT(t.source, ElementsAre(0, 0, 0, 2));
}

TEST(UnicodeNormalizersTest, SequenceCombinesUnicodeAndOtherSteps) {
  nlohmann::json config = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "NFKC"}}, {{"type", "Lowercase"}}, {{"type", "Prepend"}, {"prepend", "_"}}}}};
  NormalizedText t = Apply(config, "\uff28\u0130");
  EXPECT_EQ(t.text, "_hi\u0307");
  EXPECT_THAT(t.source, ElementsAre(0, 0, 3, 3, 3));
}

TEST(UnicodeNormalizersTest, AsciiIsUnchangedByEveryForm) {
  for (const char* form : {"NFD", "NFKD", "NFC", "NFKC"}) {
    NormalizedText t = Apply({{"type", form}}, "plain ASCII 123");
    EXPECT_EQ(t.text, "plain ASCII 123") << form;
    EXPECT_EQ(t.source.back(), 14u) << form;
  }
}

TEST(UnicodeNormalizersTest, TransformAlignsInsertedAndDroppedCharacters) {
  NormalizedText t = NormalizedText::FromOriginal("ab\u00e9c", 10);
  // 'X' replaces 'a', 'Y' is inserted, 'Z' replaces 'b' and drops 'é'.
  t.Transform({{'X', 0}, {'Y', 1}, {'Z', -1}, {'c', 0}});
  EXPECT_EQ(t.text, "XYZc");
  EXPECT_THAT(t.source, ElementsAre(10, 10, 11, 14));
}

}  // namespace
}  // namespace rigtune::data
