// The `post_processor` section of tokenizer.json, reduced to what a single
// sequence needs: the special token ids placed before and after the text when
// encoding with add_special_tokens (e.g. Llama 3's TemplateProcessing adds
// <|begin_of_text|> in front). Supported: TemplateProcessing, ByteLevel (no
// ids), RobertaProcessing, BertProcessing and Sequence of these. Example:
//
//   {"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>"}},
//    {"Sequence":{"id":"A"}}], "special_tokens":{"<s>":{"ids":[1]}}}
//   -> prefix {1}, suffix {}
#ifndef RIGTUNE_WORKER_DATA_POST_PROCESSOR_H_
#define RIGTUNE_WORKER_DATA_POST_PROCESSOR_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace rigtune::data {

struct SpecialTokenTemplate {
  std::vector<int32_t> prefix;
  std::vector<int32_t> suffix;
};

// Null JSON gives an empty template. Errors name the field.
absl::StatusOr<SpecialTokenTemplate> ParsePostProcessor(const nlohmann::json& config);

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_POST_PROCESSOR_H_
