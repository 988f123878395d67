// data_golden_tool: runs rigtune's data pipeline on inputs written by the
// golden tests (tests/golden/test_tokenizer*.py, test_chat*.py) and writes
// what it produced as JSON, for comparison with Hugging Face.
//
//   data_golden_tool tokenize MODEL_DIR IN.json OUT.json
//     IN:  {"texts_hex": ["48656c6c6f", ...]}        (raw bytes, may be invalid UTF-8)
//     OUT: {"with_special": [[ids]], "plain": [[ids]], "starts": [[offsets]],
//           "decoded": ["..."], "decoded_skip": ["..."]}
//   data_golden_tool chat MODEL_DIR IN.json OUT.json
//     IN:  {"conversations": [[{"role": "user", "content": "..."}, ...]], "train_on_prompt": false}
//     OUT: {"results": [{"text": "...", "ids": [...], "labels": [...]}] or {"error": "..."}}
//   data_golden_tool template TEMPLATE.jinja IN.json OUT.json
//     IN:  {"bos_token": "<s>", "eos_token": "</s>", "cases": [{"messages": [...],
//           "tools": [...] or null, "add_generation_prompt": bool, "kwargs": {...}}]}
//     OUT: {"results": [{"text": "...", "spans": [[begin, end], ...]} or {"error": "..."}]}
//          (spans in bytes: what ChatTemplate marks as assistant-produced)
//   data_golden_tool normalize NORMALIZER.json IN.json OUT.json
//     NORMALIZER: a tokenizer.json "normalizer" section
//     IN:  {"texts_hex": [...]}  (valid UTF-8)
//     OUT: {"normalized": ["..."], "sources": [[original byte offset per byte]]}
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/escaping.h"
#include "nlohmann/json.hpp"
#include "worker/data/chat_template.h"
#include "worker/data/example_encoder.h"
#include "worker/data/normalizers.h"
#include "worker/data/tokenizer.h"

namespace {

using rigtune::data::Tokenizer;

int Fail(const std::string& message) {
  std::fprintf(stderr, "data_golden_tool: %s\n", message.c_str());
  return 1;
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return nlohmann::json::parse(buffer.str());
}

int Tokenize(const Tokenizer& tok, const nlohmann::json& in, nlohmann::json* out) {
  for (const auto& hex : in["texts_hex"]) {
    const std::string text = absl::HexStringToBytes(hex.get<std::string>());
    auto with_special = tok.Encode(text, true);
    auto plain = tok.EncodeWithOffsets(text, false);
    if (!with_special.ok()) return Fail(std::string(with_special.status().message()));
    if (!plain.ok()) return Fail(std::string(plain.status().message()));
    auto decoded = tok.Decode(*with_special, false);
    auto decoded_skip = tok.Decode(*with_special, true);
    if (!decoded.ok()) return Fail(std::string(decoded.status().message()));
    if (!decoded_skip.ok()) return Fail(std::string(decoded_skip.status().message()));
    (*out)["with_special"].push_back(*with_special);
    (*out)["plain"].push_back(plain->ids);
    (*out)["starts"].push_back(plain->starts);
    (*out)["decoded"].push_back(*decoded);
    (*out)["decoded_skip"].push_back(*decoded_skip);
  }
  return 0;
}

int Chat(const Tokenizer& tok, const nlohmann::json& in, nlohmann::json* out) {
  auto chat = rigtune::data::ChatTemplate::Create(tok.config(), {});
  if (!chat.ok()) return Fail(std::string(chat.status().message()));
  rigtune::data::EncodeOptions options;
  options.train_on_prompt = in.value("train_on_prompt", false);
  options.context_length = 1 << 20;
  (*out)["results"] = nlohmann::json::array();
  for (const auto& conversation : in["conversations"]) {
    std::vector<rigtune::data::Message> messages;
    for (const auto& m : conversation) {
      messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>(), {}});
    }
    nlohmann::json result;
    auto rendered = chat->Render(messages, /*add_generation_prompt=*/false);
    if (!rendered.ok()) {
      result["error"] = std::string(rendered.status().message());
      (*out)["results"].push_back(result);
      continue;
    }
    auto encoded = rigtune::data::EncodeRendered(tok, *rendered, options);
    if (!encoded.ok()) return Fail(std::string(encoded.status().message()));
    result["text"] = rendered->text;
    result["ids"] = encoded->input_ids;
    result["labels"] = encoded->labels;
    (*out)["results"].push_back(result);
  }
  return 0;
}

