// UTF-8 helpers shared by the tokenizer stages.
//
// Hugging Face tokenizers receive Python `str`, so bytes that are not valid
// UTF-8 never reach them. rigtune reads raw bytes from dataset files; before
// tokenizing, SanitizeUtf8 replaces each maximal invalid subpart with U+FFFD,
// exactly as Python's `bytes.decode("utf-8", errors="replace")` does. Example:
//
//   SanitizeUtf8("a\xffb\xe2\x82") == "a\uFFFDb\uFFFD"
#ifndef RIGTUNE_WORKER_DATA_UTF8_H_
#define RIGTUNE_WORKER_DATA_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace rigtune::data {

inline constexpr uint32_t kReplacementChar = 0xFFFD;

// Length in bytes of the valid UTF-8 sequence starting at `text[pos]`, or 0
// when the bytes there are not a valid sequence (including truncation).
size_t ValidUtf8SequenceLength(std::string_view text, size_t pos);

// True when every byte of `text` belongs to a valid UTF-8 sequence.
bool IsValidUtf8(std::string_view text);

// Copy of `text` with every maximal invalid subpart replaced by U+FFFD.
std::string SanitizeUtf8(std::string_view text);

// Decodes the character at `text[*pos]` (which must be valid UTF-8) and
// advances `*pos` past it.
uint32_t DecodeUtf8(std::string_view text, size_t* pos);

// Appends the UTF-8 encoding of `code_point` to `out`.
void AppendUtf8(uint32_t code_point, std::string* out);

// Unicode White_Space property (what Rust's char::is_whitespace and Python's
// str.isspace agree on for the characters tokenizers care about).
bool IsUnicodeWhitespace(uint32_t code_point);

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_UTF8_H_
