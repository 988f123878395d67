#include "worker/data/pre_tokenizers.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/data/byte_level_alphabet.h"
#include "worker/data/regex.h"
#include "worker/data/tokenizer_json.h"

namespace rigtune::data {
namespace {

// What happens to the text a split pattern matches (the "delimiters").
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

absl::StatusOr<SplitBehavior> ParseBehavior(const std::string& name) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer.json: pre_tokenizer.Split.behavior \"", name, "\" is unknown"));
}

// Cuts `piece` at the matches of `re`. Each stretch of text is either a
// match (a delimiter, or the kept part when `invert`) or a gap; `behavior`
// decides how delimiters attach to their neighbours.
absl::Status SplitPiece(const NormalizedText& piece, const Regex& re, SplitBehavior behavior,
                        bool invert, std::vector<NormalizedText>* out) {
  std::vector<Regex::Match> matches;
  if (absl::Status s = re.FindAll(piece.text, &matches); !s.ok()) return s;
  struct Segment {
    size_t begin, end;
    bool delimiter;
  };
  std::vector<Segment> segments;
  size_t pos = 0;
  for (const Regex::Match& m : matches) {
    if (m.begin > pos) segments.push_back({pos, m.begin, invert});
    segments.push_back({m.begin, m.end, !invert});
    pos = m.end;
  }
  if (pos < piece.text.size()) segments.push_back({pos, piece.text.size(), invert});

  std::vector<std::pair<size_t, size_t>> ranges;
  bool previous_delimiter = false;
  for (const Segment& seg : segments) {
    bool merge = false;
    switch (behavior) {
      case SplitBehavior::kRemoved:
        if (seg.delimiter) continue;
        break;
      case SplitBehavior::kIsolated:
        break;
      case SplitBehavior::kMergedWithPrevious:
        merge = seg.delimiter && !previous_delimiter;
        break;
      case SplitBehavior::kMergedWithNext:
        merge = !seg.delimiter && previous_delimiter;
        break;
      case SplitBehavior::kContiguous:
        merge = seg.delimiter == previous_delimiter;
        break;
    }
    if (merge && !ranges.empty()) {
      ranges.back().second = seg.end;
    } else {
      ranges.emplace_back(seg.begin, seg.end);
    }
    previous_delimiter = seg.delimiter;
  }
  for (const auto& [begin, end] : ranges) out->push_back(piece.Slice(begin, end));
  return absl::OkStatus();
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> re, SplitBehavior behavior, bool invert)
      : re_(std::move(re)), behavior_(behavior), invert_(invert) {}
  absl::Status PreTokenize(std::vector<NormalizedText>* pieces) const override {
    std::vector<NormalizedText> out;
    out.reserve(pieces->size() * 4);
    for (const NormalizedText& piece : *pieces) {
      if (absl::Status s = SplitPiece(piece, *re_, behavior_, invert_, &out); !s.ok()) return s;
    }
    *pieces = std::move(out);
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<Regex> re_;
  SplitBehavior behavior_;
  bool invert_;
};

constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> re)
      : add_prefix_space_(add_prefix_space), re_(std::move(re)) {}
  absl::Status PreTokenize(std::vector<NormalizedText>* pieces) const override {
    std::vector<NormalizedText> split;
    split.reserve(pieces->size() * 4);
    for (NormalizedText& piece : *pieces) {
      if (add_prefix_space_ && piece.text.front() != ' ') piece.Prepend(" ");
      if (re_ == nullptr) {
        split.push_back(std::move(piece));
      } else if (absl::Status s = SplitPiece(piece, *re_, SplitBehavior::kIsolated, false, &split);
                 !s.ok()) {
        return s;
      }
    }
    for (NormalizedText& piece : split) {
      NormalizedText mapped;
      mapped.text.reserve(piece.text.size() * 2);
      mapped.source.reserve(piece.text.size() * 2);
      for (size_t i = 0; i < piece.text.size(); ++i) {
        mapped.Append(ByteToSymbol(static_cast<uint8_t>(piece.text[i])), piece.source[i]);
      }
      piece = std::move(mapped);
    }
    *pieces = std::move(split);
    return absl::OkStatus();
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> re_;  // null: no GPT-2 split
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, std::unique_ptr<Regex> re)
      : replacement_(std::move(replacement)), scheme_(scheme), re_(std::move(re)) {}
  absl::Status PreTokenize(std::vector<NormalizedText>* pieces) const override {
    std::vector<NormalizedText> out;
    out.reserve(pieces->size() * 4);
    for (NormalizedText& piece : *pieces) {
      piece.ReplaceAll(" ", replacement_);
      // "first" means: only the piece that starts the caller's text, so text
      // after an added token (e.g. "<s>Hi") gets no prefix.
      const bool prepend = scheme_ == PrependScheme::kAlways ||
                           (scheme_ == PrependScheme::kFirst && piece.SourceStart() == 0);
      if (prepend && piece.text.compare(0, replacement_.size(), replacement_) != 0) {
        piece.Prepend(replacement_);
      }
      if (re_ == nullptr) {
        out.push_back(std::move(piece));
      } else if (absl::Status s =
                     SplitPiece(piece, *re_, SplitBehavior::kMergedWithNext, false, &out);
                 !s.ok()) {
        return s;
      }
    }
    *pieces = std::move(out);
    return absl::OkStatus();
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  std::unique_ptr<Regex> re_;  // the replacement as a literal; null when split is off
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  absl::Status PreTokenize(std::vector<NormalizedText>* pieces) const override {
    for (const auto& step : steps_) {
      if (absl::Status s = step->PreTokenize(pieces); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeSplit(absl::StatusOr<std::unique_ptr<Regex>> re,
                                                        SplitBehavior behavior, bool invert) {
  if (!re.ok()) return re.status();
  return std::unique_ptr<PreTokenizer>(new SplitPreTokenizer(std::move(*re), behavior, invert));
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParseMetaspace(const nlohmann::json& config) {
  absl::StatusOr<std::string> replacement =
      JsonString(config, "replacement", "pre_tokenizer.Metaspace");
  if (!replacement.ok()) return replacement.status();
  PrependScheme scheme = PrependScheme::kAlways;
  if (auto it = config.find("prepend_scheme"); it != config.end() && it->is_string()) {
    const std::string name = it->get<std::string>();
    if (name == "always") {
      scheme = PrependScheme::kAlways;
    } else if (name == "first") {
      scheme = PrependScheme::kFirst;
    } else if (name == "never") {
      scheme = PrependScheme::kNever;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer.json: pre_tokenizer.Metaspace.prepend_scheme \"", name, "\" is unknown"));
    }
  } else {
    absl::StatusOr<bool> add =
        JsonBool(config, "add_prefix_space", true, "pre_tokenizer.Metaspace");
    if (!add.ok()) return add.status();
    scheme = *add ? PrependScheme::kAlways : PrependScheme::kNever;
  }
  absl::StatusOr<bool> split = JsonBool(config, "split", true, "pre_tokenizer.Metaspace");
  if (!split.ok()) return split.status();
  std::unique_ptr<Regex> re;
  if (*split) {
    absl::StatusOr<std::unique_ptr<Regex>> literal = Regex::Literal(*replacement);
    if (!literal.ok()) return literal.status();
    re = std::move(*literal);
  }
  return std::unique_ptr<PreTokenizer>(
      new MetaspacePreTokenizer(*replacement, scheme, std::move(re)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const nlohmann::json& config) {
  if (config.is_null()) return std::unique_ptr<PreTokenizer>();
  absl::StatusOr<std::string> type = JsonString(config, "type", "pre_tokenizer");
  if (!type.ok()) return type.status();
  if (*type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (const auto& step : config.value("pretokenizers", nlohmann::json::array())) {
      absl::StatusOr<std::unique_ptr<PreTokenizer>> p = ParsePreTokenizer(step);
      if (!p.ok()) return p.status();
      if (*p != nullptr) steps.push_back(std::move(*p));
    }
    return std::unique_ptr<PreTokenizer>(new SequencePreTokenizer(std::move(steps)));
  }
  if (*type == "Split") {
    absl::StatusOr<std::string> behavior = JsonString(config, "behavior", "pre_tokenizer.Split");
    if (!behavior.ok()) return behavior.status();
    absl::StatusOr<SplitBehavior> parsed = ParseBehavior(*behavior);
    if (!parsed.ok()) return parsed.status();
    absl::StatusOr<bool> invert = JsonBool(config, "invert", false, "pre_tokenizer.Split");
    if (!invert.ok()) return invert.status();
    return MakeSplit(
        ParsePattern(config.value("pattern", nlohmann::json()), "pre_tokenizer.Split.pattern"),
        *parsed, *invert);
  }
  if (*type == "ByteLevel") {
    absl::StatusOr<bool> prefix =
        JsonBool(config, "add_prefix_space", true, "pre_tokenizer.ByteLevel");
    if (!prefix.ok()) return prefix.status();
    absl::StatusOr<bool> use_regex = JsonBool(config, "use_regex", true, "pre_tokenizer.ByteLevel");
    if (!use_regex.ok()) return use_regex.status();
    std::unique_ptr<Regex> re;
    if (*use_regex) {
      absl::StatusOr<std::unique_ptr<Regex>> compiled = Regex::Compile(kGpt2Pattern);
      if (!compiled.ok()) return compiled.status();
      re = std::move(*compiled);
    }
    return std::unique_ptr<PreTokenizer>(new ByteLevelPreTokenizer(*prefix, std::move(re)));
  }
  if (*type == "Metaspace") return ParseMetaspace(config);
  if (*type == "Digits") {
    absl::StatusOr<bool> individual =
        JsonBool(config, "individual_digits", false, "pre_tokenizer.Digits");
    if (!individual.ok()) return individual.status();
    return MakeSplit(Regex::Compile(R"(\p{N})"),
                     *individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false);
  }
  if (*type == "Whitespace") {
    return MakeSplit(Regex::Compile(R"(\w+|[^\w\s]+)"), SplitBehavior::kRemoved, true);
  }
  if (*type == "WhitespaceSplit") {
    return MakeSplit(Regex::Compile(R"(\s+)"), SplitBehavior::kRemoved, false);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer.json: pre_tokenizer.type \"", *type,
                   "\" is not supported (supported: Sequence, Split, ByteLevel, Metaspace, Digits, "
                   "Whitespace, WhitespaceSplit)"));
}

}  // namespace rigtune::data
