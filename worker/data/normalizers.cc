#include "worker/data/normalizers.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/data/regex.h"
#include "worker/data/tokenizer_json.h"
#include "worker/data/unicode_normalizers.h"
#include "worker/data/utf8.h"

namespace rigtune::data {
namespace {

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  absl::Status Normalize(NormalizedText* text) const override {
    for (const auto& step : steps_) {
      if (absl::Status s = step->Normalize(text); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  absl::Status Normalize(NormalizedText* text) const override {
    if (!text->empty()) text->Prepend(prefix_);
    return absl::OkStatus();
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  absl::Status Normalize(NormalizedText* text) const override {
    std::vector<Regex::Match> matches;
    if (absl::Status s = pattern_->FindAll(text->text, &matches); !s.ok()) return s;
    if (matches.empty()) return absl::OkStatus();
    NormalizedText out;
    size_t pos = 0;
    for (const Regex::Match& m : matches) {
      out.AppendFrom(*text, pos, m.begin);
      out.Append(content_, text->source[m.begin]);
      pos = m.end;
    }
    out.AppendFrom(*text, pos, text->text.size());
    *text = std::move(out);
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<Regex> pattern_;
  std::string content_;
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  absl::Status Normalize(NormalizedText* text) const override {
    size_t begin = 0;
    size_t end = text->text.size();
    if (left_) {
      while (begin < end) {
        size_t pos = begin;
        if (!IsUnicodeWhitespace(DecodeUtf8(text->text, &pos))) break;
        begin = pos;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text->text[start]) & 0xC0) == 0x80) {
          --start;
        }
        size_t pos = start;
        if (!IsUnicodeWhitespace(DecodeUtf8(text->text, &pos))) break;
        end = start;
      }
    }
    if (begin != 0 || end != text->text.size()) *text = text->Slice(begin, end);
    return absl::OkStatus();
  }

 private:
  bool left_;
  bool right_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const nlohmann::json& config) {
  if (config.is_null()) return std::unique_ptr<Normalizer>();
  absl::StatusOr<std::string> type = JsonString(config, "type", "normalizer");
  if (!type.ok()) return type.status();
  if (*type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const auto& step : config.value("normalizers", nlohmann::json::array())) {
      absl::StatusOr<std::unique_ptr<Normalizer>> n = ParseNormalizer(step);
      if (!n.ok()) return n.status();
      if (*n != nullptr) steps.push_back(std::move(*n));
    }
    return std::unique_ptr<Normalizer>(new SequenceNormalizer(std::move(steps)));
  }
  if (*type == "Prepend") {
    absl::StatusOr<std::string> prefix = JsonString(config, "prepend", "normalizer.Prepend");
    if (!prefix.ok()) return prefix.status();
    return std::unique_ptr<Normalizer>(new PrependNormalizer(*prefix));
  }
  if (*type == "Replace") {
    absl::StatusOr<std::unique_ptr<Regex>> pattern =
        ParsePattern(config.value("pattern", nlohmann::json()), "normalizer.Replace.pattern");
    if (!pattern.ok()) return pattern.status();
    absl::StatusOr<std::string> content = JsonString(config, "content", "normalizer.Replace");
    if (!content.ok()) return content.status();
    return std::unique_ptr<Normalizer>(new ReplaceNormalizer(std::move(*pattern), *content));
  }
  if (*type == "Strip") {
    return std::unique_ptr<Normalizer>(
        new StripNormalizer(config.value("strip_left", true), config.value("strip_right", true)));
  }
  if (*type == "NFD") return NewUnicodeNormalizer(UnicodeForm::kNfd);
  if (*type == "NFKD") return NewUnicodeNormalizer(UnicodeForm::kNfkd);
  if (*type == "NFC") return NewUnicodeNormalizer(UnicodeForm::kNfc);
  if (*type == "NFKC") return NewUnicodeNormalizer(UnicodeForm::kNfkc);
  if (*type == "Lowercase") return NewLowercaseNormalizer();
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer.json: normalizer.type \"", *type,
                   "\" is not supported (supported: Sequence, Prepend, Replace, Strip, NFD, "
                   "NFKD, NFC, NFKC, Lowercase)"));
}

}  // namespace rigtune::data
