#include "worker/data/bpe_model.h"

#include <cstdio>
#include <queue>

#include "absl/strings/str_cat.h"
#include "worker/data/tokenizer_json.h"
#include "worker/data/utf8.h"

namespace rigtune::data {
namespace {

constexpr size_t kCacheCapacity = 200000;
constexpr size_t kMaxCachedPieceBytes = 256;

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

absl::Status MergeError(size_t index, const std::string& why) {
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer.json: model.merges[", index, "]: ", why));
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const nlohmann::json& model) {
  absl::StatusOr<std::string> type = JsonString(model, "type", "model");
  if (!type.ok()) return type.status();
  if (*type != "BPE") {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: model.type \"", *type,
                                                   "\" is not supported (supported: BPE)"));
  }
  for (const char* field : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(field);
    if (it != model.end() && !it->is_null() &&
        !(it->is_string() && it->get<std::string>().empty())) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: model.", field, " is not supported"));
    }
  }
  if (auto it = model.find("dropout");
      it != model.end() && !it->is_null() && it->get<double>() > 0) {
    return absl::InvalidArgumentError(
        "tokenizer.json: model.dropout must be null for training data");
  }
  std::unique_ptr<BpeModel> bpe(new BpeModel());
  const auto vocab = model.find("vocab");
  if (vocab == model.end() || !vocab->is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: model.vocab: expected an object");
  }
  for (const auto& [token, id_json] : vocab->items()) {
    if (!id_json.is_number_integer() || id_json.get<int64_t>() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: model.vocab[\"", token, "\"]: expected an id >= 0"));
    }
    const auto id = id_json.get<int32_t>();
    bpe->vocab_[token] = id;
    if (static_cast<size_t>(id) >= bpe->id_to_token_.size()) bpe->id_to_token_.resize(id + 1);
    bpe->id_to_token_[id] = token;
  }
  const auto merges = model.find("merges");
  if (merges != model.end() && merges->is_array()) {
    for (size_t i = 0; i < merges->size(); ++i) {
      const nlohmann::json& m = (*merges)[i];
      std::string left, right;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ');
        if (space == std::string::npos) return MergeError(i, "expected \"left right\"");
        left = s.substr(0, space);
        right = s.substr(space + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        left = m[0].get<std::string>();
        right = m[1].get<std::string>();
      } else {
        return MergeError(i, "expected \"left right\" or [left, right]");
      }
      const int32_t l = bpe->TokenToId(left);
      const int32_t r = bpe->TokenToId(right);
      const int32_t merged = bpe->TokenToId(left + right);
      if (l < 0 || r < 0 || merged < 0) {
        return MergeError(i,
                          absl::StrCat("\"", left, "\" + \"", right, "\" is not in model.vocab"));
      }
      bpe->merges_.try_emplace(PairKey(l, r), static_cast<int32_t>(i), merged);
    }
  }
  if (auto it = model.find("unk_token"); it != model.end() && it->is_string()) {
    bpe->unk_id_ = bpe->TokenToId(it->get<std::string>());
    if (bpe->unk_id_ < 0) {
      return absl::InvalidArgumentError("tokenizer.json: model.unk_token is not in model.vocab");
    }
  }
  for (auto [field, target] : {std::pair<const char*, bool*>{"byte_fallback", &bpe->byte_fallback_},
                               {"fuse_unk", &bpe->fuse_unk_},
                               {"ignore_merges", &bpe->ignore_merges_}}) {
    absl::StatusOr<bool> value = JsonBool(model, field, false, "model");
    if (!value.ok()) return value.status();
    *target = *value;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    bpe->byte_ids_[b] = bpe->TokenToId(name);
  }
  return bpe;
}

int32_t BpeModel::TokenToId(std::string_view token) const {
  auto it = vocab_.find(absl::string_view(token.data(), token.size()));
  return it == vocab_.end() ? -1 : it->second;
}

const std::string& BpeModel::IdToToken(int32_t id) const {
  static const std::string* empty = new std::string();
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size()) return *empty;
  return id_to_token_[id];
}

void BpeModel::AddIdToken(int32_t id, const std::string& token) {
  if (static_cast<size_t>(id) >= id_to_token_.size()) id_to_token_.resize(id + 1);
  if (id_to_token_[id].empty()) id_to_token_[id] = token;
}

absl::Status BpeModel::Tokenize(std::string_view piece, std::vector<Token>* out) const {
  if (piece.empty()) return absl::OkStatus();
  const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
  if (cacheable) {
    absl::MutexLock lock(&mu_);
    if (auto it = cache_.find(absl::string_view(piece.data(), piece.size())); it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return absl::OkStatus();
    }
  }
  std::vector<Token> tokens;
  if (absl::Status s = TokenizeUncached(piece, &tokens); !s.ok()) return s;
  out->insert(out->end(), tokens.begin(), tokens.end());
  if (cacheable) {
    absl::MutexLock lock(&mu_);
    if (cache_.size() >= kCacheCapacity) cache_.clear();
    cache_.try_emplace(std::string(piece), std::move(tokens));
  }
  return absl::OkStatus();
}

absl::Status BpeModel::TokenizeUncached(std::string_view piece, std::vector<Token>* out) const {
  if (ignore_merges_) {
    if (const int32_t id = TokenToId(piece); id >= 0) {
      out->push_back({id, 0});
      return absl::OkStatus();
    }
  }
  struct Symbol {
    int32_t id;
    uint32_t begin;
    uint32_t len;
    int32_t prev;
    int32_t next;
    bool unk;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  auto push = [&symbols](int32_t id, uint32_t begin, uint32_t len, bool unk) {
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, begin, len, index - 1, index + 1, unk});
  };
  size_t pos = 0;
  while (pos < piece.size()) {
    const size_t begin = pos;
    DecodeUtf8(piece, &pos);
    const std::string_view ch = piece.substr(begin, pos - begin);
    if (const int32_t id = TokenToId(ch); id >= 0) {
      push(id, static_cast<uint32_t>(begin), static_cast<uint32_t>(ch.size()), false);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : ch) all = all && byte_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        for (size_t k = 0; k < ch.size(); ++k) {
          push(byte_ids_[static_cast<uint8_t>(ch[k])], static_cast<uint32_t>(begin + k), 1, false);
        }
        continue;
      }
    }
    if (unk_id_ < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer: character \"", std::string(ch),
                       "\" is not in the vocabulary and the model has no "
                       "unk_token or byte fallback"));
    }
    if (fuse_unk_ && !symbols.empty() && symbols.back().unk) {
      symbols.back().len += static_cast<uint32_t>(ch.size());
    } else {
      push(unk_id_, static_cast<uint32_t>(begin), static_cast<uint32_t>(ch.size()), true);
    }
  }
  if (!symbols.empty()) symbols.back().next = -1;

  struct Candidate {
    int32_t rank;
    int32_t left;  // symbol index
    int32_t left_id;
    int32_t right_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto consider = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    auto it = merges_.find(PairKey(symbols[left].id, symbols[right].id));
    if (it != merges_.end())
      queue.push({it->second.first, left, symbols[left].id, symbols[right].id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[c.left];
    if (left.len == 0 || left.id != c.left_id || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    if (right.id != c.right_id) continue;
    left.id = merges_.find(PairKey(c.left_id, c.right_id))->second.second;
    left.len += right.len;
    left.unk = false;
    right.len = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    consider(left.prev);
    consider(c.left);
  }
  for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
    out->push_back({symbols[i].id, symbols[i].begin});
  }
  return absl::OkStatus();
}

}  // namespace rigtune::data
