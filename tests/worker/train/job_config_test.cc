#include "worker/train/job_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace rigtune::train {
namespace {

using ::testing::HasSubstr;

std::string Job(const std::string& extra) {
  return R"({"model": "random:tiny", "output_dir": "/tmp/out")" + extra + "}";
}

TEST(JobConfigTest, DefaultsFollowTheHeader) {
  auto c = ParseJobConfig(Job(""));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->lora.r, 64);
  EXPECT_EQ(c->lora.target_modules.size(), 7u);
  EXPECT_EQ(c->optim.schedule, "cosine");
  EXPECT_TRUE(c->train.activation_checkpointing);
  EXPECT_EQ(c->dist.sharding, "full_shard");
  EXPECT_EQ(c->dist.backend, "auto");
  EXPECT_FALSE(c->dist.offload_optimizer);
}

TEST(JobConfigTest, RoundTripsThroughJson) {
  auto c = ParseJobConfig(Job(R"(, "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj"]},
      "train": {"max_steps": 7, "dtype": "fp32"}, "optim": {"lr": 0.001},
      "dist": {"cpu_offload": true, "offload_optimizer": true})"));
  ASSERT_TRUE(c.ok()) << c.status();
  auto again = ParseJobConfig(JobConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(JobConfigToJson(*again), JobConfigToJson(*c));
  EXPECT_EQ(again->lora.r, 8);
  EXPECT_EQ(again->train.max_steps, 7);
  EXPECT_TRUE(again->dist.offload_optimizer);
}

struct BadCase {
  const char* extra;
  const char* field;
};

class JobConfigErrorTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(JobConfigErrorTest, ErrorNamesTheField) {
  auto c = ParseJobConfig(Job(GetParam().extra));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr(GetParam().field));
}

INSTANTIATE_TEST_SUITE_P(
    Fields, JobConfigErrorTest,
    ::testing::Values(BadCase{R"(, "lora": {"r": 0})", "lora.r"},
                      BadCase{R"(, "optim": {"lr": -0.1})", "optim.lr"},
                      BadCase{R"(, "optim": {"schedule": "step"})", "optim.schedule"},
                      BadCase{R"(, "train": {"batch_size": 0})", "train.batch_size"},
                      BadCase{R"(, "train": {"bacth_size": 2})", "train.bacth_size"},
                      BadCase{R"(, "train": {"max_steps": "ten"})", "train.max_steps"},
                      BadCase{R"(, "dist": {"sharding": "zero3"})", "dist.sharding"},
                      BadCase{R"(, "dist": {"backend": "mpi"})", "dist.backend"},
                      BadCase{R"(, "dist": {"offload_optimizer": "yes"})",
                              "dist.offload_optimizer"},
                      BadCase{R"(, "lora": {"dropout": 1.5})", "lora.dropout"},
                      BadCase{R"(, "lora": [])", "lora"},
                      BadCase{R"(, "lora": {"target_modules": ["qkv"]})", "lora.target_modules"},
                      BadCase{R"(, "colour": "blue")", "colour"},
                      BadCase{R"(, "dataset": {"path": "/d.jsonl", "validation_path": "/v.jsonl",
                                  "validation_fraction": 0.1})",
                              "dataset.validation_fraction"},
                      BadCase{R"(, "dataset": {"path": "/d.jsonl", "validation_fraction": 0.6})",
                              "dataset.validation_fraction"},
                      BadCase{R"(, "dataset": {"path": "/d.jsonl", "validation_fraction": -0.1})",
                              "dataset.validation_fraction"},
                      BadCase{R"(, "dataset": {"validation_fraction": 0.1})",
                              "dataset.validation_fraction"},
                      BadCase{R"(, "train": {"eval_every_steps": -1})", "train.eval_every_steps"},
                      BadCase{R"(, "train": {"early_stopping_patience": 2})",
                              "train.early_stopping_patience"},
                      BadCase{R"(, "dataset": {"chat_template_kwargs": [1]})",
                              "dataset.chat_template_kwargs"},
                      BadCase{R"(, "dataset": {"chat_template": 3})", "dataset.chat_template"},
                      BadCase{R"(, "train": {"mlp_chunk_tokens": -1})", "train.mlp_chunk_tokens"},
                      BadCase{R"(, "train": {"mlp_chunk_tokens": 4096}, "lora": {"dropout": 0.1})",
                              "train.mlp_chunk_tokens"},
                      BadCase{R"(, "train": {"base": "int8"})", "train.base"},
                      BadCase{R"(, "train": {"method": "full"})", "train.method"},
                      BadCase{R"(, "train": {"recompute": "mlp"})", "train.recompute"},
                      BadCase{R"(, "train": {"recompute": true})", "train.recompute"},
                      BadCase{R"(, "train": {"recompute": "keep_mlp",
                                  "activation_checkpointing": false})",
                              "train.recompute"},
                      BadCase{R"(, "train": {"recompute": "keep_mlp", "mlp_chunk_tokens": 4096})",
                              "train.recompute"},
                      BadCase{R"(, "train": {"recompute": "keep_mlp", "method": "dora"})",
                              "train.recompute"}));

