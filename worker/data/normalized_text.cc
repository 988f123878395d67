#include "worker/data/normalized_text.h"

#include <utility>

#include "worker/data/utf8.h"

namespace rigtune::data {

NormalizedText NormalizedText::FromOriginal(std::string_view text, uint32_t base) {
  NormalizedText out;
  out.text.assign(text.data(), text.size());
  out.source.resize(text.size());
  for (size_t i = 0; i < text.size(); ++i) out.source[i] = base + static_cast<uint32_t>(i);
  return out;
}

NormalizedText NormalizedText::Slice(size_t begin, size_t end) const {
  NormalizedText out;
  out.text = text.substr(begin, end - begin);
  out.source.assign(source.begin() + static_cast<std::ptrdiff_t>(begin),
                    source.begin() + static_cast<std::ptrdiff_t>(end));
  return out;
}

void NormalizedText::Append(std::string_view bytes, uint32_t src) {
  text.append(bytes.data(), bytes.size());
  source.insert(source.end(), bytes.size(), src);
}

void NormalizedText::AppendFrom(const NormalizedText& other, size_t begin, size_t end) {
  text.append(other.text, begin, end - begin);
  source.insert(source.end(), other.source.begin() + static_cast<std::ptrdiff_t>(begin),
                other.source.begin() + static_cast<std::ptrdiff_t>(end));
}

void NormalizedText::Prepend(std::string_view bytes) {
  const uint32_t src = SourceStart();
  text.insert(0, bytes.data(), bytes.size());
  source.insert(source.begin(), bytes.size(), src);
}

void NormalizedText::ReplaceAll(std::string_view from, std::string_view to) {
  if (from.empty() || text.find(from) == std::string::npos) return;
  NormalizedText out;
  out.text.reserve(text.size());
  out.source.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t hit = text.find(from, pos);
    if (hit == std::string::npos) {
      out.AppendFrom(*this, pos, text.size());
      break;
    }
    out.AppendFrom(*this, pos, hit);
    out.Append(to, source[hit]);
    pos = hit + from.size();
  }
  *this = std::move(out);
}

namespace {

// Byte length of the UTF-8 character whose lead byte is `lead`.
size_t CharLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

}  // namespace

void NormalizedText::Transform(const std::vector<CharChange>& chars) {
  NormalizedText out;
  out.text.reserve(text.size());
  out.source.reserve(text.size());
  size_t pos = 0;  // next unconsumed byte of `text`
  const auto skip_char = [&] {
    if (pos < text.size()) pos += CharLength(static_cast<unsigned char>(text[pos]));
  };
  for (const CharChange& c : chars) {
    uint32_t src = SourceStart();
    if (c.change > 0) {
      if (pos > 0) {
        size_t start = pos - 1;
        while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        src = source[start];
      }
    } else {
      if (pos < source.size()) src = source[pos];
      skip_char();
      for (int i = 0; i < -c.change; ++i) skip_char();
    }
    const size_t before = out.text.size();
    AppendUtf8(c.code_point, &out.text);
    out.source.insert(out.source.end(), out.text.size() - before, src);
  }
  *this = std::move(out);
}

}  // namespace rigtune::data
