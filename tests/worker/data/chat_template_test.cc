#include "worker/data/chat_template.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rigtune::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

constexpr char kLlama3[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
constexpr char kQwen2[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
constexpr char kMistral[] =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token + ' ' }}{% endif %}{% endfor %}";

TokenizerConfig Config(const std::string& tmpl, const std::string& bos, const std::string& eos) {
  TokenizerConfig c;
  c.chat_template = tmpl;
  c.chat_template_source = "/models/m/tokenizer_config.json";
  c.bos_token = bos;
  c.eos_token = eos;
  return c;
}

const std::vector<Message> kChat = {{"user", " Hi ", {}}, {"assistant", "Hello!", {}}};

TEST(ChatTemplateTest, Llama3RendersHeadersTrimAndEot) {
  auto chat = ChatTemplate::Create(Config(kLlama3, "<|begin_of_text|>", "<|eot_id|>"), {});
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->Render(kChat, false)->text,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>");
}

TEST(ChatTemplateTest, Llama3CompletionSpanCoversAnswerAndEot) {
  auto chat = ChatTemplate::Create(Config(kLlama3, "<|begin_of_text|>", "<|eot_id|>"), {});
  auto r = chat->Render(kChat, false);
  ASSERT_EQ(r->completion_spans.size(), 1u);
  const auto [begin, end] = r->completion_spans[0];
  EXPECT_EQ(r->text.substr(begin, end - begin), "Hello!<|eot_id|>");
}

TEST(ChatTemplateTest, Llama3GenerationPrompt) {
  auto chat = ChatTemplate::Create(Config(kLlama3, "<|begin_of_text|>", "<|eot_id|>"), {});
  auto r = chat->Render({{"user", "Hi", {}}}, true);
  EXPECT_THAT(r->text, ::testing::EndsWith("<|start_header_id|>assistant<|end_header_id|>\n\n"));
}

TEST(ChatTemplateTest, Qwen2InsertsItsDefaultSystemPrompt) {
  auto chat = ChatTemplate::Create(Config(kQwen2, "", "<|im_end|>"), {});
  EXPECT_EQ(chat->Render({{"user", "Hi", {}}}, false)->text,
            "<|im_start|>system\nYou are a helpful "
            "assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
}

TEST(ChatTemplateTest, MistralWrapsInstructionsAndEndsAnswersWithEos) {
  auto chat = ChatTemplate::Create(Config(kMistral, "<s>", "</s>"), {});
  auto r = chat->Render(kChat, false);
  EXPECT_EQ(r->text, "<s>[INST]  Hi  [/INST]Hello!</s> ");
  EXPECT_THAT(r->completion_spans, ElementsAre(Pair(22, 33)));
}

TEST(ChatTemplateTest, RaiseExceptionFailsNamingFileAndLine) {
  const std::string tmpl =
      "{% for m in messages %}\n{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
      "{{ raise_exception('Conversation roles must alternate') }}{% endif %}{% endfor %}";
  auto chat = ChatTemplate::Create(Config(tmpl, "<s>", "</s>"), {});
  auto r = chat->Render({{"user", "a", {}}, {"user", "b", {}}}, false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "/models/m/tokenizer_config.json, line 2: the template raised: Conversation roles "
            "must alternate");
}

TEST(ChatTemplateTest, GenerationBlocksGiveTheSpans) {
  const std::string tmpl =
      "{% for m in messages %}{{ m.role }}: {% if m.role == 'assistant' %}{% generation %}"
      "{{ m.content }}{{ eos_token }}{% endgeneration %}{% else %}{{ m.content }}{% endif %}"
      "{{ '\\n' }}{% endfor %}";
  auto chat = ChatTemplate::Create(Config(tmpl, "<s>", "</s>"), {});
  ASSERT_TRUE(chat->uses_generation_blocks());
  auto r = chat->Render({{"user", "a", {}}, {"assistant", "b", {}}}, false);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text, "user: a\nassistant: b</s>\n");
  EXPECT_THAT(r->completion_spans, ElementsAre(Pair(19, 24)));
}

TEST(ChatTemplateTest, ToolCallsAndToolTurnsReachTheTemplate) {
  const std::string tmpl =
      "{{ tools | length }}{% for m in messages %}{% if m.tool_calls %}{{ m.tool_calls | tojson }}"
      "{% elif m.role == 'tool' %}[{{ m.tool_call_id }}:{{ m.content }}]{% endif %}{% endfor %}";
  auto chat = ChatTemplate::Create(Config(tmpl, "<s>", "</s>"), {});
  nlohmann::ordered_json call = {{"tool_calls", {{{"name", "f"}, {"arguments", {{"x", 1}}}}}},
                                 {"content", nullptr}};
  nlohmann::ordered_json tool = {{"tool_call_id", "c1"}};
  auto r = chat->Render({{"assistant", "", call}, {"tool", "21", tool}}, false,
                        nlohmann::ordered_json::array({{{"type", "function"}}}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text, "1[{\"name\": \"f\", \"arguments\": {\"x\": 1}}][c1:21]");
}

TEST(ChatTemplateTest, JobVariablesAndTemplateOverrideTheModel) {
  ChatTemplateOptions options;
  options.template_text = "{{ bos_token }}{{ 'think' if enable_thinking else 'fast' }}";
  options.variables = {{"enable_thinking", false}};
  auto chat = ChatTemplate::Create(Config(kLlama3, "<s>", "</s>"), options);
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->Render({{"user", "a", {}}}, false)->text, "<s>fast");
}

TEST(ChatTemplateTest, SyntaxErrorNamesTheJobField) {
  ChatTemplateOptions options;
  options.template_text = "{% if %}";
  auto chat = ChatTemplate::Create(Config(kLlama3, "<s>", "</s>"), options);
  EXPECT_EQ(chat.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(chat.status().message(), HasSubstr("dataset.chat_template, line 1:"));
}

TEST(ChatTemplateTest, TemplateThatRewritesEarlierTurnsIsRefusedWithoutGenerationBlocks) {
  // Drops the text of every assistant turn but the last, as reasoning templates do.
  const std::string tmpl =
      "{% for m in messages %}{{ m.role }}:{% if m.role != 'assistant' or loop.last %}"
      "{{ m.content }}{% endif %};{% endfor %}";
  auto chat = ChatTemplate::Create(Config(tmpl, "<s>", "</s>"), {});
  auto r = chat->Render({{"user", "a", {}}, {"assistant", "b", {}}, {"user", "c", {}},
                         {"assistant", "d", {}}}, false);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("{% generation %}"));
}

TEST(ChatTemplateTest, MissingTemplateIsFailedPrecondition) {
  auto chat = ChatTemplate::Create(Config("", "<s>", "</s>"), {});
  EXPECT_EQ(chat.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace rigtune::data
