// Normalizers: the `normalizer` section of tokenizer.json.
//
// A normalizer rewrites each stretch of input text that is not an added token
// (e.g. Llama 2's Sequence[Prepend("▁"), Replace(" ", "▁")]). Supported types:
// Sequence, Prepend, Replace (String or Regex pattern), Strip, and the Unicode
// normalization forms NFD, NFKD, NFC, NFKC and Lowercase (implemented in
// unicode_normalizers.h). Other types (BertNormalizer, StripAccents, Nmt,
// Precompiled, ...) are rejected when the tokenizer is loaded, with a message
// naming the type, rather than producing ids that differ from Hugging Face's.
// Example:
//
//   auto n = ParseNormalizer(json::parse(R"({"type":"Prepend","prepend":"▁"})"));
//   NormalizedText t = NormalizedText::FromOriginal("hi", 0);
//   (*n)->Normalize(&t);   // t.text == "▁hi"
#ifndef RIGTUNE_WORKER_DATA_NORMALIZERS_H_
#define RIGTUNE_WORKER_DATA_NORMALIZERS_H_

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/data/normalized_text.h"

namespace rigtune::data {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites `text` in place. Fails only on regex engine errors.
  virtual absl::Status Normalize(NormalizedText* text) const = 0;
};

// Builds the normalizer described by `config`; null JSON gives nullptr (no
// normalization). Unknown or unsupported types fail with InvalidArgument
// naming "normalizer.type" and the value.
absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const nlohmann::json& config);

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_NORMALIZERS_H_