TEST(JobConfigTest, RecomputeRoundTripsAndDefaultsToAuto) {
  auto c = ParseJobConfig(Job(R"(, "train": {"recompute": "keep_mlp"})"));
  ASSERT_TRUE(c.ok()) << c.status();
  auto again = ParseJobConfig(JobConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->train.recompute, "keep_mlp");
  // A job file without the key (every older one) gets auto.
  EXPECT_EQ(ParseJobConfig(Job(""))->train.recompute, "auto");
  EXPECT_TRUE(ParseJobConfig(Job(R"(, "train": {"recompute": "full"})")).ok());
  // auto and full go with anything; dropout only keeps those layers in full.
  EXPECT_TRUE(ParseJobConfig(Job(R"(, "train": {"recompute": "keep_mlp"},
                                    "lora": {"dropout": 0.1})")).ok());
  EXPECT_TRUE(ParseJobConfig(Job(R"(, "train": {"recompute": "auto", "method": "dora"})")).ok());
}

TEST(JobConfigTest, MlpChunkTokensRoundTripsAndDefaultsToAutomatic) {
  auto c = ParseJobConfig(Job(R"(, "train": {"mlp_chunk_tokens": 4096})"));
  ASSERT_TRUE(c.ok()) << c.status();
  auto again = ParseJobConfig(JobConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->train.mlp_chunk_tokens, 4096);
  EXPECT_EQ(ParseJobConfig(Job(""))->train.mlp_chunk_tokens, 0);
  // Automatic tiling with dropout is allowed: the trainer keeps such an MLP untiled.
  EXPECT_TRUE(ParseJobConfig(Job(R"(, "lora": {"dropout": 0.1})")).ok());
}

TEST(JobConfigTest, BaseAndMethodDefaultToQloraAndRoundTrip) {
  auto old = ParseJobConfig(Job(""));  // a job file from before train.base existed
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->train.base, "nf4");
  EXPECT_EQ(old->train.method, "lora");
  EXPECT_TRUE(ParseJobConfig(Job(R"(, "train": {"base": "hqq4"})")).ok());
  auto c = ParseJobConfig(Job(R"(, "train": {"base": "bf16", "method": "dora"})"));
  ASSERT_TRUE(c.ok()) << c.status();
  auto again = ParseJobConfig(JobConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->train.base, "bf16");
  EXPECT_EQ(again->train.method, "dora");
}

TEST(JobConfigTest, UnknownMethodListsTheImplementedOnes) {
  auto c = ParseJobConfig(Job(R"(, "train": {"method": "prefix_tuning"})"));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(),
              HasSubstr("must be one of lora, dora, full, llama_pro; got 'prefix_tuning'"));
}

