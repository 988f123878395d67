#include "worker/data/chat_template.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/data/utf8.h"

namespace rigtune::data {
namespace {

// Python's str.strip(), which Jinja's `trim` filter calls.
std::string PythonStrip(const std::string& s) {
  auto is_space = [](uint32_t cp) { return IsUnicodeWhitespace(cp) || (cp >= 0x1C && cp <= 0x1F); };
  size_t begin = 0;
  while (begin < s.size()) {
    size_t pos = begin;
    if (!is_space(DecodeUtf8(s, &pos))) break;
    begin = pos;
  }
  size_t end = s.size();
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    size_t pos = start;
    if (!is_space(DecodeUtf8(s, &pos))) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

// Undoes the escapes of a Jinja string literal body.
std::string UnescapeLiteral(const std::string& body) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] == '\\' && i + 1 < body.size()) {
      const char c = body[++i];
      out.push_back(c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c);
    } else {
      out.push_back(body[i]);
    }
  }
  return out;
}

// The body of the string literal (quoted with ' or ") around `pos`.
std::string EnclosingLiteral(const std::string& tmpl, size_t pos) {
  size_t open = pos;
  while (open > 0 && tmpl[open - 1] != '\'' && tmpl[open - 1] != '"') --open;
  if (open == 0) return "";
  const char quote = tmpl[open - 1];
  const size_t close = tmpl.find(quote, pos);
  if (close == std::string::npos) return "";
  return UnescapeLiteral(tmpl.substr(open, close - open));
}

// True when the template prints bos_token on its own (`{{ bos_token }}` or
// `{{- bos_token }}`), which the supported families do once, before anything.
bool PrintsBos(const std::string& tmpl) {
  for (size_t pos = tmpl.find("bos_token"); pos != std::string::npos;
       pos = tmpl.find("bos_token", pos + 1)) {
    const size_t open = tmpl.rfind("{{", pos);
    const size_t close = tmpl.find("}}", pos);
    if (open == std::string::npos || close == std::string::npos) continue;
    std::string inner = tmpl.substr(open + 2, close - open - 2);
    inner.erase(0, inner.find_first_not_of(" -\t\n"));
    inner.erase(inner.find_last_not_of(" -\t\n") + 1);
    if (inner == "bos_token") return true;
  }
  return false;
}

absl::Status Unsupported(const TokenizerConfig& config, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(
      config.chat_template_source.empty() ? "chat_template" : config.chat_template_source,
      ": chat template not supported (", why,
      "). rigtune renders the Llama 3, ChatML/Qwen2, Mistral and Alpaca families; put one of "
      "those templates in tokenizer_config.json's chat_template, or use dataset format "
      "\"alpaca\" or \"text\""));
}

absl::Status RoleError(const std::string& family, const std::string& role) {
  return absl::InvalidArgumentError(
      absl::StrCat("role \"", role, "\" is not supported by the ", family, " chat template"));
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::Create(const TokenizerConfig& config) {
  const std::string& tmpl = config.chat_template;
  if (tmpl.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        config.chat_template_source.empty() ? "tokenizer_config.json" : config.chat_template_source,
        ": the model has no chat_template; add one, or use dataset format \"alpaca\" or \"text\""));
  }
  ChatTemplate chat;
  chat.bos_ = config.bos_token.value_or("");
  chat.eos_ = config.eos_token.value_or("");
  chat.bos_first_ = PrintsBos(tmpl);
  const bool uses_eos = absl::StrContains(tmpl, "eos_token");
  if (absl::StrContains(tmpl, "<|start_header_id|>") && absl::StrContains(tmpl, "<|eot_id|>")) {
    if (absl::StrContains(tmpl, "Cutting Knowledge Date") || absl::StrContains(tmpl, "tools")) {
      return Unsupported(config, "Llama 3.1+ template with date headers and tools");
    }
    if (!absl::StrContains(tmpl, "trim"))
      return Unsupported(config, "Llama 3 template without trim");
    chat.family_ = Family::kLlama3;
    chat.bos_first_ = absl::StrContains(tmpl, "bos_token");
    return chat;
  }
  if (absl::StrContains(tmpl, "<|im_start|>")) {
    if (absl::StrContains(tmpl, "<think>"))
      return Unsupported(config, "reasoning (<think>) template");
    chat.family_ = Family::kChatMl;
    const std::string marker = "<|im_start|>system\\n";
    for (size_t pos = tmpl.find(marker); pos != std::string::npos;
         pos = tmpl.find(marker, pos + 1)) {
      const size_t end = tmpl.find("<|im_end|>", pos);
      if (end == std::string::npos) break;
      const std::string between = tmpl.substr(pos + marker.size(), end - pos - marker.size());
      if (between.find_first_of("'\"") == std::string::npos) {
        chat.default_system_ = UnescapeLiteral(between);
        chat.has_default_system_ = true;
        break;
      }
    }
    return chat;
  }
  if (absl::StrContains(tmpl, "[INST]") && absl::StrContains(tmpl, "[/INST]")) {
    chat.family_ = Family::kMistral;
    chat.user_prefix_ = EnclosingLiteral(tmpl, tmpl.find("[INST]"));
    chat.user_suffix_ = EnclosingLiteral(tmpl, tmpl.find("[/INST]"));
    if (!absl::StrContains(chat.user_prefix_, "[INST]") ||
        !absl::StrContains(chat.user_suffix_, "[/INST]")) {
      return Unsupported(config, "[INST] markers outside string literals");
    }
    if (absl::StrContains(tmpl, "tools") || absl::StrContains(tmpl, "<<SYS>>")) {
      return Unsupported(config, "Mistral template with tools or Llama 2 <<SYS>> blocks");
    }
    // The assistant expression: ['<space>' +] message content + eos_token [+ '<space>'].
    size_t eos = tmpl.find("eos_token");
    if (eos == std::string::npos || !uses_eos)
      return Unsupported(config, "no eos_token after answers");
    const size_t open = tmpl.rfind("{{", eos);
    const size_t close = tmpl.find("}}", eos);
    const std::string expr = tmpl.substr(open, close - open);
    const std::string head = expr.substr(0, expr.find("message"));
    if (absl::StrContains(head, "' '") || absl::StrContains(head, "\" \""))
      chat.assistant_prefix_ = " ";
    const std::string tail = tmpl.substr(eos, close - eos);
    if (absl::StrContains(tail, "' '") || absl::StrContains(tail, "\" \""))
      chat.assistant_suffix_ = " ";
    if (absl::StrContains(expr, "trim"))
      return Unsupported(config, "Mistral template that trims answers");
    if (absl::StrContains(tmpl, "system_message")) {
      chat.system_merge_ = absl::StrContains(tmpl, "loop.last and system_message")
                               ? SystemMerge::kLastUser
                               : SystemMerge::kFirstUser;
    }
    return chat;
  }
  if (absl::StrContains(tmpl, "### Instruction:") && absl::StrContains(tmpl, "### Response:")) {
    chat.family_ = Family::kAlpaca;
    return chat;
  }
  return Unsupported(config, "unrecognised template markup");
}

