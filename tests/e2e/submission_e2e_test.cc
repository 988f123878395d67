// End to end: what the CLI and rigtuned say about jobs that cannot run, at
// submission (exit codes and messages a script or a person acts on) and
// when the worker finds the fault later (the job's error).
#include <filesystem>
#include <fstream>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/daemon_process.h"
#include "tests/server/test_dir.h"

namespace rigtune::e2e {
namespace {

namespace fs = std::filesystem;

class SubmissionE2ETest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = rigtune::testing::FreshTestDir("e2e-submission");
    rigtune::testing::ClearFakeWorkerKnobs();
    daemon_ = std::make_unique<DaemonProcess>((dir_ / "state").string(), RIGTUNE_FAKE_WORKER);
    ASSERT_TRUE(daemon_->Start()) << daemon_->Log();
  }

  std::string WriteFile(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return (dir_ / name).string();
  }

  CliResult Cli(const std::string& args) { return RunCli(daemon_->grpc_address(), args); }

  fs::path dir_;
  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(SubmissionE2ETest, OversizedJobFileIsAnInvalidRequestWithASentence) {
  const std::string file = WriteFile(
      "huge.yaml", "model: random:tiny\nlabels: {blob: " + std::string(5 << 20, 'a') + "}\n");
  CliResult result = Cli("submit " + file);
  EXPECT_EQ(result.exit_code, 5) << result.output;
  EXPECT_NE(result.output.find("more than rigtuned accepts in one request"), std::string::npos)
      << result.output;
  EXPECT_EQ(result.output.find("Received message"), std::string::npos) << result.output;
}

TEST_F(SubmissionE2ETest, YamlAliasBombIsAUsageErrorNotACrash) {
  std::string yaml = "model: random:tiny\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i <= 9; ++i) {
    yaml += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int k = 0; k < 10; ++k) yaml += (k ? ", *a" : "*a") + std::to_string(i - 1);
    yaml += "]\n";
  }
  CliResult result = Cli("submit " + WriteFile("bomb.yaml", yaml));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("expands to more than 100000 values"), std::string::npos)
      << result.output;
}

TEST_F(SubmissionE2ETest, CheckableFaultsAreRefusedAtSubmissionNamingTheField) {
  fs::create_directories(dir_ / "dataset-folder");
  CliResult folder =
      Cli("submit --model random:tiny --dataset " + (dir_ / "dataset-folder").string());
  EXPECT_EQ(folder.exit_code, 5) << folder.output;
  EXPECT_NE(folder.output.find("spec.dataset.path: "), std::string::npos) << folder.output;
  EXPECT_NE(folder.output.find("is a folder"), std::string::npos) << folder.output;

  CliResult target =
      Cli("submit --model random:tiny --set 'lora.target_modules=[\"nonexistent_proj\"]'");
  EXPECT_EQ(target.exit_code, 5) << target.output;
  EXPECT_NE(target.output.find("spec.lora.target_modules[0]: 'nonexistent_proj' is not a module"),
            std::string::npos)
      << target.output;

  fs::create_directories(dir_ / "model");
  WriteFile("model/config.json", "{\"architectures\": [\"LlamaForCausalLM\"]");
  const std::string data = WriteFile("train.jsonl", "{\"text\": \"hi\"}\n");
  CliResult config = Cli("submit --model " + (dir_ / "model").string() + " --dataset " + data);
  EXPECT_EQ(config.exit_code, 5) << config.output;
  EXPECT_NE(config.output.find("config.json: not valid JSON"), std::string::npos)
      << config.output;
}

TEST_F(SubmissionE2ETest, WorkersReasonIsTheJobsErrorAndItIsNotRetried) {
  daemon_.reset();  // the knob must be in the daemon's environment
  setenv("RIGTUNE_FAKE_FAIL", "bad_data", 1);
  daemon_ = std::make_unique<DaemonProcess>((dir_ / "state2").string(), RIGTUNE_FAKE_WORKER);
  ASSERT_TRUE(daemon_->Start()) << daemon_->Log();
  CliResult submit = Cli("submit --json --model random:tiny --max-steps 5");
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  const std::string id = nlohmann::json::parse(submit.output)["id"];
  CliResult watch = Cli("watch " + id);
  EXPECT_EQ(watch.exit_code, 10) << watch.output;
  CliResult show = Cli("show --json " + id);
  auto job = nlohmann::json::parse(show.output, nullptr, false);
  ASSERT_FALSE(job.is_discarded()) << show.output;
  EXPECT_EQ(job["error"]["code"], "INVALID_JOB");
  EXPECT_NE(job["error"]["message"].get<std::string>().find("dataset too small"),
            std::string::npos)
      << show.output;
  EXPECT_EQ(job.value("restarts", 0), 0);
}

}  // namespace
}  // namespace rigtune::e2e
