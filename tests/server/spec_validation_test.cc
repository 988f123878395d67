#include "server/spec_validation.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

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
  spec.set_gpus(3);
  ExpectFieldError(spec, limits, "spec.gpus");
  spec = TinySpec();
  (*spec.mutable_labels())["Bad Key"] = "x";
  ExpectFieldError(spec, limits, "spec.labels[Bad Key]");
  spec = TinySpec();
  spec.set_model("");
  ExpectFieldError(spec, limits, "spec.model");
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

}  // namespace
}  // namespace rigtune::server
