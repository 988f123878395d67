#include "server/spec_validation.h"

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/test_dir.h"

namespace rigtune::server {
namespace {

rigtune::v1::JobSpec TinySpec() {
  rigtune::v1::JobSpec spec;
  spec.set_model("random:tiny");
  return spec;
}

void ExpectFieldError(const rigtune::v1::JobSpec& spec, const SpecLimits& limits,
                      const std::string& field) {
  absl::Status status = ValidateJobSpec(spec, limits);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << field;
  EXPECT_EQ(status.message().substr(0, field.size() + 1), field + ":") << status;
}

TEST(SpecValidationTest, MinimalRandomModelSpecPasses) {
  EXPECT_TRUE(ValidateJobSpec(TinySpec(), {}).ok());
}

TEST(SpecValidationTest, FullFineTuningNeedsABf16BaseAndNoLora) {
  SpecLimits limits{2, {}};
  auto spec = TinySpec();
  spec.mutable_train()->set_method("full");
  spec.mutable_train()->set_base("nf4");
  ExpectFieldError(spec, limits, "spec.train.method");
  EXPECT_THAT(std::string(ValidateJobSpec(spec, limits).message()),
              ::testing::HasSubstr("spec.train.base bf16"));
  spec.mutable_train()->set_base("bf16");
  EXPECT_TRUE(ValidateJobSpec(spec, limits).ok()) << ValidateJobSpec(spec, limits);
  auto with_lora = spec;
  with_lora.mutable_lora()->set_r(8);
  ExpectFieldError(with_lora, limits, "spec.lora");
  auto two_gpus = spec;  // sharded over the GPUs like an adapter
  two_gpus.set_gpus(2);
  EXPECT_TRUE(ValidateJobSpec(two_gpus, limits).ok()) << ValidateJobSpec(two_gpus, limits);
  auto offload = spec;  // streamed from host memory, AdamW on the host
  offload.mutable_dist()->set_cpu_offload(true);
  offload.mutable_dist()->set_offload_optimizer(true);
  EXPECT_TRUE(ValidateJobSpec(offload, limits).ok()) << ValidateJobSpec(offload, limits);
}

TEST(SpecValidationTest, LlamaProNeedsExpandEvery) {
  SpecLimits limits{2, {}};
  auto spec = TinySpec();
  spec.mutable_train()->set_method("llama_pro");
  ExpectFieldError(spec, limits, "spec.train.expand_every");
  spec.mutable_train()->set_expand_every(2);
  EXPECT_TRUE(ValidateJobSpec(spec, limits).ok()) << ValidateJobSpec(spec, limits);
  spec.mutable_train()->set_base("hqq4");  // any base: the old blocks stay frozen in it
  EXPECT_TRUE(ValidateJobSpec(spec, limits).ok()) << ValidateJobSpec(spec, limits);
  spec.set_gpus(2);
  EXPECT_TRUE(ValidateJobSpec(spec, limits).ok()) << ValidateJobSpec(spec, limits);
  spec.mutable_dist()->set_cpu_offload(true);
  EXPECT_TRUE(ValidateJobSpec(spec, limits).ok()) << ValidateJobSpec(spec, limits);
  auto stray = TinySpec();
  stray.mutable_train()->set_expand_every(2);
  ExpectFieldError(stray, limits, "spec.train.expand_every");
}

TEST(SpecValidationTest, OutOfRangeValuesNameTheField) {
  SpecLimits limits{2, {}};
  auto spec = TinySpec();
  spec.mutable_lora()->set_r(0);
  ExpectFieldError(spec, limits, "spec.lora.r");
  spec = TinySpec();
  spec.mutable_optim()->set_lr(-1);
  ExpectFieldError(spec, limits, "spec.optim.lr");
  spec = TinySpec();
  spec.mutable_train()->set_dtype("fp8");
  ExpectFieldError(spec, limits, "spec.train.dtype");
  spec = TinySpec();
  spec.mutable_train()->set_base("int8");
  ExpectFieldError(spec, limits, "spec.train.base");
  spec = TinySpec();
  spec.mutable_train()->set_method("full");
  ExpectFieldError(spec, limits, "spec.train.method");
  spec = TinySpec();
  spec.mutable_train()->set_base("bf16");
  spec.mutable_train()->set_method("dora");
  EXPECT_TRUE(ValidateJobSpec(spec, limits).ok());
  spec = TinySpec();
  spec.set_gpus(3);
  ExpectFieldError(spec, limits, "spec.gpus");
  spec = TinySpec();
  (*spec.mutable_labels())["Bad Key"] = "x";
  ExpectFieldError(spec, limits, "spec.labels[Bad Key]");
  spec = TinySpec();
  spec.set_model("");
  ExpectFieldError(spec, limits, "spec.model");
}

TEST(SpecValidationTest, MlpChunkTokensIsCheckedAgainstDropout) {
  auto spec = TinySpec();
  spec.mutable_train()->set_mlp_chunk_tokens(4096);
  EXPECT_TRUE(ValidateJobSpec(spec, {}).ok());
  spec.mutable_lora()->set_dropout(0.05);
  ExpectFieldError(spec, {}, "spec.train.mlp_chunk_tokens");
  spec = TinySpec();
  spec.mutable_train()->set_mlp_chunk_tokens(-1);
  ExpectFieldError(spec, {}, "spec.train.mlp_chunk_tokens");
}

TEST(SpecValidationTest, RecomputeIsOneOfItsPolicies) {
  auto spec = TinySpec();
  for (const char* policy : {"full", "keep_mlp", "auto"}) {
    spec.mutable_train()->set_recompute(policy);
    EXPECT_TRUE(ValidateJobSpec(spec, {}).ok()) << policy;
  }
  spec.mutable_train()->set_recompute("keep");
  ExpectFieldError(spec, {}, "spec.train.recompute");
}

TEST(SpecValidationTest, PathsMustStayInsideTheirRoots) {
  auto root = std::filesystem::path(::testing::TempDir()) / "roots";
  std::filesystem::create_directories(root / "data");
  std::ofstream(root / "data" / "train.jsonl") << "{}\n";
  SpecLimits limits{0, {{}, {(root / "data").string()}, {(root / "out").string()}}};
  auto spec = TinySpec();
  spec.mutable_dataset()->set_path((root / "data" / "train.jsonl").string());
  spec.set_output_dir((root / "out" / "run-1").string());
  EXPECT_TRUE(ValidateJobSpec(spec, limits).ok()) << ValidateJobSpec(spec, limits);
  spec.mutable_dataset()->set_path((root / "data" / ".." / "data" / ".." / "secret").string());
  ExpectFieldError(spec, limits, "spec.dataset.path");
  spec.mutable_dataset()->set_path("relative.jsonl");
  ExpectFieldError(spec, limits, "spec.dataset.path");
  spec.mutable_dataset()->set_path((root / "data" / "missing.jsonl").string());
  ExpectFieldError(spec, limits, "spec.dataset.path");
  spec.mutable_dataset()->clear_path();
  spec.set_output_dir("/etc");
  ExpectFieldError(spec, limits, "spec.output_dir");
}

TEST(SpecValidationTest, ValidationFieldsNameTheField) {
  auto root = std::filesystem::path(::testing::TempDir()) / "validation_roots";
  std::filesystem::create_directories(root / "data" / "model");
  std::ofstream(root / "data" / "train.jsonl") << "{}\n";
  std::ofstream(root / "data" / "valid.jsonl") << "{}\n";
  SpecLimits limits{0, {{}, {(root / "data").string()}, {}}};
  auto base = TinySpec();
  std::ofstream(root / "data" / "model" / "config.json")
      << R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 8})";
  std::ofstream(root / "data" / "model" / "tokenizer.json") << R"({"model": {"type": "BPE"}})";
  base.set_model((root / "data" / "model").string());
  base.mutable_dataset()->set_path((root / "data" / "train.jsonl").string());
  auto spec = base;
  spec.mutable_dataset()->set_validation_path((root / "data" / "valid.jsonl").string());
  spec.mutable_train()->set_eval_every_steps(10);
  spec.mutable_train()->set_early_stopping_patience(3);
  EXPECT_TRUE(ValidateJobSpec(spec, limits).ok()) << ValidateJobSpec(spec, limits);
  spec.mutable_dataset()->set_validation_fraction(0.1);  // both set
  ExpectFieldError(spec, limits, "spec.dataset.validation_fraction");
  spec.mutable_dataset()->clear_validation_path();
  EXPECT_TRUE(ValidateJobSpec(spec, limits).ok()) << ValidateJobSpec(spec, limits);
  for (double bad : {0.0, -0.2, 0.51}) {
    spec.mutable_dataset()->set_validation_fraction(bad);
    ExpectFieldError(spec, limits, "spec.dataset.validation_fraction");
  }
  spec = base;
  spec.mutable_dataset()->set_validation_path((root / "data" / "missing.jsonl").string());
  ExpectFieldError(spec, limits, "spec.dataset.validation_path");
  spec.mutable_dataset()->set_validation_path("/etc/passwd");
  ExpectFieldError(spec, limits, "spec.dataset.validation_path");
  spec = base;
  spec.mutable_train()->set_early_stopping_patience(2);  // without validation data
  ExpectFieldError(spec, limits, "spec.train.early_stopping_patience");
  spec = base;
  spec.mutable_train()->set_eval_every_steps(-1);
  ExpectFieldError(spec, limits, "spec.train.eval_every_steps");
  spec = TinySpec();  // a random: model has no tokenizer
  spec.mutable_dataset()->set_validation_fraction(0.1);
  ExpectFieldError(spec, {}, "spec.dataset.validation_fraction");
}

