// ChatTemplate: renders a conversation with the model's own Jinja chat
// template (chat_template.jinja, tokenizer_config.json's chat_template, or
// the job's dataset.chat_template) exactly as transformers'
// apply_chat_template does, through the engine in worker/data/jinja, and
// marks which bytes the assistant produced.
//
// Template variables: messages, add_generation_prompt, tools (null when
// the example has none), documents (null), bos_token / eos_token / pad_token
// / unk_token from tokenizer_config.json, then the job's
// dataset.chat_template_kwargs (e.g. {"enable_thinking": false}), which may
// override them.
//
// Completion spans follow Note [Assistant spans]: the text of the
// template's {% generation %} blocks where it has them, else for each
// assistant message the bytes that rendering messages[:i+1] adds to
// rendering messages[:i] with the generation prompt; they include the
// end-of-turn marker (<|eot_id|>, <|im_end|>, </s>) so the model learns to
// stop.
//
// Example:
//   auto chat = ChatTemplate::Create(tokenizer.config(), {});
//   auto r = chat->Render({{"user", "Hi"}, {"assistant", "Hello!"}}, false);
//   // Llama 3: r->text == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi"
//   //          "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
//   //          r->completion_spans == {{<offset of "Hello!">, <end of text>}}
#ifndef RIGTUNE_WORKER_DATA_CHAT_TEMPLATE_H_
#define RIGTUNE_WORKER_DATA_CHAT_TEMPLATE_H_

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/data/jinja/template.h"
#include "worker/data/tokenizer_config.h"

namespace rigtune::data {

struct Message {
  std::string role;  // system | user | assistant | tool
  std::string content;
  // The message's other fields as the dataset gave them (tool_calls,
  // tool_call_id, name, ...; "content": null when the content was null),
  // passed to the template unchanged.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
};

// Text to tokenize plus the byte ranges whose tokens are training targets.
struct RenderedExample {
  std::string text;
  std::vector<std::pair<size_t, size_t>> completion_spans;  // [begin, end), sorted
  bool add_bos = false;  // prepend the tokenizer's BOS id (templates write their own)
  bool add_eos = false;  // append the EOS id as a training target
};

struct ChatTemplateOptions {
  std::string template_text;  // the job's dataset.chat_template; empty: the model's own
  nlohmann::ordered_json variables = nlohmann::ordered_json::object();  // chat_template_kwargs
};

class ChatTemplate {
 public:
  // Parses the template. FailedPrecondition when there is none;
  // InvalidArgument naming the file and line for a syntax error or an
  // unknown filter, or when `variables` is not a JSON object.
  static absl::StatusOr<ChatTemplate> Create(const TokenizerConfig& config,
                                             const ChatTemplateOptions& options);

  // Fails with InvalidArgument naming the template line where the template
  // raises (raise_exception, e.g. roles that do not alternate) or uses an
  // undefined value, or when assistant spans cannot be found (a template
  // that rewrites earlier turns and has no {% generation %} blocks).
  absl::StatusOr<RenderedExample> Render(const std::vector<Message>& messages,
                                         bool add_generation_prompt,
                                         const nlohmann::ordered_json& tools = nullptr) const;

  // True when spans come from {% generation %} blocks.
  bool uses_generation_blocks() const { return template_->has_generation_blocks(); }

 private:
  ChatTemplate() = default;
  absl::StatusOr<jinja::RenderResult> RenderPrefix(const std::vector<Message>& messages,
                                                   size_t count, bool add_generation_prompt,
                                                   const nlohmann::ordered_json& tools) const;

  std::shared_ptr<const jinja::Template> template_;
  nlohmann::ordered_json variables_;  // everything but messages, tools, add_generation_prompt
  std::string source_;
};

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_CHAT_TEMPLATE_H_
