#include "worker/data/tokenizer_json.h"

#include "absl/strings/str_cat.h"

namespace rigtune::data {

absl::StatusOr<std::string> JsonString(const nlohmann::json& config, std::string_view key,
                                       std::string_view context) {
  if (!config.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json: ", std::string(context), ": expected an object"));
  }
  auto it = config.find(std::string(key));
  if (it == config.end() || !it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", std::string(context), ".",
                                                   std::string(key), ": expected a string"));
  }
  return it->get<std::string>();
}

absl::StatusOr<bool> JsonBool(const nlohmann::json& config, std::string_view key, bool fallback,
                              std::string_view context) {
  auto it = config.find(std::string(key));
  if (it == config.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", std::string(context), ".",
                                                   std::string(key), ": expected true or false"));
  }
  return it->get<bool>();
}

absl::StatusOr<std::unique_ptr<Regex>> ParsePattern(const nlohmann::json& pattern,
                                                    std::string_view context) {
  if (pattern.is_object() && pattern.size() == 1) {
    if (auto it = pattern.find("String"); it != pattern.end() && it->is_string()) {
      return Regex::Literal(it->get<std::string>());
    }
    if (auto it = pattern.find("Regex"); it != pattern.end() && it->is_string()) {
      absl::StatusOr<std::unique_ptr<Regex>> re = Regex::Compile(it->get<std::string>());
      if (!re.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer.json: ", std::string(context), ": ", re.status().message()));
      }
      return re;
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer.json: ", std::string(context),
                   ": expected {\"String\": ...} or {\"Regex\": ...}"));
}

}  // namespace rigtune::data
