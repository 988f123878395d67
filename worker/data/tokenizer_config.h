// TokenizerConfig: what rigtune reads from a model folder's
// tokenizer_config.json (and chat_template.jinja, which newer transformers
// versions write next to it and which then takes precedence).
//
// Token fields may be a string or an AddedToken object ({"content": ...}).
// Missing fields stay unset; `add_bos_token` / `add_eos_token` are optional
// because many configs rely on tokenizer.json's post-processor instead.
// Example:
//
//   {"bos_token": "<s>", "eos_token": {"content": "</s>"}, "add_bos_token": true,
//    "chat_template": "{{ bos_token }}{% for message in messages %}..."}
#ifndef RIGTUNE_WORKER_DATA_TOKENIZER_CONFIG_H_
#define RIGTUNE_WORKER_DATA_TOKENIZER_CONFIG_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace rigtune::data {

struct TokenizerConfig {
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<std::string> pad_token;
  std::optional<bool> add_bos_token;
  std::optional<bool> add_eos_token;
  std::string chat_template;         // empty when the model has none
  std::string chat_template_source;  // the file it came from, for messages
};

// Parses tokenizer_config.json text; `source` names the file in errors.
// Empty text gives an empty config. A list-form chat_template uses the entry
// named "default".
absl::StatusOr<TokenizerConfig> ParseTokenizerConfig(std::string_view json_text,
                                                     std::string_view source);

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_TOKENIZER_CONFIG_H_
