#include "worker/data/jinja/python_text.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "unicode/uchar.h"
#include "unicode/unistr.h"
#include "unicode/locid.h"
#include "worker/data/utf8.h"

namespace rigtune::data::jinja {
namespace {

// str.isspace: Unicode White_Space plus the information separators 0x1C-0x1F.
bool IsPythonSpace(uint32_t cp) { return IsUnicodeWhitespace(cp) || (cp >= 0x1C && cp <= 0x1F); }

std::vector<uint32_t> CodePoints(std::string_view s) {
  std::vector<uint32_t> out;
  for (size_t pos = 0; pos < s.size();) {
    if (ValidUtf8SequenceLength(s, pos) == 0) {
      out.push_back(static_cast<unsigned char>(s[pos++]));
    } else {
      out.push_back(DecodeUtf8(s, &pos));
    }
  }
  return out;
}

std::string FromCodePoints(const std::vector<uint32_t>& cps, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i) AppendUtf8(cps[i], &out);
  return out;
}

std::string IcuCase(std::string_view s, bool upper) {
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), s.size()));
  if (upper) {
    u.toUpper(icu::Locale::getRoot());
  } else {
    u.toLower(icu::Locale::getRoot());
  }
  std::string out;
  u.toUTF8String(out);
  return out;
}

}  // namespace

std::string PythonStrip(std::string_view s, StripSide side, std::optional<std::string_view> chars) {
  const std::vector<uint32_t> cps = CodePoints(s);
  std::vector<uint32_t> set;
  if (chars) set = CodePoints(*chars);
  auto strip = [&](uint32_t cp) {
    if (!chars) return IsPythonSpace(cp);
    for (uint32_t c : set) {
      if (c == cp) return true;
    }
    return false;
  };
  size_t begin = 0, end = cps.size();
  if (side != StripSide::kRight) {
    while (begin < end && strip(cps[begin])) ++begin;
  }
  if (side != StripSide::kLeft) {
    while (end > begin && strip(cps[end - 1])) --end;
  }
  return FromCodePoints(cps, begin, end);
}

std::vector<std::string> PythonSplit(std::string_view s, std::optional<std::string_view> sep,
                                     int64_t maxsplit, bool from_right) {
  std::vector<std::string> parts;
  if (sep) {
    if (from_right) {
      size_t end = s.size();
      while (maxsplit != 0) {
        const size_t found = end < sep->size() ? std::string_view::npos
                                               : s.rfind(*sep, end - sep->size());
        if (found == std::string_view::npos) break;
        parts.emplace_back(s.substr(found + sep->size(), end - found - sep->size()));
        end = found;
        --maxsplit;
      }
      parts.emplace_back(s.substr(0, end));
      return std::vector<std::string>(parts.rbegin(), parts.rend());
    }
    size_t begin = 0;
    while (maxsplit != 0) {
      const size_t found = s.find(*sep, begin);
      if (found == std::string_view::npos) break;
      parts.emplace_back(s.substr(begin, found - begin));
      begin = found + sep->size();
      --maxsplit;
    }
    parts.emplace_back(s.substr(begin));
    return parts;
  }
  const std::vector<uint32_t> cps = CodePoints(s);
  if (from_right) {
    size_t end = cps.size();
    while (true) {
      while (end > 0 && IsPythonSpace(cps[end - 1])) --end;
      if (end == 0) break;
      size_t begin = end;
      if (maxsplit == 0) {
        parts.push_back(FromCodePoints(cps, 0, end));
        break;
      }
      while (begin > 0 && !IsPythonSpace(cps[begin - 1])) --begin;
      parts.push_back(FromCodePoints(cps, begin, end));
      end = begin;
      --maxsplit;
    }
    return std::vector<std::string>(parts.rbegin(), parts.rend());
  }
  size_t begin = 0;
  while (true) {
    while (begin < cps.size() && IsPythonSpace(cps[begin])) ++begin;
    if (begin == cps.size()) break;
    if (maxsplit == 0) {
      size_t end = cps.size();
      while (end > begin && IsPythonSpace(cps[end - 1])) --end;
      parts.push_back(FromCodePoints(cps, begin, end));
      break;
    }
    size_t end = begin;
    while (end < cps.size() && !IsPythonSpace(cps[end])) ++end;
    parts.push_back(FromCodePoints(cps, begin, end));
    begin = end;
    --maxsplit;
  }
  return parts;
}