absl::StatusOr<RenderedExample> ChatTemplate::Render(const std::vector<Message>& messages,
                                                     bool add_generation_prompt) const {
  RenderedExample out;
  std::string& text = out.text;
  auto completion = [&out](size_t begin) {
    out.completion_spans.emplace_back(begin, out.text.size());
  };
  switch (family_) {
    case Family::kLlama3:
      for (size_t i = 0; i < messages.size(); ++i) {
        const Message& m = messages[i];
        if (i == 0 && bos_first_) text += bos_;
        absl::StrAppend(&text, "<|start_header_id|>", m.role, "<|end_header_id|>\n\n");
        const size_t begin = text.size();
        absl::StrAppend(&text, PythonStrip(m.content), "<|eot_id|>");
        if (m.role == "assistant") completion(begin);
      }
      if (add_generation_prompt) text += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    case Family::kChatMl:
      if (!messages.empty() && messages[0].role != "system" && has_default_system_) {
        absl::StrAppend(&text, "<|im_start|>system\n", default_system_, "<|im_end|>\n");
      }
      for (const Message& m : messages) {
        if (m.role != "system" && m.role != "user" && m.role != "assistant") {
          return RoleError("ChatML", m.role);
        }
        absl::StrAppend(&text, "<|im_start|>", m.role, "\n");
        const size_t begin = text.size();
        absl::StrAppend(&text, m.content, "<|im_end|>\n");
        if (m.role == "assistant") completion(begin);
      }
      if (add_generation_prompt) text += "<|im_start|>assistant\n";
      return out;
    case Family::kMistral:
      return RenderMistral(messages);
    case Family::kAlpaca:
      if (bos_first_) text += bos_;
      for (const Message& m : messages) {
        if (m.role == "system") {
          absl::StrAppend(&text, m.content, "\n\n");
        } else if (m.role == "user") {
          absl::StrAppend(&text, "### Instruction:\n", m.content, "\n\n");
        } else if (m.role == "assistant") {
          text += "### Response:\n";
          const size_t begin = text.size();
          absl::StrAppend(&text, m.content, eos_, "\n\n");
          completion(begin);
        } else {
          return RoleError("Alpaca", m.role);
        }
      }
      if (add_generation_prompt) text += "### Response:\n";
      return out;
  }
  return out;
}

absl::StatusOr<RenderedExample> ChatTemplate::RenderMistral(
    const std::vector<Message>& messages) const {
  RenderedExample out;
  size_t first = 0;
  const std::string* system = nullptr;
  if (!messages.empty() && messages[0].role == "system") {
    if (system_merge_ == SystemMerge::kReject) return RoleError("Mistral", "system");
    system = &messages[0].content;
    first = 1;
  }
  if (bos_first_) out.text += bos_;
  const size_t count = messages.size() - first;
  for (size_t j = 0; j < count; ++j) {
    const Message& m = messages[first + j];
    if ((m.role == "user") != (j % 2 == 0)) {
      return absl::InvalidArgumentError(
          "the Mistral chat template needs roles alternating user/assistant/user/..., "
          "after an optional system message");
    }
    if (m.role == "user") {
      const bool merge =
          system != nullptr && ((system_merge_ == SystemMerge::kFirstUser && j == 0) ||
                                (system_merge_ == SystemMerge::kLastUser && j + 1 == count));
      absl::StrAppend(&out.text, user_prefix_, merge ? absl::StrCat(*system, "\n\n") : "",
                      m.content, user_suffix_);
    } else if (m.role == "assistant") {
      const size_t begin = out.text.size();
      absl::StrAppend(&out.text, assistant_prefix_, m.content, eos_, assistant_suffix_);
      out.completion_spans.emplace_back(begin, out.text.size());
    } else {
      return RoleError("Mistral", m.role);
    }
  }
  return out;
}

}  // namespace rigtune::data
