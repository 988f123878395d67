#include "worker/data/post_processor.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "worker/data/tokenizer_json.h"

namespace rigtune::data {
namespace {

absl::Status Invalid(const std::string& field, const std::string& why) {
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer.json: post_processor.", field, ": ", why));
}

absl::StatusOr<SpecialTokenTemplate> ParseTemplate(const nlohmann::json& config) {
  const nlohmann::json single = config.value("single", nlohmann::json::array());
  const nlohmann::json specials = config.value("special_tokens", nlohmann::json::object());
  SpecialTokenTemplate out;
  bool seen_sequence = false;
  for (const auto& piece : single) {
    if (piece.contains("Sequence")) {
      if (seen_sequence) return Invalid("TemplateProcessing.single", "more than one $A");
      seen_sequence = true;
      continue;
    }
    if (!piece.contains("SpecialToken") || !piece["SpecialToken"].contains("id")) {
      return Invalid("TemplateProcessing.single", "expected Sequence or SpecialToken entries");
    }
    const std::string name = piece["SpecialToken"]["id"].get<std::string>();
    auto it = specials.find(name);
    if (it == specials.end() || !it->contains("ids") || !(*it)["ids"].is_array()) {
      return Invalid("TemplateProcessing.special_tokens",
                     absl::StrCat("\"", name, "\" has no ids"));
    }
    auto& target = seen_sequence ? out.suffix : out.prefix;
    for (const auto& id : (*it)["ids"]) target.push_back(id.get<int32_t>());
  }
  if (!seen_sequence) return Invalid("TemplateProcessing.single", "missing $A");
  return out;
}

absl::StatusOr<int32_t> PairId(const nlohmann::json& config, const char* key, const char* type) {
  auto it = config.find(key);
  if (it == config.end() || !it->is_array() || it->size() != 2 || !(*it)[1].is_number_integer()) {
    return Invalid(absl::StrCat(type, ".", key), "expected [token, id]");
  }
  return (*it)[1].get<int32_t>();
}

}  // namespace

absl::StatusOr<SpecialTokenTemplate> ParsePostProcessor(const nlohmann::json& config) {
  if (config.is_null()) return SpecialTokenTemplate();
  absl::StatusOr<std::string> type = JsonString(config, "type", "post_processor");
  if (!type.ok()) return type.status();
  if (*type == "TemplateProcessing") return ParseTemplate(config);
  if (*type == "ByteLevel") return SpecialTokenTemplate();
  if (*type == "RobertaProcessing" || *type == "BertProcessing") {
    absl::StatusOr<int32_t> cls = PairId(config, "cls", type->c_str());
    if (!cls.ok()) return cls.status();
    absl::StatusOr<int32_t> sep = PairId(config, "sep", type->c_str());
    if (!sep.ok()) return sep.status();
    return SpecialTokenTemplate{{*cls}, {*sep}};
  }
  if (*type == "Sequence") {
    SpecialTokenTemplate out;
    for (const auto& step : config.value("processors", nlohmann::json::array())) {
      absl::StatusOr<SpecialTokenTemplate> t = ParsePostProcessor(step);
      if (!t.ok()) return t.status();
      out.prefix.insert(out.prefix.begin(), t->prefix.begin(), t->prefix.end());
      out.suffix.insert(out.suffix.end(), t->suffix.begin(), t->suffix.end());
    }
    return out;
  }
  return Invalid("type", absl::StrCat("\"", *type,
                                      "\" is not supported (supported: "
                                      "TemplateProcessing, ByteLevel, RobertaProcessing, "
                                      "BertProcessing, Sequence)"));
}

}  // namespace rigtune::data
