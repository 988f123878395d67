// ChatTemplate: renders a conversation the way the model's own chat_template
// (tokenizer_config.json or chat_template.jinja) does under transformers'
// apply_chat_template, and marks which bytes the assistant produced.
//
// rigtune does not interpret Jinja. It recognises the template families
// below from the template text, reads their parameters (default system
// prompt, spacing) from it, and renders natively:
//   llama3   <|start_header_id|>role<|end_header_id|>\n\n content|trim <|eot_id|>
//            (Llama 3 / 3-Instruct; BOS before the first message)
//   chatml   <|im_start|>role\n content <|im_end|>\n (Qwen2, Qwen2.5 without
//            tools; the default system prompt when the template has one)
//   mistral  [INST] user [/INST] assistant</s> (Mistral / Llama 2 style;
//            roles must alternate; an optional system message is merged into
//            the first or last user turn when the template does so)
//   alpaca   system\n\n ### Instruction:\n user\n\n ### Response:\n assistant</s>\n\n
// Any other template (Llama 3.1 date headers, tool calling, <think> blocks,
// unknown markup) is rejected by Create with a message naming the file and
// what to do, never rendered approximately.
//
// Completion spans follow Note [Assistant spans]: for each assistant message,
// the bytes the full rendering adds after the rendering of the messages
// before it plus the generation prompt; they include the end-of-turn token
// (<|eot_id|>, <|im_end|>, </s>) so the model learns to stop.
//
// Example:
//   auto chat = ChatTemplate::Create(tokenizer.config());
//   auto r = chat->Render({{"user", "Hi"}, {"assistant", "Hello!"}}, false);
//   // llama3: r->text == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi"
//   //         "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
//   //         r->completion_spans == {{<offset of "Hello!">, <end of text>}}
#ifndef RIGTUNE_WORKER_DATA_CHAT_TEMPLATE_H_
#define RIGTUNE_WORKER_DATA_CHAT_TEMPLATE_H_

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/tokenizer_config.h"

namespace rigtune::data {

struct Message {
  std::string role;  // system | user | assistant
  std::string content;
};

// Text to tokenize plus the byte ranges whose tokens are training targets.
struct RenderedExample {
  std::string text;
  std::vector<std::pair<size_t, size_t>> completion_spans;  // [begin, end), sorted
  bool add_bos = false;  // prepend the tokenizer's BOS id (templates write their own)
  bool add_eos = false;  // append the EOS id as a training target
};

class ChatTemplate {
 public:
  enum class Family { kLlama3, kChatMl, kMistral, kAlpaca };

  // Recognises config.chat_template. Fails with FailedPrecondition when the
  // model has no template, InvalidArgument when the template is not one of
  // the families above; both messages name config.chat_template_source.
  static absl::StatusOr<ChatTemplate> Create(const TokenizerConfig& config);

  // Fails with InvalidArgument where the real template would raise (e.g.
  // mistral roles that do not alternate) or on an unknown role.
  absl::StatusOr<RenderedExample> Render(const std::vector<Message>& messages,
                                         bool add_generation_prompt) const;

  Family family() const { return family_; }

 private:
  ChatTemplate() = default;
  absl::StatusOr<RenderedExample> RenderMistral(const std::vector<Message>& messages) const;

  Family family_ = Family::kChatMl;
  std::string bos_;
  std::string eos_;
  bool bos_first_ = false;      // template writes bos_token first
  std::string default_system_;  // chatml: used when messages[0] is not system
  bool has_default_system_ = false;
  std::string user_prefix_;       // mistral: "[INST] " or " [INST] "
  std::string user_suffix_;       // mistral: " [/INST]" or "[/INST]"
  std::string assistant_prefix_;  // mistral: "" or " "
  std::string assistant_suffix_;  // mistral: after eos, "" or " "
  enum class SystemMerge { kReject, kFirstUser, kLastUser } system_merge_ = SystemMerge::kReject;
};

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_CHAT_TEMPLATE_H_