TEST(JobConfigTest, LlamaProNeedsExpandEveryAndOnlyItTakesIt) {
  auto missing = ParseJobConfig(Job(R"(, "train": {"method": "llama_pro"})"));
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("train.expand_every:"));
  auto c = ParseJobConfig(Job(R"(, "train": {"method": "llama_pro", "expand_every": 4})"));
  ASSERT_TRUE(c.ok()) << c.status();
  auto again = ParseJobConfig(JobConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->train.expand_every, 4);
  auto stray = ParseJobConfig(Job(R"(, "train": {"expand_every": 4})"));
  ASSERT_FALSE(stray.ok());
  EXPECT_THAT(stray.status().message(), HasSubstr("only train.method llama_pro"));
}

TEST(JobConfigTest, FullFineTuningNeedsABf16Base) {
  auto quantized = ParseJobConfig(Job(R"(, "train": {"method": "full"})"));
  ASSERT_FALSE(quantized.ok());
  EXPECT_THAT(quantized.status().message(), HasSubstr("train.method: full"));
  EXPECT_THAT(quantized.status().message(), HasSubstr("train.base bf16 (got train.base nf4)"));
  auto c = ParseJobConfig(Job(R"(, "train": {"method": "full", "base": "bf16"})"));
  ASSERT_TRUE(c.ok()) << c.status();
  auto again = ParseJobConfig(JobConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->train.method, "full");
  // Offloading streams the trained weights and runs AdamW on the host.
  auto offload = ParseJobConfig(Job(R"(, "train": {"method": "full", "base": "bf16"},
      "dist": {"cpu_offload": true, "offload_optimizer": true})"));
  ASSERT_TRUE(offload.ok()) << offload.status();
  EXPECT_TRUE(offload->dist.cpu_offload);
  auto pro = ParseJobConfig(Job(R"(, "train": {"method": "llama_pro", "expand_every": 2},
      "dist": {"cpu_offload": true})"));
  ASSERT_TRUE(pro.ok()) << pro.status();
}

TEST(JobConfigTest, ValidationFieldsRoundTrip) {
  auto c = ParseJobConfig(Job(R"(, "dataset": {"path": "/d.jsonl", "validation_fraction": 0.25},
      "train": {"eval_every_steps": 5, "early_stopping_patience": 3},
      "checkpoint": {"keep_best": true})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(HasValidation(*c));
  auto again = ParseJobConfig(JobConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_DOUBLE_EQ(again->dataset.validation_fraction, 0.25);
  EXPECT_EQ(again->train.eval_every_steps, 5);
  EXPECT_EQ(again->train.early_stopping_patience, 3);
  EXPECT_FALSE(HasValidation(*ParseJobConfig(Job(""))));
}

TEST(JobConfigTest, ChatTemplateFieldsRoundTrip) {
  auto c = ParseJobConfig(Job(R"(, "dataset": {"format": "messages",
      "chat_template": "{{ messages }}", "chat_template_kwargs": {"enable_thinking": false}})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->dataset.chat_template, "{{ messages }}");
  EXPECT_EQ(c->dataset.chat_template_kwargs, R"({"enable_thinking":false})");
  auto again = ParseJobConfig(JobConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->dataset.chat_template_kwargs, c->dataset.chat_template_kwargs);
}

TEST(JobConfigTest, MissingModelIsNamed) {
  auto c = ParseJobConfig(R"({"output_dir": "x"})");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("model"));
}

TEST(JobConfigTest, InvalidJsonIsReported) {
  EXPECT_FALSE(ParseJobConfig("{not json").ok());
}

TEST(JobConfigTest, MissingFileNamesThePath) {
  auto c = LoadJobConfig("/nonexistent/job.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("/nonexistent/job.json"));
}

}  // namespace
}  // namespace rigtune::train
