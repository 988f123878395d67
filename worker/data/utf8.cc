#include "worker/data/utf8.h"

namespace rigtune::data {
namespace {

// Allowed range of the second byte for each lead byte (Unicode table 3-7);
// later continuation bytes are always 0x80..0xBF.
bool SecondByteOk(unsigned char lead, unsigned char b) {
  switch (lead) {
    case 0xE0:
      return b >= 0xA0 && b <= 0xBF;
    case 0xED:
      return b >= 0x80 && b <= 0x9F;
    case 0xF0:
      return b >= 0x90 && b <= 0xBF;
    case 0xF4:
      return b >= 0x80 && b <= 0x8F;
    default:
      return b >= 0x80 && b <= 0xBF;
  }
}

size_t ExpectedLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// Number of bytes, starting at `pos`, that form a valid sequence or the
// longest valid prefix of one (at least 1). Sets *complete accordingly.
size_t ScanSequence(std::string_view text, size_t pos, bool* complete) {
  const auto lead = static_cast<unsigned char>(text[pos]);
  const size_t want = ExpectedLength(lead);
  *complete = false;
  if (want == 0) return 1;
  if (want == 1) {
    *complete = true;
    return 1;
  }
  size_t got = 1;
  while (got < want && pos + got < text.size()) {
    const auto b = static_cast<unsigned char>(text[pos + got]);
    const bool ok = got == 1 ? SecondByteOk(lead, b) : (b >= 0x80 && b <= 0xBF);
    if (!ok) break;
    ++got;
  }
  *complete = got == want;
  return got;
}

}  // namespace

size_t ValidUtf8SequenceLength(std::string_view text, size_t pos) {
  bool complete = false;
  const size_t n = ScanSequence(text, pos, &complete);
  return complete ? n : 0;
}

bool IsValidUtf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<unsigned char>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const size_t n = ValidUtf8SequenceLength(text, pos);
    if (n == 0) return false;
    pos += n;
  }
  return true;
}

std::string SanitizeUtf8(std::string_view text) {
  if (IsValidUtf8(text)) return std::string(text);
  std::string out;
  out.reserve(text.size() + 8);
  size_t pos = 0;
  while (pos < text.size()) {
    bool complete = false;
    const size_t n = ScanSequence(text, pos, &complete);
    if (complete) {
      out.append(text.substr(pos, n));
    } else {
      AppendUtf8(kReplacementChar, &out);
    }
    pos += n;
  }
  return out;
}

uint32_t DecodeUtf8(std::string_view text, size_t* pos) {
  const auto b0 = static_cast<unsigned char>(text[*pos]);
  if (b0 < 0x80) {
    ++*pos;
    return b0;
  }
  const size_t n = ExpectedLength(b0);
  uint32_t cp = b0 & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
  for (size_t i = 1; i < n; ++i) {
    cp = (cp << 6) | (static_cast<unsigned char>(text[*pos + i]) & 0x3F);
  }
  *pos += n;
  return cp;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsUnicodeWhitespace(uint32_t cp) {
  if (cp >= 0x09 && cp <= 0x0D) return true;
  switch (cp) {
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

}  // namespace rigtune::data
