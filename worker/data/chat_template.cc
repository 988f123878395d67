#include "worker/data/chat_template.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace rigtune::data {
namespace {

// Note [Assistant spans]
// transformers marks assistant tokens only through {% generation %} blocks
// (return_assistant_tokens_mask); templates without them need a rule. For
// assistant message i the span is what rendering messages[:i+1] adds to
// rendering messages[:i] with add_generation_prompt=True: the answer and
// the end-of-turn marker the template writes after it, but not the role
// header (the generation prompt), which is context. The rule needs each
// rendering to extend the previous one; a template that rewrites earlier
// turns (e.g. drops old reasoning) fails with a message saying so.

nlohmann::ordered_json MessageJson(const Message& m) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  j["role"] = m.role;
  if (!m.extra.contains("content")) j["content"] = m.content;
  for (const auto& [key, value] : m.extra.items()) j[key] = value;
  return j;
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::Create(const TokenizerConfig& config,
                                                  const ChatTemplateOptions& options) {
  const bool from_job = !options.template_text.empty();
  const std::string& text = from_job ? options.template_text : config.chat_template;
  ChatTemplate chat;
  chat.source_ = from_job ? "dataset.chat_template"
                 : config.chat_template_source.empty() ? "chat_template"
                                                       : config.chat_template_source;
  if (text.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        config.chat_template_source.empty() ? "tokenizer_config.json" : config.chat_template_source,
        ": the model has no chat_template; add one, set dataset.chat_template in the job, or "
        "use dataset format \"alpaca\" or \"text\""));
  }
  if (!options.variables.is_object()) {
    return absl::InvalidArgumentError("dataset.chat_template_kwargs: must be a JSON object");
  }
  jinja::TemplateOptions template_options;
  template_options.source_name = chat.source_;
  absl::StatusOr<jinja::Template> parsed = jinja::Template::Parse(text, template_options);
  if (!parsed.ok()) return parsed.status();
  chat.template_ = std::make_shared<const jinja::Template>(std::move(*parsed));
  chat.variables_ = nlohmann::ordered_json::object();
  const std::pair<const char*, const std::optional<std::string>*> tokens[] = {
      {"bos_token", &config.bos_token}, {"eos_token", &config.eos_token},
      {"pad_token", &config.pad_token}};
  for (const auto& [name, value] : tokens) {
    if (value->has_value()) chat.variables_[name] = **value;
  }
  chat.variables_["documents"] = nullptr;
  for (const auto& [name, value] : options.variables.items()) chat.variables_[name] = value;
  return chat;
}

absl::StatusOr<jinja::RenderResult> ChatTemplate::RenderPrefix(
    const std::vector<Message>& messages, size_t count, bool add_generation_prompt,
    const nlohmann::ordered_json& tools) const {
  nlohmann::ordered_json vars = variables_;
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (size_t i = 0; i < count; ++i) list.push_back(MessageJson(messages[i]));
  vars["messages"] = std::move(list);
  vars["tools"] = tools;
  vars["add_generation_prompt"] = add_generation_prompt;
  return template_->Render(vars);
}

absl::StatusOr<RenderedExample> ChatTemplate::Render(const std::vector<Message>& messages,
                                                     bool add_generation_prompt,
                                                     const nlohmann::ordered_json& tools) const {
  absl::StatusOr<jinja::RenderResult> full =
      RenderPrefix(messages, messages.size(), add_generation_prompt, tools);
  if (!full.ok()) return full.status();
  RenderedExample out;
  out.text = std::move(full->text);
  if (template_->has_generation_blocks()) {
    for (const auto& span : full->generation_spans) {
      if (span.second > span.first) out.completion_spans.push_back(span);
    }
    return out;
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != "assistant") continue;
    absl::StatusOr<jinja::RenderResult> before = RenderPrefix(messages, i, true, tools);
    if (!before.ok()) return before.status();
    absl::StatusOr<jinja::RenderResult> through = RenderPrefix(messages, i + 1, false, tools);
    if (!through.ok()) return through.status();
    if (!absl::StartsWith(through->text, before->text) || !absl::StartsWith(out.text, through->text)) {
      return absl::InvalidArgumentError(absl::StrCat(
          source_, ": the template renders earlier turns differently once later ones follow, so "
          "the assistant's part of message ", i, " cannot be found; use a template with "
          "{% generation %} blocks (dataset.chat_template) or train on single-turn examples"));
    }
    if (through->text.size() > before->text.size()) {
      out.completion_spans.emplace_back(before->text.size(), through->text.size());
    }
  }
  return out;
}

}  // namespace rigtune::data
