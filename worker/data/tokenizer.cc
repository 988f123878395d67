#include "worker/data/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/data/utf8.h"

namespace rigtune::data {
namespace {

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

absl::Status Annotate(const absl::Status& status, std::string_view where) {
  return absl::Status(status.code(), absl::StrCat(std::string(where), ": ", status.message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& model_dir) {
  const std::filesystem::path dir(model_dir);
  absl::StatusOr<std::string> json_text = ReadFile(dir / "tokenizer.json");
  if (!json_text.ok()) {
    return absl::NotFoundError(absl::StrCat(
        (dir / "tokenizer.json").string(),
        " not found: rigtune needs the Hugging Face fast-tokenizer file in the model folder"));
  }
  std::string config_text;
  if (std::filesystem::exists(dir / "tokenizer_config.json")) {
    absl::StatusOr<std::string> text = ReadFile(dir / "tokenizer_config.json");
    if (!text.ok()) return text.status();
    config_text = std::move(*text);
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = FromJson(*json_text, config_text);
  if (!tok.ok()) return Annotate(tok.status(), dir.string());
  if ((*tok)->config_.chat_template_source == "tokenizer_config.json") {
    (*tok)->config_.chat_template_source = (dir / "tokenizer_config.json").string();
  }
  if (std::filesystem::exists(dir / "chat_template.jinja")) {
    absl::StatusOr<std::string> chat = ReadFile(dir / "chat_template.jinja");
    if (!chat.ok()) return chat.status();
    (*tok)->config_.chat_template = std::move(*chat);
    (*tok)->config_.chat_template_source = (dir / "chat_template.jinja").string();
  }
  return tok;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view tokenizer_json,
                                                               std::string_view config_json) {
  nlohmann::json j = nlohmann::json::parse(tokenizer_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: not a JSON object");
  }
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  absl::StatusOr<AddedVocabulary> added =
      AddedVocabulary::FromJson(j.value("added_tokens", nlohmann::json()));
  if (!added.ok()) return added.status();
  tok->added_ = std::move(*added);
  for (const AddedToken& t : tok->added_.tokens()) tok->has_normalized_added_ |= t.normalized;
  absl::StatusOr<std::unique_ptr<Normalizer>> normalizer =
      ParseNormalizer(j.value("normalizer", nlohmann::json()));
  if (!normalizer.ok()) return normalizer.status();
  tok->normalizer_ = std::move(*normalizer);
  absl::StatusOr<std::unique_ptr<PreTokenizer>> pre =
      ParsePreTokenizer(j.value("pre_tokenizer", nlohmann::json()));
  if (!pre.ok()) return pre.status();
  tok->pre_tokenizer_ = std::move(*pre);
  absl::StatusOr<std::unique_ptr<BpeModel>> model =
      BpeModel::FromJson(j.value("model", nlohmann::json()));
  if (!model.ok()) return model.status();
  tok->model_ = std::move(*model);
  for (const AddedToken& t : tok->added_.tokens()) tok->model_->AddIdToken(t.id, t.content);
  absl::StatusOr<std::unique_ptr<Decoder>> decoder =
      ParseDecoder(j.value("decoder", nlohmann::json()));
  if (!decoder.ok()) return decoder.status();
  tok->decoder_ = std::move(*decoder);
  absl::StatusOr<SpecialTokenTemplate> tmpl =
      ParsePostProcessor(j.value("post_processor", nlohmann::json()));
  if (!tmpl.ok()) return tmpl.status();
  tok->template_ = std::move(*tmpl);

  absl::StatusOr<TokenizerConfig> config =
      ParseTokenizerConfig(config_json, "tokenizer_config.json");
  if (!config.ok()) return config.status();
  tok->config_ = std::move(*config);
  auto resolve = [&tok](const std::optional<std::string>& token, const char* field,
                        int32_t* id) -> absl::Status {
    if (!token.has_value()) return absl::OkStatus();
    *id = tok->TokenToId(*token);
    if (*id < 0) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer_config.json: ", field, " \"",
                                                     *token,
                                                     "\" is not in tokenizer.json's vocabulary"));
    }
    return absl::OkStatus();
  };
  if (absl::Status s = resolve(tok->config_.bos_token, "bos_token", &tok->bos_id_); !s.ok())
    return s;
  if (absl::Status s = resolve(tok->config_.eos_token, "eos_token", &tok->eos_id_); !s.ok())
    return s;
  if (absl::Status s = resolve(tok->config_.pad_token, "pad_token", &tok->pad_id_); !s.ok())
    return s;
  if (tok->pad_id_ < 0) tok->pad_id_ = tok->eos_id_;
  const auto& prefix = tok->template_.prefix;
  const auto& suffix = tok->template_.suffix;
  tok->adds_bos_ = tok->config_.add_bos_token.value_or(tok->bos_id_ >= 0 && !prefix.empty() &&
                                                       prefix.front() == tok->bos_id_);
  tok->adds_eos_ = tok->config_.add_eos_token.value_or(tok->eos_id_ >= 0 && !suffix.empty() &&
                                                       suffix.back() == tok->eos_id_);
  return tok;
}

absl::Status Tokenizer::EncodeStretch(NormalizedText text, Encoding* out) const {
  if (normalizer_ != nullptr) {
    if (absl::Status s = normalizer_->Normalize(&text); !s.ok()) return s;
  }
  std::vector<AddedVocabulary::Segment> segments;
  if (has_normalized_added_) {
    added_.Split(text, /*normalized_tokens=*/true, &segments);
  } else if (!text.empty()) {
    segments.push_back({std::move(text), -1});
  }
  std::vector<NormalizedText> pieces;
  std::vector<BpeModel::Token> tokens;
  for (AddedVocabulary::Segment& seg : segments) {
    if (seg.token_id >= 0) {
      out->ids.push_back(seg.token_id);
      out->starts.push_back(static_cast<int32_t>(seg.text.SourceStart()));
      continue;
    }
    pieces.clear();
    pieces.push_back(std::move(seg.text));
    if (pre_tokenizer_ != nullptr) {
      if (absl::Status s = pre_tokenizer_->PreTokenize(&pieces); !s.ok()) return s;
    }
    for (const NormalizedText& piece : pieces) {
      if (piece.empty()) continue;
      tokens.clear();
      if (absl::Status s = model_->Tokenize(piece.text, &tokens); !s.ok()) return s;
      for (const BpeModel::Token& t : tokens) {
        out->ids.push_back(t.id);
        out->starts.push_back(static_cast<int32_t>(piece.source[t.begin]));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Tokenizer::Encoding> Tokenizer::EncodeWithOffsets(std::string_view text,
                                                                 bool add_special_tokens) const {
  const std::string clean = SanitizeUtf8(text);
  Encoding out;
  if (add_special_tokens) {
    out.ids = template_.prefix;
    out.starts.assign(template_.prefix.size(), -1);
  }
  std::vector<AddedVocabulary::Segment> segments;
  added_.Split(NormalizedText::FromOriginal(clean, 0), /*normalized_tokens=*/false, &segments);
  for (AddedVocabulary::Segment& seg : segments) {
    if (seg.token_id >= 0) {
      out.ids.push_back(seg.token_id);
      out.starts.push_back(static_cast<int32_t>(seg.text.SourceStart()));
    } else if (absl::Status s = EncodeStretch(std::move(seg.text), &out); !s.ok()) {
      return s;
    }
  }
  if (add_special_tokens) {
    out.ids.insert(out.ids.end(), template_.suffix.begin(), template_.suffix.end());
    out.starts.insert(out.starts.end(), template_.suffix.size(), -1);
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text,
                                                       bool add_special_tokens) const {
  absl::StatusOr<Encoding> enc = EncodeWithOffsets(text, add_special_tokens);
  if (!enc.ok()) return enc.status();
  return std::move(enc->ids);
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (const AddedToken* added = added_.FindById(id); added != nullptr) {
      if (!(skip_special_tokens && added->special)) tokens.push_back(added->content);
      continue;
    }
    const std::string& token = model_->IdToToken(id);
    if (token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is outside the vocabulary (size ", vocab_size(), ")"));
    }
    tokens.push_back(token);
  }
  if (decoder_ != nullptr) {
    if (absl::Status s = decoder_->DecodeChain(&tokens); !s.ok()) return s;
  }
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

int32_t Tokenizer::TokenToId(std::string_view token) const {
  if (const int32_t id = added_.IdOf(token); id >= 0) return id;
  return model_->TokenToId(token);
}

std::string Tokenizer::IdToToken(int32_t id) const {
  if (const AddedToken* added = added_.FindById(id); added != nullptr) return added->content;
  return model_->IdToToken(id);
}

size_t Tokenizer::vocab_size() const { return model_->vocab_size(); }

bool Tokenizer::IsSpecial(int32_t id) const {
  const AddedToken* added = added_.FindById(id);
  return added != nullptr && added->special;
}

}  // namespace rigtune::data
