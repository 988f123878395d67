// Field readers for tokenizer.json / tokenizer_config.json sections.
//
// Every error names the field it is about, with the section as context, e.g.
// `tokenizer.json: pre_tokenizer.Split.pattern: expected {"String": ...} or
// {"Regex": ...}`. Example:
//
//   absl::StatusOr<std::string> t = JsonString(section, "type", "decoder");
#ifndef RIGTUNE_WORKER_DATA_TOKENIZER_JSON_H_
#define RIGTUNE_WORKER_DATA_TOKENIZER_JSON_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/data/regex.h"

namespace rigtune::data {

// config[key] as a string; fails when missing or not a string.
absl::StatusOr<std::string> JsonString(const nlohmann::json& config, std::string_view key,
                                       std::string_view context);

// config[key] as a bool, `fallback` when missing or null; fails on other types.
absl::StatusOr<bool> JsonBool(const nlohmann::json& config, std::string_view key, bool fallback,
                              std::string_view context);

// A tokenizer.json pattern: {"String": "literal"} or {"Regex": "pcre"}.
absl::StatusOr<std::unique_ptr<Regex>> ParsePattern(const nlohmann::json& pattern,
                                                    std::string_view context);

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_TOKENIZER_JSON_H_
