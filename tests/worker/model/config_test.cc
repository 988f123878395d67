#include "worker/model/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

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

// Mistral-Nemo: head_dim 128 with 32 heads on a 5120-wide residual.
TEST(ModelConfigTest, HonoursHeadDimOtherThanHiddenOverHeads) {
  auto c = ParseModelConfig(R"({"architectures": ["MistralForCausalLM"], "vocab_size": 131072,
      "hidden_size": 5120, "intermediate_size": 14336, "num_hidden_layers": 40,
      "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
      "rope_theta": 1000000.0, "sliding_window": null})",
                            "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_TRUE(c->sliding_layers.empty());
  auto preset = RandomModelConfig("random:mistral-nemo-12b");
  ASSERT_TRUE(preset.ok()) << preset.status();
  EXPECT_EQ(preset->NumParameters(), c->NumParameters());
  EXPECT_NEAR(static_cast<double>(c->NumParameters()), 12.25e9, 0.05e9);
}

TEST(ModelConfigTest, MistralSlidingWindowAppliesToEveryLayer) {
  auto c = ParseModelConfig(R"({"architectures": ["MistralForCausalLM"], "vocab_size": 10,
      "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2,
      "num_attention_heads": 2, "sliding_window": 4096})",
                            "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_TRUE(c->IsSlidingLayer(0));
  EXPECT_TRUE(c->IsSlidingLayer(1));
}

TEST(ModelConfigTest, QwenSlidingWindowFromMaxWindowLayers) {
  const std::string base = R"("architectures": ["Qwen2ForCausalLM"], "vocab_size": 10,
      "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 4,
      "num_attention_heads": 2, "sliding_window": 16, "max_window_layers": 2)";
  auto on = ParseModelConfig("{" + base + R"(, "use_sliding_window": true})", "x");
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_EQ(on->sliding_layers, (std::vector<bool>{false, false, true, true}));
  EXPECT_EQ(on->sliding_window, 16);
  auto off = ParseModelConfig("{" + base + R"(, "use_sliding_window": false})", "x");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_TRUE(off->sliding_layers.empty());
}

// Qwen3-0.6B's config.json (transformers 5 rope_parameters).
TEST(ModelConfigTest, ParsesQwen3) {
  auto c = ParseModelConfig(R"({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
      "vocab_size": 151936, "hidden_size": 1024, "intermediate_size": 3072,
      "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
      "head_dim": 128, "hidden_act": "silu", "rms_norm_eps": 1e-6, "attention_bias": false,
      "tie_word_embeddings": true, "use_sliding_window": false, "sliding_window": null,
      "max_window_layers": 28, "layer_types": ["full_attention", "full_attention",
      "full_attention", "full_attention", "full_attention", "full_attention",
      "full_attention", "full_attention", "full_attention", "full_attention",
      "full_attention", "full_attention", "full_attention", "full_attention",
      "full_attention", "full_attention", "full_attention", "full_attention",
      "full_attention", "full_attention", "full_attention", "full_attention",
      "full_attention", "full_attention", "full_attention", "full_attention",
      "full_attention", "full_attention"],
      "rope_parameters": {"rope_type": "default", "rope_theta": 1000000}})",
                            "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 128);  // 16 heads * 128 = 2048 != 1024
  EXPECT_TRUE(c->qk_norm);
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_TRUE(c->sliding_layers.empty());
  EXPECT_DOUBLE_EQ(c->rope.theta, 1e6);
  EXPECT_FALSE(c->norm_plus_one);
  EXPECT_EQ(c->activation, Activation::kSilu);
}

// gemma-2-2b's config.json.
TEST(ModelConfigTest, ParsesGemma2) {
  auto c = ParseModelConfig(R"({"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
      "vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216,
      "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
      "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
      "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256,
      "sliding_window": 4096, "attn_logit_softcapping": 50.0,
      "final_logit_softcapping": 30.0, "rope_theta": 10000.0, "rms_norm_eps": 1e-06})",
                            "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->tie_word_embeddings);  // Gemma's default
  EXPECT_TRUE(c->norm_plus_one);
  EXPECT_TRUE(c->sandwich_norms);
  EXPECT_FALSE(c->qk_norm);
  EXPECT_EQ(c->activation, Activation::kGeluTanh);
  EXPECT_DOUBLE_EQ(c->embed_scale, std::sqrt(2304.0));
  EXPECT_DOUBLE_EQ(c->attention_scale, 1.0 / 16.0);
  EXPECT_DOUBLE_EQ(c->attn_softcap, 50.0);
  EXPECT_DOUBLE_EQ(c->final_softcap, 30.0);
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_TRUE(c->IsSlidingLayer(0));  // sliding, full, sliding, ...
  EXPECT_FALSE(c->IsSlidingLayer(1));
  EXPECT_TRUE(c->IsSlidingLayer(24));
  EXPECT_FALSE(c->IsSlidingLayer(25));
  EXPECT_FALSE(c->has_local_rope);
}