std::string PythonUpper(std::string_view s) { return IcuCase(s, true); }
std::string PythonLower(std::string_view s) { return IcuCase(s, false); }

std::string PythonTitle(std::string_view s) {
  std::string out;
  bool previous_cased = false;
  for (uint32_t cp : CodePoints(s)) {
    const bool cased = u_hasBinaryProperty(static_cast<UChar32>(cp), UCHAR_CASED);
    if (cased) {
      AppendUtf8(static_cast<uint32_t>(previous_cased ? u_tolower(static_cast<UChar32>(cp))
                                                      : u_totitle(static_cast<UChar32>(cp))),
                 &out);
    } else {
      AppendUtf8(cp, &out);
    }
    previous_cased = cased;
  }
  return out;
}

std::string PythonCapitalize(std::string_view s) {
  const std::vector<uint32_t> cps = CodePoints(s);
  if (cps.empty()) return "";
  std::string out;
  AppendUtf8(static_cast<uint32_t>(u_totitle(static_cast<UChar32>(cps[0]))), &out);
  return out + PythonLower(FromCodePoints(cps, 1, cps.size()));
}

std::optional<std::string> PythonReplace(std::string_view s, std::string_view old_text, std::string_view new_text,
                          int64_t count) {
  std::string out;
  if (old_text.empty()) {
    // Python inserts `new_text` between characters (and at both ends).
    const std::vector<uint32_t> cps = CodePoints(s);
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || static_cast<int64_t>(i) < count) out.append(new_text);
      if (out.size() > kMaxReplaceBytes) return std::nullopt;
      if (i < cps.size()) AppendUtf8(cps[i], &out);
    }
    return out;
  }
  size_t begin = 0;
  while (count != 0) {
    const size_t found = s.find(old_text, begin);
    if (found == std::string_view::npos) break;
    out.append(s.substr(begin, found - begin));
    if (out.size() + new_text.size() > kMaxReplaceBytes) return std::nullopt;
    out.append(new_text);
    begin = found + old_text.size();
    --count;
  }
  out.append(s.substr(begin));
  return out;
}

std::string PythonFloatRepr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  const std::string sci(buf, result.ptr);  // e.g. "-1.2345e+02"
  const size_t e = sci.find('e');
  const int exponent = std::atoi(sci.c_str() + e + 1);
  std::string mantissa = sci.substr(0, e);
  const bool negative = mantissa[0] == '-';
  if (negative) mantissa.erase(0, 1);
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits.push_back(c);
  }
  std::string out = negative ? "-" : "";
  if (exponent < -4 || exponent >= 16) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) absl::StrAppend(&out, ".", digits.substr(1));
    char exp[16];
    std::snprintf(exp, sizeof(exp), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return out + exp;
  }
  if (exponent < 0) {
    return absl::StrCat(out, "0.", std::string(static_cast<size_t>(-exponent - 1), '0'), digits);
  }
  const size_t int_digits = static_cast<size_t>(exponent) + 1;
  if (digits.size() <= int_digits) {
    return absl::StrCat(out, digits, std::string(int_digits - digits.size(), '0'), ".0");
  }
  return absl::StrCat(out, digits.substr(0, int_digits), ".", digits.substr(int_digits));
}

std::string PythonStringRepr(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (uint32_t cp : CodePoints(s)) {
    if (cp == static_cast<uint32_t>(quote) || cp == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(cp));
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp < 0x20 || cp == 0x7F) {
      char buf[16];
      std::snprintf(buf, sizeof(buf), "\\x%02x", cp & 0xFF);
      out += buf;
    } else {
      AppendUtf8(cp, &out);
    }
  }
  out.push_back(quote);
  return out;
}

std::string JsonQuote(std::string_view s, bool ensure_ascii) {
  std::string out = "\"";
  auto hex4 = [&out](uint32_t unit) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "\\u%04x", unit & 0xFFFF);
    out += buf;
  };
  for (uint32_t cp : CodePoints(s)) {
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (cp < 0x20 || (ensure_ascii && cp > 0x7E)) {
          if (cp >= 0x10000) {
            hex4(0xD800 + ((cp - 0x10000) >> 10));
            hex4(0xDC00 + ((cp - 0x10000) & 0x3FF));
          } else {
            hex4(cp);
          }
        } else {
          AppendUtf8(cp, &out);
        }
    }
  }
  out += "\"";
  return out;
}

size_t CodePointCount(std::string_view s) { return CodePoints(s).size(); }

}  // namespace rigtune::data::jinja
