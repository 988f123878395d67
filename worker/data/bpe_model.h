// BpeModel: the `model` section of tokenizer.json when its type is "BPE".
//
// Encodes one pre-tokenized piece: the piece starts as one symbol per
// character (a character missing from the vocabulary becomes its UTF-8 bytes
// as <0xNN> tokens with `byte_fallback`, else the unknown token, with runs of
// unknowns fused into one when `fuse_unk`), then the adjacent pair with the
// lowest merge rank is merged, leftmost first, until no listed merge applies.
// With `ignore_merges` (Llama 3) a piece that is itself in the vocabulary is
// one token. Results are cached per piece; the model is safe to use from
// several threads. Example:
//
//   auto bpe = BpeModel::FromJson(tokenizer_json["model"]);
//   std::vector<BpeModel::Token> out;
//   (*bpe)->Tokenize("Ġhello", &out);   // e.g. {id("Ġhel"), 0}, {id("lo"), 5}
#ifndef RIGTUNE_WORKER_DATA_BPE_MODEL_H_
#define RIGTUNE_WORKER_DATA_BPE_MODEL_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"

namespace rigtune::data {

class BpeModel {
 public:
  struct Token {
    int32_t id;
    uint32_t begin;  // byte offset of the token's first byte within the piece
  };

  // Fails with InvalidArgument naming the field: a type other than "BPE",
  // merges that name tokens missing from the vocabulary, continuing-subword
  // prefixes or end-of-word suffixes (unused by the supported families).
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& model);

  // Appends the tokens of `piece`. Fails when a character is not in the
  // vocabulary and there is neither byte fallback nor an unknown token.
  absl::Status Tokenize(std::string_view piece, std::vector<Token>* out) const;

  // -1 when `token` is not in the vocabulary.
  int32_t TokenToId(std::string_view token) const;
  // Empty for ids outside the vocabulary.
  const std::string& IdToToken(int32_t id) const;
  // One more than the largest id.
  size_t vocab_size() const { return id_to_token_.size(); }
  // Registers an added token's id so IdToToken covers it (ids already in the
  // vocabulary keep their entry).
  void AddIdToken(int32_t id, const std::string& token);

 private:
  BpeModel() = default;
  absl::Status TokenizeUncached(std::string_view piece, std::vector<Token>* out) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  // (left id << 32 | right id) -> (rank, merged id)
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  std::array<int32_t, 256> byte_ids_{};  // <0xNN> ids, -1 when absent
  int32_t unk_id_ = -1;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;

  mutable absl::Mutex mu_;
  mutable absl::flat_hash_map<std::string, std::vector<Token>> cache_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rigtune::data

#endif  // RIGTUNE_WORKER_DATA_BPE_MODEL_H_