// gemma-3-1b-it's config.json (the pre-transformers-5 rope fields).
constexpr const char* kGemma3 = R"({"architectures": ["Gemma3ForCausalLM"],
  "model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 1152,
  "intermediate_size": 6912, "num_hidden_layers": 26, "num_attention_heads": 4,
  "num_key_value_heads": 1, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
  "query_pre_attn_scalar": 256, "rope_local_base_freq": 10000, "rope_theta": 1000000,
  "rope_scaling": null, "sliding_window": 512, "sliding_window_pattern": 6,
  "final_logit_softcapping": null, "attn_logit_softcapping": null,
  "max_position_embeddings": 32768})";

TEST(ModelConfigTest, ParsesGemma3Text) {
  auto c = ParseModelConfig(kGemma3, "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->qk_norm);
  EXPECT_TRUE(c->sandwich_norms);
  EXPECT_DOUBLE_EQ(c->attn_softcap, 0.0);
  EXPECT_DOUBLE_EQ(c->final_softcap, 0.0);
  EXPECT_TRUE(c->has_local_rope);
  EXPECT_DOUBLE_EQ(c->rope.theta, 1e6);
  EXPECT_DOUBLE_EQ(c->local_rope.theta, 1e4);
  EXPECT_EQ(c->sliding_window, 512);
  for (int64_t i = 0; i < 26; ++i) EXPECT_EQ(c->IsSlidingLayer(i), (i + 1) % 6 != 0) << i;
  auto preset = RandomModelConfig("random:gemma3-1b");
  ASSERT_TRUE(preset.ok()) << preset.status();
  EXPECT_EQ(preset->NumParameters(), c->NumParameters());
  EXPECT_EQ(preset->sliding_layers, c->sliding_layers);
}

TEST(ModelConfigTest, ParsesGemma3NestedRopeParameters) {
  auto c = ParseModelConfig(R"({"architectures": ["Gemma3ForCausalLM"], "vocab_size": 10,
      "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2,
      "num_attention_heads": 2, "head_dim": 4,
      "layer_types": ["sliding_attention", "full_attention"], "sliding_window": 3,
      "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0,
                                             "rope_theta": 1000000.0},
                          "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}})",
                            "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, "linear");
  EXPECT_DOUBLE_EQ(c->rope.factor, 8.0);
  EXPECT_EQ(c->local_rope.type, "default");
  EXPECT_DOUBLE_EQ(c->local_rope.theta, 1e4);
  EXPECT_TRUE(c->IsSlidingLayer(0));
  EXPECT_FALSE(c->IsSlidingLayer(1));
}

// Config features outside what the engine computes are errors naming the field.
TEST(ModelConfigTest, UnsupportedFeaturesNameTheField) {
  const std::string base = R"("vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
      "num_hidden_layers": 2, "num_attention_heads": 2, "head_dim": 4)";
  const std::pair<std::string, std::string> cases[] = {
      {R"("architectures": ["Gemma2ForCausalLM"], "hidden_activation": "gelu")",
       "hidden_activation"},
      {R"("architectures": ["LlamaForCausalLM"], "hidden_act": "gelu")", "hidden_act"},
      {R"("architectures": ["Gemma2ForCausalLM"], "layer_types": ["full_attention"])",
       "layer_types"},
      {R"("architectures": ["Gemma2ForCausalLM"],
          "layer_types": ["full_attention", "chunked_attention"])",
       "layer_types[1]"},
      {R"("architectures": ["Gemma2ForCausalLM"], "sliding_window": null)", "sliding_window"},
      {R"("architectures": ["Gemma3ForCausalLM"], "use_bidirectional_attention": true)",
       "use_bidirectional_attention"},
      {R"("architectures": ["Gemma3ForCausalLM"], "text_config": {})", "text_config"},
      {R"("architectures": ["LlamaForCausalLM"],
          "rope_parameters": {"full_attention": {"rope_type": "default"}})",
       "rope_parameters"},
      {R"("architectures": ["Gemma3ForCausalLM"],
          "rope_parameters": {"full_attention": {"rope_type": "yarn"}})",
       "rope_parameters.full_attention.rope_type"},
      {R"("architectures": ["Gemma2ForCausalLM"], "query_pre_attn_scalar": 0)",
       "query_pre_attn_scalar"},
  };
  for (const auto& [fields, field] : cases) {
    auto c = ParseModelConfig("{" + fields + ", " + base + "}", "m/config.json");
    ASSERT_FALSE(c.ok()) << fields;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << fields;
    EXPECT_THAT(c.status().message(), HasSubstr("m/config.json: " + field)) << fields;
  }
}

