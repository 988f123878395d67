#include "worker/data/decoders.h"

#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/data/byte_level_alphabet.h"
#include "worker/data/regex.h"
#include "worker/data/tokenizer_json.h"
#include "worker/data/utf8.h"

namespace rigtune::data {
namespace {

class ByteLevelDecoder : public Decoder {
 public:
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    std::string bytes;
    for (const std::string& token : *tokens) {
      std::string mapped;
      bool all_symbols = true;
      for (size_t pos = 0; pos < token.size();) {
        const int b = SymbolToByte(DecodeUtf8(token, &pos));
        if (b < 0) {
          all_symbols = false;
          break;
        }
        mapped.push_back(static_cast<char>(b));
      }
      bytes += all_symbols ? mapped : token;
    }
    tokens->assign(1, SanitizeUtf8(bytes));
    return absl::OkStatus();
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool drop_first)
      : replacement_(std::move(replacement)), drop_first_(drop_first) {}
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& token = (*tokens)[i];
      std::string out;
      for (size_t pos = 0; pos < token.size();) {
        if (token.compare(pos, replacement_.size(), replacement_) == 0) {
          // Hugging Face drops every replacement character of the first token.
          if (!(i == 0 && drop_first_)) out.push_back(' ');
          pos += replacement_.size();
        } else {
          out.push_back(token[pos++]);
        }
      }
      token = std::move(out);
    }
    return absl::OkStatus();
  }

 private:
  std::string replacement_;
  bool drop_first_;
};

// The byte of a "<0xNN>" token, or -1.
int FallbackByte(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
  int value = 0;
  for (int k = 3; k < 5; ++k) {
    const char c = token[k];
    int digit = -1;
    if (c >= '0' && c <= '9') digit = c - '0';
    if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

class ByteFallbackDecoder : public Decoder {
 public:
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    std::string run;
    auto flush = [&] {
      if (run.empty()) return;
      if (IsValidUtf8(run)) {
        out.push_back(run);
      } else {
        std::string replacement;
        for (size_t k = 0; k < run.size(); ++k) AppendUtf8(kReplacementChar, &replacement);
        out.push_back(std::move(replacement));
      }
      run.clear();
    };
    for (std::string& token : *tokens) {
      const int b = FallbackByte(token);
      if (b >= 0) {
        run.push_back(static_cast<char>(b));
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    *tokens = std::move(out);
    return absl::OkStatus();
  }
};

class FuseDecoder : public Decoder {
 public:
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    std::string joined;
    for (const std::string& t : *tokens) joined += t;
    tokens->assign(1, std::move(joined));
    return absl::OkStatus();
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, int start, int stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) {
      size_t begin = 0;
      for (int k = 0; k < start_ && token.compare(begin, content_.size(), content_) == 0 &&
                      begin < token.size();
           ++k) {
        begin += content_.size();
      }
      size_t end = token.size();
      for (int k = 0; k < stop_ && end >= begin + content_.size() &&
                      token.compare(end - content_.size(), content_.size(), content_) == 0;
           ++k) {
        end -= content_.size();
      }
      token = token.substr(begin, end - begin);
    }
    return absl::OkStatus();
  }

 private:
  std::string content_;
  int start_;
  int stop_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::unique_ptr<Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<Regex::Match> matches;
    for (std::string& token : *tokens) {
      if (absl::Status s = pattern_->FindAll(token, &matches); !s.ok()) return s;
      if (matches.empty()) continue;
      std::string out;
      size_t pos = 0;
      for (const Regex::Match& m : matches) {
        out.append(token, pos, m.begin - pos);
        out += content_;
        pos = m.end;
      }
      out.append(token, pos, std::string::npos);
      token = std::move(out);
    }
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<Regex> pattern_;
  std::string content_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& step : steps_) {
      if (absl::Status s = step->DecodeChain(tokens); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

absl::StatusOr<std::unique_ptr<Decoder>> ParseMetaspaceDecoder(const nlohmann::json& config) {
  absl::StatusOr<std::string> replacement = JsonString(config, "replacement", "decoder.Metaspace");
  if (!replacement.ok()) return replacement.status();
  bool drop_first = true;
  if (auto it = config.find("prepend_scheme"); it != config.end() && it->is_string()) {
    drop_first = it->get<std::string>() != "never";
  } else {
    absl::StatusOr<bool> add = JsonBool(config, "add_prefix_space", true, "decoder.Metaspace");
    if (!add.ok()) return add.status();
    drop_first = *add;
  }
  return std::unique_ptr<Decoder>(new MetaspaceDecoder(*replacement, drop_first));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const nlohmann::json& config) {
  if (config.is_null()) return std::unique_ptr<Decoder>();
  absl::StatusOr<std::string> type = JsonString(config, "type", "decoder");
  if (!type.ok()) return type.status();
  if (*type == "ByteLevel") return std::unique_ptr<Decoder>(new ByteLevelDecoder());
  if (*type == "Metaspace") return ParseMetaspaceDecoder(config);
  if (*type == "ByteFallback") return std::unique_ptr<Decoder>(new ByteFallbackDecoder());
  if (*type == "Fuse") return std::unique_ptr<Decoder>(new FuseDecoder());
  if (*type == "Strip") {
    absl::StatusOr<std::string> content = JsonString(config, "content", "decoder.Strip");
    if (!content.ok()) return content.status();
    return std::unique_ptr<Decoder>(
        new StripDecoder(*content, config.value("start", 0), config.value("stop", 0)));
  }
  if (*type == "Replace") {
    absl::StatusOr<std::unique_ptr<Regex>> pattern =
        ParsePattern(config.value("pattern", nlohmann::json()), "decoder.Replace.pattern");
    if (!pattern.ok()) return pattern.status();
    absl::StatusOr<std::string> content = JsonString(config, "content", "decoder.Replace");
    if (!content.ok()) return content.status();
    return std::unique_ptr<Decoder>(new ReplaceDecoder(std::move(*pattern), *content));
  }
  if (*type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> steps;
    for (const auto& step : config.value("decoders", nlohmann::json::array())) {
      absl::StatusOr<std::unique_ptr<Decoder>> d = ParseDecoder(step);
      if (!d.ok()) return d.status();
      if (*d != nullptr) steps.push_back(std::move(*d));
    }
    return std::unique_ptr<Decoder>(new SequenceDecoder(std::move(steps)));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "tokenizer.json: decoder.type \"", *type,
      "\" is not supported (supported: ByteLevel, Metaspace, ByteFallback, Fuse, Strip, "
      "Replace, Sequence)"));
}

}  // namespace rigtune::data
