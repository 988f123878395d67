// NormalizedText: a piece of text as it moves through the tokenizer, with the
// position in the caller's original string that every byte came from.
//
// Normalizers and pre-tokenizers rewrite text (prepend "▁", map bytes to
// printable characters, split on a regex); each output byte keeps the byte
// offset of the original character it was produced from. A token's start
// offset is therefore `source[first byte of the token]`, which is what label
// masking uses to decide whether a token belongs to the prompt or to the
// completion (see Note [Token ownership] in example_encoder.h). Example:
//
//   NormalizedText t = NormalizedText::FromOriginal("ab", 0);
//   t.Prepend("▁");      // t.text == "▁ab", t.source == {0, 0, 0, 0, 1}
#ifndef RIGTUNE_WORKER_DATA_NORMALIZED_TEXT_H_
#define RIGTUNE_WORKER_DATA_NORMALIZED_TEXT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace rigtune::data {

// One character of a rewrite, in Hugging Face's NormalizedString::transform
// convention: `change` 0 replaces the next input character, 1 inserts a new
// character after the previous one, and -n replaces the next input character
// and drops the n input characters after it.
struct CharChange {
  uint32_t code_point;
  int change;
};

struct NormalizedText {
  std::string text;
  std::vector<uint32_t> source;  // source.size() == text.size()

  // `text` as found at byte `base` of the original input.
  static NormalizedText FromOriginal(std::string_view text, uint32_t base);

  bool empty() const { return text.empty(); }
  // Original offset of the first byte; 0 for an empty text.
  uint32_t SourceStart() const { return source.empty() ? 0 : source.front(); }

  // Bytes [begin, end) with their sources.
  NormalizedText Slice(size_t begin, size_t end) const;
  // Appends `bytes`, all attributed to original offset `src`.
  void Append(std::string_view bytes, uint32_t src);
  // Appends bytes [begin, end) of `other` with their sources.
  void AppendFrom(const NormalizedText& other, size_t begin, size_t end);
  // Inserts `bytes` at the front, attributed to the first character's source.
  void Prepend(std::string_view bytes);
  // Replaces every occurrence of `from` (non-overlapping, left to right) with
  // `to`; the replacement inherits the source of the replaced bytes' start.
  void ReplaceAll(std::string_view from, std::string_view to);
  // Rewrites the whole text as `chars` (see CharChange). A replacing
  // character takes the source of the input character it replaces; an
  // inserted one takes the source of the input character before it (the
  // text's start for an insertion at the front), as Hugging Face aligns them.
  void Transform(const std::vector<CharChange>& chars);
};

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_NORMALIZED_TEXT_H_
