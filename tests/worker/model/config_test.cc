#include "worker/model/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace rigtune::model {
namespace {

using ::testing::HasSubstr;

constexpr const char* kLlama3 = R"({
  "architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 4096,
  "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
  "num_key_value_heads": 8, "rms_norm_eps": 1e-5, "max_position_embeddings": 131072,
  "rope_theta": 500000.0, "tie_word_embeddings": false,
  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})";

TEST(ModelConfigTest, ParsesLlama3WithRopeScaling) {
  auto c = ParseModelConfig(kLlama3, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->rope.type, "llama3");
  EXPECT_DOUBLE_EQ(c->rope.theta, 500000.0);
  EXPECT_EQ(c->rope.original_max_position_embeddings, 8192);
  EXPECT_FALSE(c->qkv_bias);
}

TEST(ModelConfigTest, ReadsTransformers5RopeParameters) {
  auto c = ParseModelConfig(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8,
      "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
      "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0}})",
                            "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, "linear");
  EXPECT_DOUBLE_EQ(c->rope.factor, 2.0);
  EXPECT_DOUBLE_EQ(c->rope.theta, 1000.0);
  EXPECT_EQ(c->num_kv_heads, 2);  // defaults to the head count
}

TEST(ModelConfigTest, Qwen2HasQkvBiasButNoOutputBias) {
  auto c = ParseModelConfig(R"({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 10,
      "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
      "num_attention_heads": 2, "num_key_value_heads": 1})",
                            "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_FALSE(c->o_bias);
}

TEST(ModelConfigTest, RejectsUnsupportedArchitectureByName) {
  auto c = ParseModelConfig(R"({"architectures": ["GPTNeoXForCausalLM"]})", "m/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("GPTNeoXForCausalLM"));
  EXPECT_THAT(c.status().message(), HasSubstr("m/config.json"));
}

TEST(ModelConfigTest, MissingFieldIsNamed) {
  auto c = ParseModelConfig(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 10})", "x");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("hidden_size"));
}

TEST(ModelConfigTest, KvHeadsMustDivideHeads) {
  auto c = ParseModelConfig(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 10,
      "hidden_size": 12, "intermediate_size": 16, "num_hidden_layers": 1,
      "num_attention_heads": 3, "num_key_value_heads": 2})",
                            "x");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("num_key_value_heads"));
}

TEST(ModelConfigTest, MissingFolderNamesThePath) {
  auto c = LoadModelConfig("/nonexistent/model");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("/nonexistent/model/config.json"));
}

TEST(RandomModelConfigTest, Llama2_70bPreset) {
  auto c = RandomModelConfig("random:llama2-70b");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_layers, 80);
  EXPECT_EQ(c->hidden_size, 8192);
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_NEAR(static_cast<double>(c->NumParameters()), 68.98e9, 0.05e9);
}

// The preset is the shape and RoPE of Meta-Llama-3.1-8B's config.json.
TEST(RandomModelConfigTest, Llama31_8bPresetMatchesItsConfigJson) {
  auto preset = RandomModelConfig("random:llama3.1-8b");
  auto file = ParseModelConfig(kLlama3, "config.json");
  ASSERT_TRUE(preset.ok()) << preset.status();
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(preset->max_position_embeddings, 131072);
  EXPECT_EQ(preset->NumParameters(), file->NumParameters());
  EXPECT_EQ(preset->num_kv_heads, file->num_kv_heads);
  EXPECT_EQ(preset->rope.type, "llama3");
  EXPECT_DOUBLE_EQ(preset->rope.theta, file->rope.theta);
  EXPECT_DOUBLE_EQ(preset->rope.factor, file->rope.factor);
  EXPECT_DOUBLE_EQ(preset->rope.low_freq_factor, file->rope.low_freq_factor);
  EXPECT_DOUBLE_EQ(preset->rope.high_freq_factor, file->rope.high_freq_factor);
  EXPECT_EQ(preset->rope.original_max_position_embeddings,
            file->rope.original_max_position_embeddings);
}

TEST(RandomModelConfigTest, PresetWithOverrides) {
  auto c = RandomModelConfig("random:llama3-8b,layers=2");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_layers, 2);
  EXPECT_EQ(c->vocab_size, 128256);
}

TEST(RandomModelConfigTest, UnknownPresetIsAnError) {
  auto c = RandomModelConfig("random:gpt5");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("gpt5"));
}

}  // namespace
}  // namespace rigtune::model
