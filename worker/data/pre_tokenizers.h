// Pre-tokenizers: the `pre_tokenizer` section of tokenizer.json.
//
// A pre-tokenizer cuts normalized text into pieces ("words") that the BPE
// model encodes independently; merges never cross a piece boundary.
// Supported types and the families that use them:
//   Split      regex or literal, behaviours Removed, Isolated,
//              MergedWithPrevious, MergedWithNext, Contiguous, `invert`
//              (Llama 3 and Qwen2 ship their split regex this way)
//   ByteLevel  optional GPT-2 regex split and `add_prefix_space`, then maps
//              every byte to its byte-level symbol (GPT-2, Llama 3, Qwen2)
//   Metaspace  spaces become the replacement ("▁"), prepend_scheme
//              always / first / never, optional split (Llama 2, Mistral)
//   Digits, Whitespace, WhitespaceSplit, Sequence
// Anything else fails at load time naming "pre_tokenizer.type". Example:
//
//   auto p = ParsePreTokenizer(json::parse(
//       R"({"type":"ByteLevel","add_prefix_space":false,"use_regex":true})"));
//   std::vector<NormalizedText> pieces = {NormalizedText::FromOriginal("a b", 0)};
//   (*p)->PreTokenize(&pieces);   // "a", "Ġb"
#ifndef RIGTUNE_WORKER_DATA_PRE_TOKENIZERS_H_
#define RIGTUNE_WORKER_DATA_PRE_TOKENIZERS_H_

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/data/normalized_text.h"

namespace rigtune::data {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces each piece by the pieces it splits into (empty pieces dropped).
  virtual absl::Status PreTokenize(std::vector<NormalizedText>* pieces) const = 0;
};

// Null JSON gives nullptr (the whole normalized text is one piece).
absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const nlohmann::json& config);

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_PRE_TOKENIZERS_H_
