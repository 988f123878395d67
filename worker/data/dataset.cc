#include "worker/data/dataset.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace rigtune::data {
namespace {

constexpr char kAlpacaWithInput[] =
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n### Instruction:\n";
constexpr char kAlpacaNoInput[] =
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n";

// Where a record came from, for error messages.
struct Origin {
  std::string source;
  int64_t line;
  bool array_element;
  std::string Describe() const {
    return array_element ? absl::StrCat(source, ": element ", line)
                         : absl::StrCat(source, ":", line);
  }
};

absl::Status FieldError(const Origin& origin, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(origin.Describe(), ": ", why));
}

// Optional string field: absent or null gives "".
absl::StatusOr<std::string> StringField(const nlohmann::ordered_json& obj, const char* field, bool required,
                                        const Origin& origin) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) {
    if (required) return FieldError(origin, absl::StrCat("missing field \"", field, "\""));
    return std::string();
  }
  if (!it->is_string())
    return FieldError(origin, absl::StrCat("field \"", field, "\" must be a string"));
  return it->get<std::string>();
}

absl::StatusOr<std::vector<Message>> ParseMessages(const nlohmann::ordered_json& obj,
                                                   const Origin& origin) {
  const bool sharegpt = !obj.contains("messages") && obj.contains("conversations");
  const char* list_field = sharegpt ? "conversations" : "messages";
  const char* role_field = sharegpt ? "from" : "role";
  const char* content_field = sharegpt ? "value" : "content";
  auto it = obj.find(list_field);
  if (it == obj.end() || !it->is_array()) {
    return FieldError(
        origin,
        "messages format needs an array field \"messages\" (or ShareGPT \"conversations\")");
  }
  std::vector<Message> messages;
  for (size_t i = 0; i < it->size(); ++i) {
    const nlohmann::ordered_json& m = (*it)[i];
    const std::string where = absl::StrCat(list_field, "[", i, "]");
    if (!m.is_object()) return FieldError(origin, absl::StrCat(where, " must be an object"));
    absl::StatusOr<std::string> role = StringField(m, role_field, true, origin);
    if (!role.ok())
      return FieldError(origin, absl::StrCat(where, ".", role_field, " must be a string"));
    std::string r = *role;
    if (r == "human") r = "user";
    if (r == "gpt") r = "assistant";
    if (r != "system" && r != "user" && r != "assistant" && r != "tool") {
      return FieldError(origin, absl::StrCat(where, ": unknown role \"", *role,
                                             "\" (expected system, user, assistant, tool; "
                                             "ShareGPT human, gpt)"));
    }
    Message message{std::move(r), "", nlohmann::ordered_json::object()};
    // An assistant turn that only calls tools may have null or no content.
    const bool calls_tools = m.contains("tool_calls");
    auto content = m.find(content_field);
    if (content != m.end() && content->is_string()) {
      message.content = content->get<std::string>();
    } else if (!calls_tools || (content != m.end() && !content->is_null())) {
      return FieldError(origin, absl::StrCat(where, ".", content_field, " must be a string"));
    }
    for (const auto& [key, value] : m.items()) {
      if (key == role_field || (key == content_field && value.is_string())) continue;
      message.extra[key == content_field ? "content" : key] = value;
    }
    if (calls_tools && content == m.end()) message.extra["content"] = nullptr;
    messages.push_back(std::move(message));
  }
  return messages;
}

