#include "worker/data/added_vocabulary.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/data/utf8.h"

namespace rigtune::data {
namespace {

// Start of the character that ends just before `pos`.
size_t PreviousCharStart(std::string_view text, size_t pos) {
  size_t start = pos - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return start;
}

// Letters and digits: ASCII exactly, and every non-ASCII character except
// whitespace and general punctuation, which is what single_word needs.
bool IsWordChar(uint32_t cp) {
  if (cp < 0x80)
    return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
  if (IsUnicodeWhitespace(cp)) return false;
  return !(cp >= 0x2000 && cp <= 0x206F) && !(cp >= 0x3000 && cp <= 0x303F);
}

}  // namespace

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    by_id_[tokens_[i].id] = i;
    by_content_[tokens_[i].content] = i;
    if (tokens_[i].content.empty()) continue;
    const auto first = static_cast<uint8_t>(tokens_[i].content[0]);
    by_first_byte_[tokens_[i].normalized ? 1 : 0][first].push_back(i);
  }
  for (auto& pass : by_first_byte_) {
    for (auto& list : pass) {
      std::stable_sort(list.begin(), list.end(), [this](size_t a, size_t b) {
        return tokens_[a].content.size() > tokens_[b].content.size();
      });
    }
  }
}

absl::StatusOr<AddedVocabulary> AddedVocabulary::FromJson(const nlohmann::json& added_tokens) {
  std::vector<AddedToken> tokens;
  if (added_tokens.is_null()) return AddedVocabulary();
  if (!added_tokens.is_array()) {
    return absl::InvalidArgumentError("tokenizer.json: added_tokens: expected an array");
  }
  for (size_t i = 0; i < added_tokens.size(); ++i) {
    const nlohmann::json& entry = added_tokens[i];
    if (!entry.is_object() || !entry.contains("id") || !entry["id"].is_number_integer() ||
        !entry.contains("content") || !entry["content"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer.json: added_tokens[", i, "]: expected {\"id\": int, \"content\": str, ...}"));
    }
    AddedToken t;
    t.id = entry["id"].get<int32_t>();
    t.content = entry["content"].get<std::string>();
    t.single_word = entry.value("single_word", false);
    t.lstrip = entry.value("lstrip", false);
    t.rstrip = entry.value("rstrip", false);
    t.special = entry.value("special", false);
    t.normalized = entry.value("normalized", !t.special);
    tokens.push_back(std::move(t));
  }
  return AddedVocabulary(std::move(tokens));
}

void AddedVocabulary::Split(const NormalizedText& text, bool normalized_tokens,
                            std::vector<Segment>* out) const {
  const std::string& s = text.text;
  const auto& candidates = by_first_byte_[normalized_tokens ? 1 : 0];
  // Leftmost-longest, non-overlapping matches.
  struct Found {
    size_t begin, end, index;
  };
  std::vector<Found> found;
  for (size_t pos = 0; pos < s.size();) {
    const auto& list = candidates[static_cast<uint8_t>(s[pos])];
    bool hit = false;
    for (size_t index : list) {
      const std::string& c = tokens_[index].content;
      if (s.compare(pos, c.size(), c) == 0) {
        found.push_back({pos, pos + c.size(), index});
        pos += c.size();
        hit = true;
        break;
      }
    }
    if (!hit) ++pos;
  }
  size_t emitted = 0;  // end of the last accepted match
  for (const Found& f : found) {
    const AddedToken& token = tokens_[f.index];
    size_t begin = f.begin;
    size_t end = f.end;
    if (begin < emitted) continue;
    if (token.single_word) {
      size_t p = 0;
      bool glued_left = false;
      if (begin > 0) {
        p = PreviousCharStart(s, begin);
        glued_left = IsWordChar(DecodeUtf8(s, &p));
      }
      bool glued_right = false;
      if (end < s.size()) {
        p = end;
        glued_right = IsWordChar(DecodeUtf8(s, &p));
      }
      if (glued_left || glued_right) continue;
    }
    if (token.lstrip) {
      while (begin > emitted) {
        size_t start = PreviousCharStart(s, begin);
        size_t p = start;
        if (!IsUnicodeWhitespace(DecodeUtf8(s, &p))) break;
        begin = start;
      }
    }
    if (token.rstrip) {
      while (end < s.size()) {
        size_t p = end;
        if (!IsUnicodeWhitespace(DecodeUtf8(s, &p))) break;
        end = p;
      }
    }
    if (begin > emitted) out->push_back({text.Slice(emitted, begin), -1});
    out->push_back({text.Slice(begin, end), token.id});
    emitted = end;
  }
  if (emitted < s.size()) {
    out->push_back({emitted == 0 ? text : text.Slice(emitted, s.size()), -1});
  }
}

const AddedToken* AddedVocabulary::FindById(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

int32_t AddedVocabulary::IdOf(std::string_view content) const {
  auto it = by_content_.find(absl::string_view(content.data(), content.size()));
  return it == by_content_.end() ? -1 : tokens_[it->second].id;
}

}  // namespace rigtune::data
