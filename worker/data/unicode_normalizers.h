// Unicode normalizers: NFD, NFKD, NFC, NFKC and Lowercase, as Hugging Face
// tokenizers applies them.
//
// Hugging Face normalizes with the `unicode-normalization-alignments` crate,
// whose tables are those of Unicode 9.0, and lowercases with Rust's
// `char::to_lowercase` (per character: no final-sigma rule, 'İ' becomes
// "i\u0307"; Rust's Unicode 17 data, which is ICU 72's simple lowercase
// mapping plus a short table of later additions). rigtune takes the
// normalization data from ICU and limits it to the characters Unicode 9.0
// assigned (normalization data of an assigned character never changes), then
// runs the same decomposition, canonical reordering and recomposition steps,
// so that both the text and the alignment of every output character to the
// input match. Example:
//
//   NormalizedText t = NormalizedText::FromOriginal("e\u0301!", 0);
//   (*NewUnicodeNormalizer(UnicodeForm::kNfc))->Normalize(&t);
//   // t.text == "\u00e9!", t.source == {0, 0, 3}
#ifndef RIGTUNE_WORKER_DATA_UNICODE_NORMALIZERS_H_
#define RIGTUNE_WORKER_DATA_UNICODE_NORMALIZERS_H_

#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/normalized_text.h"
#include "worker/data/normalizers.h"

namespace rigtune::data {

enum class UnicodeForm { kNfd, kNfkd, kNfc, kNfkc };

// The characters of `text` (valid UTF-8) in normalization form `form`, with
// Hugging Face's alignment changes. Fails when ICU's data cannot be loaded.
absl::StatusOr<std::vector<CharChange>> NormalizeChars(std::string_view text, UnicodeForm form);

// The characters of `text` (valid UTF-8) lowercased as Rust's
// char::to_lowercase does, each extra character of a mapping marked inserted.
std::vector<CharChange> LowercaseChars(std::string_view text);

absl::StatusOr<std::unique_ptr<Normalizer>> NewUnicodeNormalizer(UnicodeForm form);
std::unique_ptr<Normalizer> NewLowercaseNormalizer();

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_UNICODE_NORMALIZERS_H_
