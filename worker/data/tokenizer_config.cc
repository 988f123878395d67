#include "worker/data/tokenizer_config.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace rigtune::data {
namespace {

absl::Status FieldError(std::string_view source, std::string_view field, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat(std::string(source), ": ", std::string(field), ": ", std::string(why)));
}

absl::StatusOr<std::optional<std::string>> TokenField(const nlohmann::json& config,
                                                      const char* field, std::string_view source) {
  auto it = config.find(field);
  if (it == config.end() || it->is_null()) return std::optional<std::string>();
  if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return std::optional<std::string>((*it)["content"].get<std::string>());
  }
  return FieldError(source, field, "expected a string or {\"content\": ...}");
}

}  // namespace

absl::StatusOr<TokenizerConfig> ParseTokenizerConfig(std::string_view json_text,
                                                     std::string_view source) {
  TokenizerConfig out;
  if (json_text.empty()) return out;
  nlohmann::json config = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ": not a JSON object"));
  }
  for (auto [field, target] :
       {std::pair<const char*, std::optional<std::string>*>{"bos_token", &out.bos_token},
        {"eos_token", &out.eos_token},
        {"pad_token", &out.pad_token}}) {
    absl::StatusOr<std::optional<std::string>> value = TokenField(config, field, source);
    if (!value.ok()) return value.status();
    *target = *value;
  }
  for (auto [field, target] :
       {std::pair<const char*, std::optional<bool>*>{"add_bos_token", &out.add_bos_token},
        {"add_eos_token", &out.add_eos_token}}) {
    auto it = config.find(field);
    if (it == config.end() || it->is_null()) continue;
    if (!it->is_boolean()) return FieldError(source, field, "expected true or false");
    *target = it->get<bool>();
  }
  if (auto it = config.find("chat_template"); it != config.end() && !it->is_null()) {
    if (it->is_string()) {
      out.chat_template = it->get<std::string>();
    } else if (it->is_array()) {
      for (const auto& entry : *it) {
        if (entry.value("name", "") == "default" && entry.contains("template")) {
          out.chat_template = entry["template"].get<std::string>();
        }
      }
      if (out.chat_template.empty()) {
        return FieldError(source, "chat_template", "list form has no entry named \"default\"");
      }
    } else {
      return FieldError(source, "chat_template", "expected a string or a list of {name, template}");
    }
    out.chat_template_source = std::string(source);
  }
  return out;
}

}  // namespace rigtune::data