// n longrope factors as a JSON list.
std::string Factors(int n, double first) {
  std::string out = "[";
  for (int i = 0; i < n; ++i) out += (i ? ", " : "") + std::to_string(first + 0.01 * i);
  return out + "]";
}

// Phi-3.5-mini-instruct's shape and rope fields.
std::string Phi35Mini(const std::string& extra = "") {
  return R"({"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "vocab_size": 32064,
      "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
      "num_attention_heads": 32, "num_key_value_heads": 32, "hidden_act": "silu",
      "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
      "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 262144,
      "tie_word_embeddings": false, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
      "attention_dropout": 0.0, "rope_scaling": {"type": "longrope", "short_factor": )" +
         Factors(48, 1.0) + R"(, "long_factor": )" + Factors(48, 1.1) + "}" + extra + "}";
}

TEST(ModelConfigTest, ParsesPhi35MiniWithLongRope) {
  auto c = ParseModelConfig(Phi35Mini(), "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->fused_projections);
  EXPECT_EQ(c->head_dim, 96);
  EXPECT_EQ(c->RotaryDim(), 96);
  EXPECT_EQ(c->rope.type, "longrope");
  EXPECT_EQ(c->rope.original_max_position_embeddings, 4096);
  // transformers: factor = 131072 / 4096, attention factor
  // sqrt(1 + ln(factor) / ln(4096)).
  EXPECT_DOUBLE_EQ(c->rope.factor, 32.0);
  EXPECT_DOUBLE_EQ(c->rope.attention_factor,
                   std::sqrt(1.0 + std::log(32.0) / std::log(4096.0)));
  ASSERT_EQ(c->rope.short_factor.size(), 48u);
  EXPECT_DOUBLE_EQ(c->rope.long_factor[1], 1.11);
  EXPECT_EQ(c->sliding_window, 262144);  // Mistral-style: every layer
  EXPECT_EQ(c->sliding_layers, std::vector<bool>(32, true));
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_NEAR(static_cast<double>(c->NumParameters()), 3.82e9, 0.01e9);
  // The job's context picks the factors: short up to the pre-training length.
  ModelConfig job = *c;
  UseContextLength(&job, 4096);
  EXPECT_FALSE(job.rope.use_long_factor);
  UseContextLength(&job, 4097);
  EXPECT_TRUE(job.rope.use_long_factor);
}

// What transformers 5 writes for a Phi-3 config: the pre-training length
// both beside and inside rope_parameters.
TEST(ModelConfigTest, Phi3Transformers5RopeParametersPickLongFactorsByContext) {
  auto c = ParseModelConfig(R"({"architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
      "vocab_size": 160, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
      "num_attention_heads": 4, "max_position_embeddings": 256,
      "original_max_position_embeddings": 16, "rope_parameters": {
        "long_factor": [2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5],
        "original_max_position_embeddings": 16, "partial_rotary_factor": 1.0,
        "rope_theta": 10000.0, "rope_type": "longrope",
        "short_factor": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7]}})",
                            "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, "longrope");
  EXPECT_EQ(c->rope.original_max_position_embeddings, 16);
  EXPECT_DOUBLE_EQ(c->rope.attention_factor, std::sqrt(2.0));  // factor 256 / 16
  EXPECT_EQ(c->RotaryDim(), 16);
  UseContextLength(&*c, 24);
  EXPECT_TRUE(c->rope.use_long_factor);
  UseContextLength(&*c, 16);
  EXPECT_FALSE(c->rope.use_long_factor);
}

