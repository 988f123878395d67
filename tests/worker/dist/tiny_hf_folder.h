// Test fixture: a tiny random Llama model folder in Hugging Face layout
// (config.json, model.safetensors) with the character tokenizer of
// tests/worker/data/char_tokenizer.h, and a text dataset for it: what a job
// with a real dataset (and validation data) needs, made in milliseconds.
#ifndef RIGTUNE_TESTS_WORKER_DIST_TINY_HF_FOLDER_H_
#define RIGTUNE_TESTS_WORKER_DIST_TINY_HF_FOLDER_H_

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <string>

#include "nlohmann/json.hpp"
#include "tests/worker/data/char_tokenizer.h"
#include "worker/model/safetensors.h"

namespace rigtune::testing {

// Writes the model folder `dir` (created) and returns it.
inline std::string WriteTinyHfModel(const std::string& dir) {
  constexpr int64_t kVocab = 208, kHidden = 64, kInter = 128, kLayers = 2, kKv = 32;
  EXPECT_TRUE(model::CreateDirectories(dir).ok());
  nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}},
                           {"vocab_size", kVocab},
                           {"hidden_size", kHidden},
                           {"intermediate_size", kInter},
                           {"num_hidden_layers", kLayers},
                           {"num_attention_heads", 4},
                           {"num_key_value_heads", 2},
                           {"max_position_embeddings", 256},
                           {"rms_norm_eps", 1e-5},
                           {"tie_word_embeddings", false},
                           {"bos_token_id", data::testing::kBos},
                           {"eos_token_id", data::testing::kEos}};
  std::ofstream(dir + "/config.json") << config.dump();
  std::ofstream(dir + "/tokenizer.json") << data::testing::CharTokenizerJson().dump();
  std::ofstream(dir + "/tokenizer_config.json") << data::testing::CharTokenizerConfig().dump();
  at::manual_seed(0);
  auto w = [](int64_t rows, int64_t cols) { return at::randn({rows, cols}) * 0.08; };
  std::map<std::string, at::Tensor> tensors = {{"model.embed_tokens.weight", w(kVocab, kHidden)},
                                               {"lm_head.weight", w(kVocab, kHidden)},
                                               {"model.norm.weight", at::ones({kHidden})}};
  for (int64_t i = 0; i < kLayers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    tensors[p + "input_layernorm.weight"] = at::ones({kHidden});
    tensors[p + "post_attention_layernorm.weight"] = at::ones({kHidden});
    tensors[p + "self_attn.q_proj.weight"] = w(kHidden, kHidden);
    tensors[p + "self_attn.k_proj.weight"] = w(kKv, kHidden);
    tensors[p + "self_attn.v_proj.weight"] = w(kKv, kHidden);
    tensors[p + "self_attn.o_proj.weight"] = w(kHidden, kHidden);
    tensors[p + "mlp.gate_proj.weight"] = w(kInter, kHidden);
    tensors[p + "mlp.up_proj.weight"] = w(kInter, kHidden);
    tensors[p + "mlp.down_proj.weight"] = w(kHidden, kInter);
  }
  EXPECT_TRUE(model::WriteSafetensors(dir + "/model.safetensors", tensors).ok());
  return dir;
}

// A text-format dataset of `n` short lines of varied length; returns `path`.
inline std::string WriteTextDataset(const std::string& path, int n) {
  std::ofstream out(path);
  for (int i = 0; i < n; ++i) {
    std::string text = "line " + std::to_string(i) + ":";
    for (int k = 0; k < 1 + (i * 7) % 5; ++k) text += " ab" + std::to_string((i + k) % 10);
    out << nlohmann::json{{"text", text}}.dump() << "\n";
  }
  return path;
}

}  // namespace rigtune::testing

#endif  // RIGTUNE_TESTS_WORKER_DIST_TINY_HF_FOLDER_H_