TEST(SpecValidationTest, DatasetFolderIsRejectedNamingTheField) {
  auto root = std::filesystem::path(::testing::TempDir()) / "dataset-folder";
  std::filesystem::create_directories(root / "train");
  auto spec = TinySpec();
  spec.mutable_dataset()->set_path((root / "train").string());
  ExpectFieldError(spec, {}, "spec.dataset.path");
  EXPECT_NE(ValidateJobSpec(spec, {}).message().find("is a folder"), std::string::npos);
}

TEST(SpecValidationTest, TargetModuleMustBeAModuleOfTheArchitecture) {
  auto spec = TinySpec();
  spec.mutable_lora()->add_target_modules("q_proj");
  spec.mutable_lora()->add_target_modules("nonexistent_proj");
  ExpectFieldError(spec, {}, "spec.lora.target_modules[1]");
  EXPECT_NE(ValidateJobSpec(spec, {}).message().find("q_proj, k_proj"), std::string::npos);
  spec.mutable_lora()->set_target_modules(1, "down_proj");
  EXPECT_TRUE(ValidateJobSpec(spec, {}).ok());
}

TEST(SpecValidationTest, Phi3TargetsAreItsFusedLinearsOrTheDefault) {
  auto spec = TinySpec();
  spec.set_model("random:phi3-mini");
  spec.mutable_lora()->clear_target_modules();
  spec.mutable_lora()->add_target_modules("qkv_proj");
  spec.mutable_lora()->add_target_modules("q_proj");  // not a linear of Phi-3
  ExpectFieldError(spec, {}, "spec.lora.target_modules[1]");
  EXPECT_NE(ValidateJobSpec(spec, {}).message().find("qkv_proj, o_proj, gate_up_proj"),
            std::string::npos);
  spec.mutable_lora()->set_target_modules(1, "gate_up_proj");
  EXPECT_TRUE(ValidateJobSpec(spec, {}).ok());
  // The default list (every Llama linear) means every fused linear.
  spec.mutable_lora()->clear_target_modules();
  for (const char* t : {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                        "down_proj"}) {
    spec.mutable_lora()->add_target_modules(t);
  }
  EXPECT_TRUE(ValidateJobSpec(spec, {}).ok());
}

class ModelFolderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Each test its own folder: ctest runs the tests of this suite in parallel.
    dir_ = rigtune::testing::FreshTestDir("model-folder");
    std::filesystem::create_directories(dir_ / "model");
    std::ofstream(dir_ / "train.jsonl") << "{}\n";
    Write("config.json", R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 8})");
    Write("tokenizer.json", R"({"model": {"type": "BPE"}})");
    spec_.set_model((dir_ / "model").string());
    spec_.mutable_dataset()->set_path((dir_ / "train.jsonl").string());
  }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / "model" / name) << text;
  }
  std::string Message() { return std::string(ValidateJobSpec(spec_, {}).message()); }

  std::filesystem::path dir_;
  rigtune::v1::JobSpec spec_;
};

TEST_F(ModelFolderTest, ParsableConfigAndTokenizerPass) {
  EXPECT_TRUE(ValidateJobSpec(spec_, {}).ok()) << Message();
}

TEST_F(ModelFolderTest, BrokenConfigIsRejectedNamingTheFile) {
  Write("config.json", "{\"architectures\": [");
  ExpectFieldError(spec_, {}, "spec.model");
  EXPECT_NE(Message().find("config.json: not valid JSON"), std::string::npos) << Message();
}

TEST_F(ModelFolderTest, EveryEngineArchitecturePasses) {
  for (const char* config : {R"({"architectures": ["Qwen3ForCausalLM"]})",
                             R"({"architectures": ["Gemma2ForCausalLM"]})",
                             R"({"model_type": "gemma3_text"})", R"({"model_type": "qwen3"})"}) {
    Write("config.json", config);
    EXPECT_TRUE(ValidateJobSpec(spec_, {}).ok()) << config << ": " << Message();
  }
}

TEST_F(ModelFolderTest, UnsupportedArchitectureIsRejected) {
  Write("config.json", R"({"model_type": "gpt2"})");
  EXPECT_NE(Message().find("unsupported architecture 'gpt2'"), std::string::npos) << Message();
}

TEST_F(ModelFolderTest, MissingOrBrokenTokenizerIsRejectedWhenTheJobHasData) {
  std::filesystem::remove(dir_ / "model" / "tokenizer.json");
  ExpectFieldError(spec_, {}, "spec.model");
  EXPECT_NE(Message().find("tokenizer.json: missing"), std::string::npos) << Message();
  Write("tokenizer.json", "not json");
  EXPECT_NE(Message().find("tokenizer.json: not valid JSON"), std::string::npos) << Message();
}

TEST_F(ModelFolderTest, AFileIsNotAModelFolder) {
  spec_.set_model((dir_ / "model" / "config.json").string());
  ExpectFieldError(spec_, {}, "spec.model");
  EXPECT_NE(Message().find("is not a folder"), std::string::npos) << Message();
}

}  // namespace
}  // namespace rigtune::server
