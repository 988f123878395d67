// AddedVocabulary: the `added_tokens` of tokenizer.json (special tokens such
// as <|eot_id|> or </s>, and any extra tokens), matched in the text before
// the BPE model runs so they are never split.
//
// Matching follows Hugging Face: tokens with `normalized: false` are found in
// the raw text first; the stretches between them are normalized, then tokens
// with `normalized: true` are found in the normalized text. At each position
// the longest token wins; matches do not overlap. `lstrip` / `rstrip` make a
// match swallow the whitespace before / after it, and `single_word` only
// accepts a match not glued to a letter or digit. Example:
//
//   AddedVocabulary added({{.id = 2, .content = "</s>", .special = true}});
//   std::vector<AddedVocabulary::Segment> segs;
//   added.Split(NormalizedText::FromOriginal("hi</s>", 0), false, &segs);
//   // segs: {"hi", -1}, {"</s>", 2}
#ifndef RIGTUNE_WORKER_DATA_ADDED_VOCABULARY_H_
#define RIGTUNE_WORKER_DATA_ADDED_VOCABULARY_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/data/normalized_text.h"

namespace rigtune::data {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

class AddedVocabulary {
 public:
  struct Segment {
    NormalizedText text;
    int32_t token_id = -1;  // -1: ordinary text for the model
  };

  AddedVocabulary() = default;
  explicit AddedVocabulary(std::vector<AddedToken> tokens);

  // Parses tokenizer.json's `added_tokens` array; errors name the entry.
  static absl::StatusOr<AddedVocabulary> FromJson(const nlohmann::json& added_tokens);

  // Cuts `text` at the tokens whose `normalized` flag equals
  // `normalized_tokens`, appending text and token segments in order.
  void Split(const NormalizedText& text, bool normalized_tokens, std::vector<Segment>* out) const;

  // nullptr when `id` is not an added token.
  const AddedToken* FindById(int32_t id) const;
  // -1 when `content` is not an added token.
  int32_t IdOf(std::string_view content) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }
  bool empty() const { return tokens_.empty(); }

 private:
  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<int32_t, size_t> by_id_;
  absl::flat_hash_map<std::string, size_t> by_content_;
  // Per pass and first byte: token indices, longest content first.
  std::array<std::array<std::vector<size_t>, 256>, 2> by_first_byte_;
};

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_ADDED_VOCABULARY_H_