int RenderTemplates(const std::string& template_path, const nlohmann::ordered_json& in,
                    nlohmann::json* out) {
  std::ifstream file(template_path, std::ios::binary);
  std::stringstream text;
  text << file.rdbuf();
  rigtune::data::TokenizerConfig config;
  config.chat_template = text.str();
  config.chat_template_source = template_path;
  config.bos_token = in["bos_token"].get<std::string>();
  config.eos_token = in["eos_token"].get<std::string>();
  (*out)["results"] = nlohmann::json::array();
  for (const auto& c : in["cases"]) {
    nlohmann::json result;
    rigtune::data::ChatTemplateOptions options;
    options.variables = c["kwargs"];
    auto chat = rigtune::data::ChatTemplate::Create(config, options);
    if (!chat.ok()) {
      result["error"] = std::string(chat.status().message());
      (*out)["results"].push_back(result);
      continue;
    }
    std::vector<rigtune::data::Message> messages;
    for (const auto& m : c["messages"]) {
      rigtune::data::Message message{m["role"].get<std::string>(), "", {}};
      for (const auto& [key, value] : m.items()) {
        if (key == "content" && value.is_string()) {
          message.content = value.get<std::string>();
        } else if (key != "role") {
          message.extra[key] = value;
        }
      }
      messages.push_back(std::move(message));
    }
    auto rendered = chat->Render(messages, c["add_generation_prompt"].get<bool>(), c["tools"]);
    if (rendered.ok()) {
      result["text"] = rendered->text;
      result["spans"] = rendered->completion_spans;
    } else {
      result["error"] = std::string(rendered.status().message());
    }
    (*out)["results"].push_back(result);
  }
  return 0;
}

int Normalize(const nlohmann::json& config, const nlohmann::json& in, nlohmann::json* out) {
  auto normalizer = rigtune::data::ParseNormalizer(config);
  if (!normalizer.ok()) return Fail(std::string(normalizer.status().message()));
  (*out)["normalized"] = nlohmann::json::array();
  (*out)["sources"] = nlohmann::json::array();
  for (const auto& hex : in["texts_hex"]) {
    auto text = rigtune::data::NormalizedText::FromOriginal(
        absl::HexStringToBytes(hex.get<std::string>()), 0);
    if (*normalizer != nullptr) {
      if (absl::Status s = (*normalizer)->Normalize(&text); !s.ok()) {
        return Fail(std::string(s.message()));
      }
    }
    (*out)["normalized"].push_back(text.text);
    (*out)["sources"].push_back(text.source);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    return Fail("usage: data_golden_tool tokenize|chat|template|normalize MODEL_DIR IN.json OUT.json");
  }
  const std::string command = argv[1];
  if (command == "template") {
    nlohmann::json out = nlohmann::json::object();
    std::ifstream in(argv[3]);
    std::stringstream buffer;
    buffer << in.rdbuf();
    if (int rc = RenderTemplates(argv[2], nlohmann::ordered_json::parse(buffer.str()), &out); rc != 0) {
      return rc;
    }
    std::ofstream(argv[4]) << out.dump();
    return 0;
  }
  if (command == "normalize") {
    nlohmann::json out = nlohmann::json::object();
    if (int rc = Normalize(ReadJson(argv[2]), ReadJson(argv[3]), &out); rc != 0) return rc;
    std::ofstream(argv[4]) << out.dump();
    return 0;
  }
  auto tok = Tokenizer::Load(argv[2]);
  if (!tok.ok()) return Fail(std::string(tok.status().message()));
  const nlohmann::json in = ReadJson(argv[3]);
  nlohmann::json out = nlohmann::json::object();
  int rc = 0;
  if (command == "tokenize") {
    rc = Tokenize(**tok, in, &out);
  } else if (command == "chat") {
    rc = Chat(**tok, in, &out);
  } else {
    return Fail("unknown command " + command);
  }
  if (rc != 0) return rc;
  std::ofstream(argv[4]) << out.dump();
  return 0;
}
