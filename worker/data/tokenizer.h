// Tokenizer: a Hugging Face `tokenizer.json` (plus tokenizer_config.json) that
// encodes and decodes exactly as the `tokenizers` library does, without Python.
//
// Pipeline per call (see the section headers for each stage):
//   1. bytes that are not valid UTF-8 become U+FFFD (utf8.h), as Python's
//      errors="replace" would before handing `str` to Hugging Face;
//   2. added tokens with normalized=false are cut out of the raw text
//      (added_vocabulary.h);
//   3. each remaining stretch is normalized (normalizers.h), then added tokens
//      with normalized=true are cut out;
//   4. the rest is pre-tokenized (pre_tokenizers.h) and each piece encoded by
//      the BPE model (bpe_model.h);
//   5. with add_special_tokens, the post-processor's tokens are placed around
//      the result (post_processor.h).
// Supported families: byte-level BPE with split regexes (GPT-2, Llama 3,
// Qwen2 without NFC) and Metaspace / byte-fallback BPE (Llama 2, Mistral).
// Anything else is rejected by Load with an error naming the field.
// A Tokenizer is immutable after loading and safe to share between threads.
//
// Example:
//   absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load("/models/llama3");
//   absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode("Hello", true);
//   absl::StatusOr<std::string> text = (*tok)->Decode(*ids, /*skip_special_tokens=*/true);
#ifndef RIGTUNE_WORKER_DATA_TOKENIZER_H_
#define RIGTUNE_WORKER_DATA_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/data/added_vocabulary.h"
#include "worker/data/bpe_model.h"
#include "worker/data/decoders.h"
#include "worker/data/normalizers.h"
#include "worker/data/post_processor.h"
#include "worker/data/pre_tokenizers.h"
#include "worker/data/tokenizer_config.h"

namespace rigtune::data {

class Tokenizer {
 public:
  struct Encoding {
    std::vector<int32_t> ids;
    // Byte offset, in the UTF-8-sanitized input, of the character each token
    // starts at; -1 for tokens the post-processor inserted.
    std::vector<int32_t> starts;
  };

  // Reads `model_dir`/tokenizer.json (required), tokenizer_config.json and
  // chat_template.jinja (optional). Errors name the file and field.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& model_dir);
  // Same from JSON text; `config_json` may be empty.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view tokenizer_json,
                                                             std::string_view config_json);

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_special_tokens) const;
  absl::StatusOr<Encoding> EncodeWithOffsets(std::string_view text, bool add_special_tokens) const;
  // Fails on ids outside the vocabulary.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const;

  // Added tokens first, then the model vocabulary; -1 when absent.
  int32_t TokenToId(std::string_view token) const;
  // Empty for unknown ids.
  std::string IdToToken(int32_t id) const;
  size_t vocab_size() const;
  bool IsSpecial(int32_t id) const;

  // Ids of tokenizer_config.json's tokens; -1 when not configured.
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  // The pad token, or the EOS token when none is configured (padding is
  // always masked out of attention and labels, so its identity is moot).
  int32_t pad_id() const { return pad_id_; }
  // Whether a plain-text example starts with BOS / ends with EOS when encoded
  // with special tokens: add_bos_token / add_eos_token when the config sets
  // them, otherwise whatever tokenizer.json's post-processor does.
  bool adds_bos() const { return adds_bos_; }
  bool adds_eos() const { return adds_eos_; }
  const TokenizerConfig& config() const { return config_; }

 private:
  Tokenizer() = default;
  absl::Status EncodeStretch(NormalizedText text, Encoding* out) const;

  AddedVocabulary added_;
  bool has_normalized_added_ = false;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Decoder> decoder_;
  SpecialTokenTemplate template_;
  TokenizerConfig config_;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  int32_t pad_id_ = -1;
  bool adds_bos_ = false;
  bool adds_eos_ = false;
};

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_TOKENIZER_H_
