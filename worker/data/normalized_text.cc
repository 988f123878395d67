#include "worker/data/normalized_text.h"

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

}  // namespace rigtune::data
