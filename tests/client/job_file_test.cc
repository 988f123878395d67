#include "client/job_file.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace rigtune::client {
namespace {

namespace fs = std::filesystem;

fs::path Write(const std::string& name, const std::string& text) {
  fs::path dir = fs::path(::testing::TempDir()) / "client_job_file";
  fs::create_directories(dir);
  std::ofstream(dir / name) << text;
  return dir / name;
}

TEST(JobFileTest, YamlBecomesAJobSpecWithAbsolutePaths) {
  fs::path file = Write("job.yaml",
                        "model: models/llama\n"
                        "dataset: {path: data/train.jsonl, format: alpaca}\n"
                        "lora: {r: 16, alpha: 32.5}\n"
                        "optim: {lr: 2e-4}\n"
                        "train: {max_steps: 100, activation_checkpointing: false}\n"
                        "labels: {team: \"007\"}\n"
                        "gpus: 2\n");
  auto json = LoadJobFile(file.string());
  ASSERT_TRUE(json.ok()) << json.status();
  auto spec = ToJobSpec(*json);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model(), (file.parent_path() / "models/llama").string());
  EXPECT_EQ(spec->dataset().path(), (file.parent_path() / "data/train.jsonl").string());
  EXPECT_EQ(spec->lora().r(), 16);
  EXPECT_DOUBLE_EQ(spec->lora().alpha(), 32.5);
  EXPECT_DOUBLE_EQ(spec->optim().lr(), 2e-4);
  EXPECT_TRUE(spec->train().has_activation_checkpointing());
  EXPECT_FALSE(spec->train().activation_checkpointing());
  EXPECT_EQ(spec->labels().at("team"), "007");  // quoted: stays a string
  EXPECT_EQ(spec->gpus(), 2);
  EXPECT_FALSE(spec->optim().has_beta1());  // unset stays unset
}

TEST(JobFileTest, ValidationPathIsMadeAbsoluteToo) {
  fs::path file = Write("valid.yaml",
                        "model: models/llama\n"
                        "dataset: {path: data/train.jsonl, validation_path: data/valid.jsonl}\n"
                        "train: {eval_every_steps: 50}\n");
  auto json = LoadJobFile(file.string());
  ASSERT_TRUE(json.ok()) << json.status();
  auto spec = ToJobSpec(*json);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->dataset().validation_path(), (file.parent_path() / "data/valid.jsonl").string());
  EXPECT_EQ(spec->train().eval_every_steps(), 50);
}

TEST(JobFileTest, OverridesWinAndParseTheirValues) {
  fs::path file = Write("job.json", R"({"model": "random:tiny", "train": {"max_steps": 5}})");
  auto json = LoadJobFile(file.string());
  ASSERT_TRUE(json.ok());
  ASSERT_TRUE(ApplyOverrides({"train.max_steps=50", "lora.target_modules=[\"q_proj\"]",
                              "dataset.format=text"},
                             *json)
                  .ok());
  auto spec = ToJobSpec(*json);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model(), "random:tiny");  // not a path
  EXPECT_EQ(spec->train().max_steps(), 50);
  ASSERT_EQ(spec->lora().target_modules_size(), 1);
  EXPECT_EQ(spec->dataset().format(), "text");
  EXPECT_FALSE(ApplyOverrides({"novalue"}, *json).ok());
}

TEST(JobFileTest, UnknownFieldIsNamed) {
  nlohmann::json json = {{"model", "random:tiny"}, {"lora", {{"rank", 8}}}};
  auto spec = ToJobSpec(json);
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(spec.status().message().find("rank"), std::string::npos) << spec.status();
}

TEST(JobFileTest, UnreadableOrMalformedFilesNameTheFile) {
  EXPECT_NE(LoadJobFile("/no/such/job.yaml").status().message().find("/no/such/job.yaml"),
            std::string::npos);
  fs::path bad = Write("bad.json", "{not json");
  EXPECT_FALSE(LoadJobFile(bad.string()).ok());
  fs::path list = Write("list.yaml", "- a\n- b\n");
  EXPECT_FALSE(LoadJobFile(list.string()).ok());
}

TEST(JobFileTest, YamlAliasBombIsRefusedNamingTheFile) {
  // Nine levels of ten aliases each name 10^9 strings in under 1 KB.
  std::string yaml = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i <= 9; ++i) {
    const std::string prev = "*a" + std::to_string(i - 1);
    yaml += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int k = 0; k < 10; ++k) yaml += (k ? ", " : "") + prev;
    yaml += "]\n";
  }
  yaml += "model: random:tiny\n";
  fs::path file = Write("bomb.yaml", yaml);
  auto json = LoadJobFile(file.string());
  ASSERT_FALSE(json.ok());
  EXPECT_EQ(json.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(json.status().message().find(file.string() + ": expands to more than 100000 values"),
            std::string::npos)
      << json.status();
}

TEST(JobFileTest, AliasesWithinTheBudgetStillWork) {
  fs::path file = Write("alias.yaml",
                        "lora: {target_modules: &mods [q_proj, v_proj]}\n"
                        "labels: {a: &v x}\n"
                        "x-copy: *mods\n");
  auto json = LoadJobFile(file.string());
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ((*json)["x-copy"], (*json)["lora"]["target_modules"]);
}

}  // namespace
}  // namespace rigtune::client
