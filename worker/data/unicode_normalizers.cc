#include "worker/data/unicode_normalizers.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utypes.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/data/utf8.h"

namespace rigtune::data {
namespace {

// ICU's normalization data (process-wide singletons owned by ICU).
struct IcuNormalizers {
  const icu::Normalizer2* nfd = nullptr;
  const icu::Normalizer2* nfkd = nullptr;
  const icu::Normalizer2* nfc = nullptr;
  absl::Status status;
};

const IcuNormalizers& Icu() {
  static const IcuNormalizers* const icu = [] {
    auto* n = new IcuNormalizers;
    UErrorCode code = U_ZERO_ERROR;
    n->nfd = icu::Normalizer2::getNFDInstance(code);
    n->nfkd = icu::Normalizer2::getNFKDInstance(code);
    n->nfc = icu::Normalizer2::getNFCInstance(code);
    if (U_FAILURE(code)) {
      n->status = absl::InternalError(
          absl::StrCat("ICU normalization data unavailable: ", u_errorName(code)));
    }
    return n;
  }();
  return *icu;
}

// True for characters assigned by Unicode 9.0, the version of Hugging Face's
// normalization tables; later characters neither decompose nor combine there.
bool InUnicode9(uint32_t c) {
  UVersionInfo age;
  u_charAge(static_cast<UChar32>(c), age);
  return age[0] != 0 && age[0] <= 9;
}

uint8_t CombiningClass(uint32_t c) {
  if (c < 0x300 || !InUnicode9(c)) return 0;
  return u_getCombiningClass(static_cast<UChar32>(c));
}

// Appends the full (recursive) canonical or compatibility decomposition of
// `c`, in mapping order.
void Decompose(const IcuNormalizers& icu, uint32_t c, bool compat, std::vector<uint32_t>* out) {
  icu::UnicodeString mapping;
  const icu::Normalizer2* n = compat ? icu.nfkd : icu.nfd;
  if (c < 0xA0 || !InUnicode9(c) || !n->getRawDecomposition(static_cast<UChar32>(c), mapping)) {
    out->push_back(c);
    return;
  }
  for (int32_t i = 0; i < mapping.length();) {
    const UChar32 d = mapping.char32At(i);
    i += U16_LENGTH(d);
    Decompose(icu, static_cast<uint32_t>(d), compat, out);
  }
}

// The primary composite of `a` followed by `b`, if Unicode 9.0 has one.
std::optional<uint32_t> Compose(const IcuNormalizers& icu, uint32_t a, uint32_t b) {
  if (!InUnicode9(a) || !InUnicode9(b)) return std::nullopt;
  const UChar32 r = icu.nfc->composePair(static_cast<UChar32>(a), static_cast<UChar32>(b));
  if (r < 0 || !InUnicode9(static_cast<uint32_t>(r))) return std::nullopt;
  return static_cast<uint32_t>(r);
}

// Lowercase mappings Rust's standard library (Unicode 17) has for characters
// newer than ICU 72's Unicode 15 data: code points first..last map to c+delta.
struct LowercaseRange {
  uint32_t first;
  uint32_t last;
  int32_t delta;
};
constexpr LowercaseRange kNewerLowercase[] = {
    {0x1C89, 0x1C89, 1},      {0xA7CB, 0xA7CB, 0x264 - 0xA7CB},
    {0xA7CC, 0xA7CC, 1},      {0xA7CE, 0xA7CE, 1},
    {0xA7D2, 0xA7D2, 1},      {0xA7D4, 0xA7D4, 1},
    {0xA7DA, 0xA7DA, 1},      {0xA7DC, 0xA7DC, 0x19B - 0xA7DC},
    {0x10D50, 0x10D65, 0x20}, {0x16EA0, 0x16EB8, 0x1B},
};

uint32_t LowercaseOf(uint32_t c) {
  const auto lower = static_cast<uint32_t>(u_tolower(static_cast<UChar32>(c)));
  if (lower != c || c < 0x1C89) return lower;
  for (const LowercaseRange& r : kNewerLowercase) {
    if (c >= r.first && c <= r.last) {
      return static_cast<uint32_t>(static_cast<int32_t>(c) + r.delta);
    }
  }
  return c;
}

struct Mark {
  uint32_t code_point;
  uint8_t ccc;
  int change;
};

// Decomposes every character (the first character of a decomposition
// replaces it, the others are inserted) and puts each run of combining marks
// in canonical order (stable by combining class).
std::vector<Mark> DecomposeText(const IcuNormalizers& icu, std::string_view text, bool compat) {
  std::vector<Mark> marks;
  marks.reserve(text.size());
  std::vector<uint32_t> parts;
  size_t pos = 0;
  while (pos < text.size()) {
    parts.clear();
    Decompose(icu, DecodeUtf8(text, &pos), compat, &parts);
    for (size_t i = 0; i < parts.size(); ++i) {
      marks.push_back({parts[i], CombiningClass(parts[i]), i == 0 ? 0 : 1});
    }
  }
  for (size_t i = 0; i < marks.size();) {
    if (marks[i].ccc == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < marks.size() && marks[j].ccc != 0) ++j;
    std::stable_sort(marks.begin() + static_cast<std::ptrdiff_t>(i),
                     marks.begin() + static_cast<std::ptrdiff_t>(j),
                     [](const Mark& a, const Mark& b) { return a.ccc < b.ccc; });
    i = j;
  }
  return marks;
}

// Canonical composition of decomposed `marks`. A character that absorbs
// another adds that one's change minus one (it now stands for one more input
// character), which is how the alignments crate reports a composition.
std::vector<CharChange> Recompose(const IcuNormalizers& icu, const std::vector<Mark>& marks) {
  std::vector<CharChange> out;
  out.reserve(marks.size());
  std::optional<CharChange> starter;
  std::vector<CharChange> pending;  // marks that did not combine with `starter`
  int last_ccc = -1;                // class of the last pending mark; -1: none
  for (const Mark& m : marks) {
    if (!starter.has_value()) {
      if (m.ccc == 0) {
        starter = CharChange{m.code_point, m.change};
      } else {
        out.push_back({m.code_point, m.change});
      }
      continue;
    }
    if (last_ccc < static_cast<int>(m.ccc) || last_ccc < 0) {
      if (std::optional<uint32_t> r = Compose(icu, starter->code_point, m.code_point)) {
        starter->code_point = *r;
        starter->change += m.change - 1;
        continue;
      }
      if (last_ccc < 0 && m.ccc == 0) {
        out.push_back(*starter);
        starter = CharChange{m.code_point, m.change};
        continue;
      }
    } else if (m.ccc == 0) {
      out.push_back(*starter);
      out.insert(out.end(), pending.begin(), pending.end());
      pending.clear();
      starter = CharChange{m.code_point, m.change};
      last_ccc = -1;
      continue;
    }
    pending.push_back({m.code_point, m.change});
    last_ccc = m.ccc;
  }
  if (starter.has_value()) out.push_back(*starter);
  out.insert(out.end(), pending.begin(), pending.end());
  return out;
}

bool IsAscii(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

class UnicodeFormNormalizer : public Normalizer {
 public:
  explicit UnicodeFormNormalizer(UnicodeForm form) : form_(form) {}
  absl::Status Normalize(NormalizedText* text) const override {
    if (IsAscii(text->text)) return absl::OkStatus();
    absl::StatusOr<std::vector<CharChange>> chars = NormalizeChars(text->text, form_);
    if (!chars.ok()) return chars.status();
    text->Transform(*chars);
    return absl::OkStatus();
  }

 private:
  UnicodeForm form_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  absl::Status Normalize(NormalizedText* text) const override {
    if (IsAscii(text->text)) {
      for (char& c : text->text) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      }
      return absl::OkStatus();
    }
    text->Transform(LowercaseChars(text->text));
    return absl::OkStatus();
  }
};

}  // namespace

absl::StatusOr<std::vector<CharChange>> NormalizeChars(std::string_view text, UnicodeForm form) {
  const IcuNormalizers& icu = Icu();
  if (!icu.status.ok()) return icu.status;
  const bool compat = form == UnicodeForm::kNfkd || form == UnicodeForm::kNfkc;
  std::vector<Mark> marks = DecomposeText(icu, text, compat);
  if (form == UnicodeForm::kNfc || form == UnicodeForm::kNfkc) return Recompose(icu, marks);
  std::vector<CharChange> out;
  out.reserve(marks.size());
  for (const Mark& m : marks) out.push_back({m.code_point, m.change});
  return out;
}

std::vector<CharChange> LowercaseChars(std::string_view text) {
  std::vector<CharChange> out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const uint32_t c = DecodeUtf8(text, &pos);
    if (c == 0x130) {  // the one unconditional multi-character lowercase mapping
      out.push_back({'i', 0});
      out.push_back({0x307, 1});
      continue;
    }
    out.push_back({LowercaseOf(c), 0});
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Normalizer>> NewUnicodeNormalizer(UnicodeForm form) {
  if (!Icu().status.ok()) return Icu().status;
  return std::unique_ptr<Normalizer>(new UnicodeFormNormalizer(form));
}

std::unique_ptr<Normalizer> NewLowercaseNormalizer() {
  return std::unique_ptr<Normalizer>(new LowercaseNormalizer);
}

}  // namespace rigtune::data