// Fills `example` from one record; sets *empty when there is nothing to train on.
absl::Status ParseRecord(const nlohmann::ordered_json& obj, DatasetFormat format, const Origin& origin,
                         Example* example, bool* empty) {
  if (!obj.is_object()) return FieldError(origin, "expected a JSON object");
  example->line = origin.line;
  switch (format) {
    case DatasetFormat::kAlpaca: {
      absl::StatusOr<std::string> instruction = StringField(obj, "instruction", true, origin);
      if (!instruction.ok()) return instruction.status();
      absl::StatusOr<std::string> input = StringField(obj, "input", false, origin);
      if (!input.ok()) return input.status();
      absl::StatusOr<std::string> output = StringField(obj, "output", true, origin);
      if (!output.ok()) return output.status();
      example->prompt = input->empty()
                            ? absl::StrCat(kAlpacaNoInput, *instruction, "\n\n### Response:\n")
                            : absl::StrCat(kAlpacaWithInput, *instruction, "\n\n### Input:\n",
                                           *input, "\n\n### Response:\n");
      example->completion = std::move(*output);
      *empty = example->completion.empty();
      return absl::OkStatus();
    }
    case DatasetFormat::kText: {
      absl::StatusOr<std::string> text = StringField(obj, "text", true, origin);
      if (!text.ok()) return text.status();
      example->completion = std::move(*text);
      *empty = example->completion.empty();
      return absl::OkStatus();
    }
    case DatasetFormat::kMessages: {
      absl::StatusOr<std::vector<Message>> messages = ParseMessages(obj, origin);
      if (!messages.ok()) return messages.status();
      example->messages = std::move(*messages);
      if (auto tools = obj.find("tools"); tools != obj.end() && !tools->is_null()) {
        if (!tools->is_array()) {
          return FieldError(origin, "field \"tools\" must be a list of tool (function) schemas");
        }
        example->tools = *tools;
      }
      *empty = true;
      for (const Message& m : example->messages) {
        if (m.role == "assistant" && (!m.content.empty() || m.extra.contains("tool_calls"))) {
          *empty = false;
        }
      }
      return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

int64_t LineOfByte(std::string_view text, size_t byte) {
  int64_t line = 1;
  for (size_t i = 0; i < byte && i < text.size(); ++i) line += text[i] == '\n';
  return line;
}

}  // namespace

absl::StatusOr<DatasetFormat> ParseDatasetFormat(std::string_view name) {
  if (name == "alpaca") return DatasetFormat::kAlpaca;
  if (name == "messages") return DatasetFormat::kMessages;
  if (name == "text") return DatasetFormat::kText;
  return absl::InvalidArgumentError(absl::StrCat(
      "dataset.format: must be alpaca, messages or text, got \"", std::string(name), "\""));
}

absl::StatusOr<std::vector<Example>> ParseDataset(std::string_view contents,
                                                  std::string_view source, DatasetFormat format,
                                                  DatasetStats* stats) {
  std::vector<Example> examples;
  const size_t first = contents.find_first_not_of(" \t\r\n");
  auto add = [&](const nlohmann::ordered_json& obj, const Origin& origin) -> absl::Status {
    Example example;
    bool empty = false;
    if (absl::Status s = ParseRecord(obj, format, origin, &example, &empty); !s.ok()) return s;
    ++stats->records;
    if (empty) {
      ++stats->empty;
    } else {
      examples.push_back(std::move(example));
    }
    return absl::OkStatus();
  };
  if (first != std::string_view::npos && contents[first] == '[') {
    nlohmann::ordered_json array;
    try {
      array = nlohmann::ordered_json::parse(contents);
    } catch (const nlohmann::ordered_json::parse_error& e) {
      return absl::InvalidArgumentError(absl::StrCat(
          std::string(source), ":", LineOfByte(contents, e.byte), ": malformed JSON: ", e.what()));
    }
    for (size_t i = 0; i < array.size(); ++i) {
      if (absl::Status s = add(array[i], {std::string(source), static_cast<int64_t>(i + 1), true});
          !s.ok()) {
        return s;
      }
    }
    return examples;
  }
  int64_t line_number = 0;
  size_t pos = 0;
  while (pos < contents.size()) {
    size_t end = contents.find('\n', pos);
    if (end == std::string_view::npos) end = contents.size();
    const std::string_view line = contents.substr(pos, end - pos);
    pos = end + 1;
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const Origin origin{std::string(source), line_number, false};
    nlohmann::ordered_json obj = nlohmann::ordered_json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (obj.is_discarded()) return FieldError(origin, "malformed JSON line");
    if (absl::Status s = add(obj, origin); !s.ok()) return s;
  }
  return examples;
}

absl::StatusOr<std::vector<Example>> ReadDataset(const std::string& path, DatasetFormat format,
                                                 DatasetStats* stats) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("dataset.path: cannot read ", path));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return ParseDataset(buffer.str(), path, format, stats);
}

absl::StatusOr<RenderedExample> RenderExample(const Example& example, DatasetFormat format,
                                              const Tokenizer& tokenizer,
                                              const ChatTemplate* chat) {
  if (format == DatasetFormat::kMessages) {
    if (chat == nullptr)
      return absl::FailedPreconditionError("messages format needs a chat template");
    return chat->Render(example.messages, /*add_generation_prompt=*/false, example.tools);
  }
  RenderedExample out;
  out.text = absl::StrCat(example.prompt, example.completion);
  out.completion_spans.emplace_back(example.prompt.size(), out.text.size());
  out.add_bos = tokenizer.adds_bos();
  out.add_eos = true;
  return out;
}

}  // namespace rigtune::data