TEST(ModelConfigTest, ParsesPhi4MiniPartialRotaryAndTiedEmbeddings) {
  auto c = ParseModelConfig(R"({"architectures": ["Phi3ForCausalLM"], "vocab_size": 200064,
      "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
      "num_attention_heads": 24, "num_key_value_heads": 8, "partial_rotary_factor": 0.75,
      "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
      "tie_word_embeddings": true, "sliding_window": 262144,
      "rope_scaling": {"type": "longrope", "short_factor": )" +
                                Factors(48, 1.0) + R"(, "long_factor": )" + Factors(48, 1.1) +
                                "}}",
                            "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->RotaryDim(), 96);  // 3/4 of each head rotates
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_NEAR(static_cast<double>(c->NumParameters()), 3.84e9, 0.01e9);
}

TEST(ModelConfigTest, Phi3UnsupportedFieldsAreNamed) {
  const std::pair<std::string, std::string> cases[] = {
      {Phi35Mini(R"(, "resid_pdrop": 0.1)"), "resid_pdrop"},
      {Phi35Mini(R"(, "partial_rotary_factor": 1.5)"), "partial_rotary_factor"},
      {Phi35Mini(R"(, "hidden_act": "gelu_new")"), "hidden_act"},
  };
  for (const auto& [json, field] : cases) {
    auto c = ParseModelConfig(json, "m/config.json");
    ASSERT_FALSE(c.ok()) << field;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(c.status().message(), HasSubstr("m/config.json: " + field)) << field;
  }
  const std::string base = R"({"architectures": ["Phi3ForCausalLM"], "vocab_size": 10,
      "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
      "num_attention_heads": 2, "max_position_embeddings": 64, )";
  const std::pair<std::string, std::string> rope_cases[] = {
      // 8-wide heads: 4 factors each
      {R"("original_max_position_embeddings": 16, "rope_scaling": {"type": "longrope",
          "short_factor": [1, 1, 1], "long_factor": [1, 1, 1, 1]}})",
       "rope_scaling.short_factor"},
      {R"("rope_scaling": {"type": "longrope", "short_factor": [1, 1, 1, 1],
          "long_factor": [1, 1, 1, 1]}})",
       "original_max_position_embeddings"},
      {R"("rope_scaling": {"type": "longrope", "short_factor": [1, 1, 1, 1]}})",
       "rope_scaling.long_factor"},
      {R"("rope_scaling": {"type": "yarn", "factor": 2.0}})", "rope_scaling.rope_type"},
  };
  for (const auto& [fields, field] : rope_cases) {
    auto c = ParseModelConfig(base + fields, "m/config.json");
    ASSERT_FALSE(c.ok()) << fields;
    EXPECT_THAT(c.status().message(), HasSubstr("m/config.json: " + field)) << fields;
  }
}

TEST(RandomModelConfigTest, Phi3MiniPresetMatchesItsConfigJson) {
  auto preset = RandomModelConfig("random:phi3-mini");
  auto file = ParseModelConfig(Phi35Mini(), "x");
  ASSERT_TRUE(preset.ok()) << preset.status();
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(preset->fused_projections);
  EXPECT_EQ(preset->architecture, "Phi3ForCausalLM");
  EXPECT_EQ(preset->head_dim, 96);
  EXPECT_EQ(preset->NumParameters(), file->NumParameters());
}

TEST(RandomModelConfigTest, FamilyPresets) {
  auto qwen3 = RandomModelConfig("random:qwen3-8b");
  ASSERT_TRUE(qwen3.ok()) << qwen3.status();
  EXPECT_TRUE(qwen3->qk_norm);
  EXPECT_NEAR(static_cast<double>(qwen3->NumParameters()), 8.19e9, 0.05e9);
  auto gemma2 = RandomModelConfig("random:gemma2-9b,layers=4");
  ASSERT_TRUE(gemma2.ok()) << gemma2.status();
  EXPECT_EQ(gemma2->head_dim, 256);  // kept under a size override
  EXPECT_EQ(gemma2->sliding_layers, (std::vector<bool>{true, false, true, false}));
  auto full = RandomModelConfig("random:gemma2-9b");
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_NEAR(static_cast<double>(full->NumParameters()), 9.24e9, 0.05e9);
  auto qwen25 = RandomModelConfig("random:qwen2.5-7b");
  ASSERT_TRUE(qwen25.ok()) << qwen25.status();
  EXPECT_TRUE(qwen25->qkv_bias);
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
