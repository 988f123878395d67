// Test fixture: a tokenizer.json whose model has one token per printable
// ASCII character (id = the byte value) and no merges, plus optional merges
// and added tokens, so expected ids can be written by hand.
#ifndef RIGTUNE_TESTS_WORKER_DATA_CHAR_TOKENIZER_H_
#define RIGTUNE_TESTS_WORKER_DATA_CHAR_TOKENIZER_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/data/tokenizer.h"

namespace rigtune::data::testing {

// Ids of the added tokens below.
inline constexpr int kBos = 200;    // <s>
inline constexpr int kEos = 201;    // </s>
inline constexpr int kEot = 202;    // <|eot_id|>
inline constexpr int kStart = 203;  // <|start_header_id|>
inline constexpr int kEnd = 204;    // <|end_header_id|>

inline nlohmann::json CharTokenizerJson() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int c = 32; c < 127; ++c) vocab[std::string(1, static_cast<char>(c))] = c;
  vocab["\n"] = 10;
  vocab["<unk>"] = 0;
  nlohmann::json added = nlohmann::json::array();
  const std::vector<std::pair<int, std::string>> specials = {{kBos, "<s>"},
                                                             {kEos, "</s>"},
                                                             {kEot, "<|eot_id|>"},
                                                             {kStart, "<|start_header_id|>"},
                                                             {kEnd, "<|end_header_id|>"}};
  for (const auto& [id, content] : specials) {
    vocab[content] = id;
    added.push_back({{"id", id},
                     {"content", content},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", nullptr},
          {"post_processor", nullptr},
          {"decoder", nullptr},
          {"model",
           {{"type", "BPE"},
            {"vocab", vocab},
            {"merges", nlohmann::json::array()},
            {"unk_token", "<unk>"},
            {"fuse_unk", false},
            {"byte_fallback", false}}}};
}

inline nlohmann::json CharTokenizerConfig() {
  return {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"add_bos_token", true}};
}

inline std::unique_ptr<Tokenizer> MakeTokenizer(
    const nlohmann::json& spec, const nlohmann::json& config = CharTokenizerConfig()) {
  auto tok = Tokenizer::FromJson(spec.dump(), config.dump());
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

inline std::vector<int32_t> Ids(const std::string& ascii) {
  std::vector<int32_t> ids;
  for (char c : ascii) ids.push_back(static_cast<unsigned char>(c));
  return ids;
}

}  // namespace rigtune::data::testing

#endif  // RIGTUNE_TESTS_WORKER_DATA_CHAR_TOKENIZER_H_
