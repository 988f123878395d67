// End to end: rigtuned, the rigtune CLI and rigtune-worker processes.
//
// Every test runs against the fake worker (the real worker/main.cc over a
// stand-in engine). RealWorkerE2ETest repeats the main path with the real
// rigtune-worker (LibTorch engine) when that target is built.
#include <signal.h>

#include <httplib.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/server/test_dir.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/daemon_process.h"

namespace rigtune::e2e {
namespace {

namespace fs = std::filesystem;

class DaemonE2ETest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = rigtune::testing::FreshTestDir("e2e");
    rigtune::testing::ClearFakeWorkerKnobs();
  }

  void StartDaemon(const std::string& worker = RIGTUNE_FAKE_WORKER,
                   std::vector<std::string> extra_args = {}) {
    daemon_ = std::make_unique<DaemonProcess>((dir_ / "state").string(), worker,
                                              std::move(extra_args));
    ASSERT_TRUE(daemon_->Start()) << daemon_->Log();
    http_ = std::make_unique<httplib::Client>("127.0.0.1", daemon_->http_port());
    http_->set_read_timeout(300, 0);
  }

  std::string WriteJobFile(const std::string& yaml) {
    fs::path path = dir_ / "job.yaml";
    std::ofstream(path) << yaml;
    return path.string();
  }

  std::string Submit(const std::string& args) {
    CliResult result = RunCli(daemon_->grpc_address(), "submit --json " + args);
    EXPECT_EQ(result.exit_code, 0) << result.output;
    auto job = nlohmann::json::parse(result.output, nullptr, false);
    if (job.is_discarded()) return "";
    return job.value("id", "");
  }

  nlohmann::json GetJob(const std::string& id) {
    auto res = http_->Get(("/v1/jobs/" + id).c_str());
    if (!res) return nlohmann::json::object();
    return nlohmann::json::parse(res->body, nullptr, false);
  }

  void WaitUntil(const std::function<bool()>& condition, absl::Duration limit,
                 const std::string& what) {
    absl::Time deadline = absl::Now() + limit;
    while (absl::Now() < deadline) {
      if (condition()) return;
      absl::SleepFor(absl::Milliseconds(50));
    }
    FAIL() << "timed out waiting for " << what << "\n" << daemon_->Log();
  }

  // Every event of the job over REST, checked to be numbered 1..N.
  nlohmann::json AllEvents(const std::string& id) {
    auto res = http_->Get(("/v1/jobs/" + id + "/events?page_size=5000").c_str());
    EXPECT_TRUE(res);
    auto events = nlohmann::json::parse(res->body)["events"];
    for (size_t i = 0; i < events.size(); ++i) {
      EXPECT_EQ(events[i]["seq"], std::to_string(i + 1)) << "gap or duplicate at " << i;
    }
    return events;
  }

  void ExpectFullSuccess(const std::string& id) {
    CliResult watch = RunCli(daemon_->grpc_address(), "watch " + id);
    EXPECT_EQ(watch.exit_code, 0) << watch.output << daemon_->Log();
    EXPECT_NE(watch.output.find("SUCCEEDED"), std::string::npos) << watch.output;
    EXPECT_NE(watch.output.find("loss"), std::string::npos) << watch.output;

    auto sse = http_->Get(("/v1/jobs/" + id + ":watch").c_str());
    ASSERT_TRUE(sse);
    EXPECT_NE(sse->body.find("event: metrics"), std::string::npos);
    EXPECT_NE(sse->body.find("\"to\":\"SUCCEEDED\""), std::string::npos) << sse->body;
    EXPECT_NE(sse->body.find("event: end"), std::string::npos);

    auto metrics = http_->Get("/metrics");
    ASSERT_TRUE(metrics);
    EXPECT_NE(metrics->body.find("rigtune_job_train_loss{job=\"" + id + "\"}"),
              std::string::npos)
        << metrics->body;
    EXPECT_NE(metrics->body.find("rigtune_train_steps_total"), std::string::npos);
    EXPECT_NE(metrics->body.find("rigtune_jobs{state=\"SUCCEEDED\"}"), std::string::npos);
  }

  fs::path dir_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::unique_ptr<httplib::Client> http_;
};

TEST_F(DaemonE2ETest, SubmitAndWatchToSuccessThroughCliRestAndMetrics) {
  StartDaemon();
  std::string file = WriteJobFile(
      "model: random:tiny\n"
      "lora: {r: 8, alpha: 16}\n"
      "train: {max_steps: 4, batch_size: 2}\n"
      "checkpoint: {every_steps: 2}\n"
      "labels: {suite: e2e}\n");
  std::string id = Submit(file + " --set train.max_steps=6");
  ASSERT_FALSE(id.empty());
  ExpectFullSuccess(id);
  auto job = GetJob(id);
  EXPECT_EQ(job["result"]["steps"], "6");  // the flag overrode the file
  EXPECT_EQ(RunCli(daemon_->grpc_address(), "show " + id).exit_code, 0);
  CliResult checkpoints = RunCli(daemon_->grpc_address(), "checkpoints " + id);
  EXPECT_NE(checkpoints.output.find("step-6"), std::string::npos) << checkpoints.output;
  CliResult logs = RunCli(daemon_->grpc_address(), "logs " + id);
  EXPECT_NE(logs.output.find("fake engine"), std::string::npos) << logs.output;
  CliResult list = RunCli(daemon_->grpc_address(), "list --label suite=e2e --json");
  EXPECT_NE(list.output.find(id), std::string::npos) << list.output;
  EXPECT_EQ(RunCli(daemon_->grpc_address(), "health").exit_code, 0);
  AllEvents(id);
}

TEST_F(DaemonE2ETest, CliExitCodesScriptsCanRelyOn) {
  StartDaemon();
  EXPECT_EQ(RunCli(daemon_->grpc_address(), "show job-missing").exit_code, 4);
  CliResult invalid = RunCli(daemon_->grpc_address(), "submit --model random:tiny --set lora.r=0");
  EXPECT_EQ(invalid.exit_code, 5) << invalid.output;
  EXPECT_NE(invalid.output.find("spec.lora.r"), std::string::npos);
  EXPECT_EQ(RunCli(daemon_->grpc_address(), "submit --set lora.rank=8 --model random:tiny")
                .exit_code,
            2);  // unknown field: caught before sending
  EXPECT_EQ(RunCli("127.0.0.1:1", "--timeout 2 list").exit_code, 3);
  setenv("RIGTUNE_FAKE_STEP_MS", "200", 1);
  std::string id = Submit("--model random:tiny --max-steps 500");
  CliResult cancel = RunCli(daemon_->grpc_address(), "cancel " + id);
  EXPECT_EQ(cancel.exit_code, 0) << cancel.output;
  EXPECT_EQ(RunCli(daemon_->grpc_address(), "watch " + id).exit_code, 11);
  EXPECT_EQ(RunCli(daemon_->grpc_address(), "pause " + id).exit_code, 6);
}

TEST_F(DaemonE2ETest, KilledWorkerIsRetriedFromItsCheckpoint) {
  setenv("RIGTUNE_FAKE_STEP_MS", "100", 1);
  StartDaemon();
  std::string id = Submit("--model random:tiny --max-steps 15 --set checkpoint.every_steps=3");
  WaitUntil([&] { return !GetJob(id).value("resume_from", "").empty(); }, absl::Seconds(30),
            "a first checkpoint");
  auto workers = daemon_->Children();
  ASSERT_EQ(workers.size(), 1u);
  kill(workers[0], SIGKILL);
  CliResult watch = RunCli(daemon_->grpc_address(), "watch " + id);
  EXPECT_EQ(watch.exit_code, 0) << watch.output;
  auto job = GetJob(id);
  EXPECT_EQ(job["restarts"], 1);
  EXPECT_EQ(job["result"]["steps"], "15");
  bool from_checkpoint = false;
  for (const auto& event : AllEvents(id)) {
    std::string reason = event.contains("state_change")
                             ? event["state_change"].value("reason", "")
                             : "";
    if (reason.find("killed by signal 9") != std::string::npos &&
        reason.find("checkpoints/step-") != std::string::npos) {
      from_checkpoint = true;
    }
  }
  EXPECT_TRUE(from_checkpoint);
}

TEST_F(DaemonE2ETest, KilledDaemonResumesTheJobOnRestart) {
  setenv("RIGTUNE_FAKE_STEP_MS", "100", 1);
  StartDaemon();
  std::string id = Submit("--model random:tiny --max-steps 20 --set checkpoint.every_steps=2");
  WaitUntil([&] { return !GetJob(id).value("resume_from", "").empty(); }, absl::Seconds(30),
            "a first checkpoint");
  auto workers = daemon_->Children();
  ASSERT_EQ(workers.size(), 1u);
  daemon_->Stop(SIGKILL);
  // The worker's parent-death signal makes it checkpoint and leave.
  WaitUntil([&] { return !fs::exists("/proc/" + std::to_string(workers[0])); },
            absl::Seconds(30), "the orphaned worker to exit");
  setenv("RIGTUNE_FAKE_STEP_MS", "20", 1);
  StartDaemon();
  CliResult watch = RunCli(daemon_->grpc_address(), "watch " + id);
  EXPECT_EQ(watch.exit_code, 0) << watch.output << daemon_->Log();
  auto job = GetJob(id);
  EXPECT_EQ(job["state"], "SUCCEEDED");
  EXPECT_EQ(job["result"]["steps"], "20");
  bool resumed = false;
  int64_t last_step = 0;
  for (const auto& event : AllEvents(id)) {
    if (event.contains("state_change") &&
        event["state_change"].value("reason", "").find("rigtuned restarted; resuming from") !=
            std::string::npos) {
      resumed = true;
    }
    // The checkpoint the worker wrote on its way out was adopted: no step
    // was trained (and reported) twice.
    if (event.contains("metrics")) {
      const int64_t step = std::stoll(event["metrics"].value("step", "0"));
      EXPECT_GT(step, last_step) << event.dump();
      last_step = step;
    }
  }
  EXPECT_TRUE(resumed);
}

TEST_F(DaemonE2ETest, SigtermCheckpointsWorkersAndTheNextStartFinishesTheJob) {
  setenv("RIGTUNE_FAKE_STEP_MS", "100", 1);
  StartDaemon();
  std::string id = Submit("--model random:tiny --max-steps 30");
  WaitUntil([&] { return GetJob(id).value("state", "") == "RUNNING"; }, absl::Seconds(30),
            "RUNNING");
  absl::SleepFor(absl::Milliseconds(500));
  int status = daemon_->Stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << daemon_->Log();
  setenv("RIGTUNE_FAKE_STEP_MS", "10", 1);
  StartDaemon();
  EXPECT_EQ(RunCli(daemon_->grpc_address(), "watch " + id).exit_code, 0) << daemon_->Log();
  auto job = GetJob(id);
  EXPECT_EQ(job["result"]["steps"], "30");
  EXPECT_EQ(job.value("restarts", 0), 0);
  AllEvents(id);
}

// The daemon manages one (pretend) 24 GB GPU; the fake worker never runs.
TEST_F(DaemonE2ETest, JobThatCannotFitIsRefusedAtSubmissionWithThePlannersMessage) {
  StartDaemon(RIGTUNE_FAKE_WORKER, {"--gpus", "0", "--gpu-memory-gib", "24"});
  CliResult card = RunCli(daemon_->grpc_address(), "submit --model random:llama2-70b --gpus 1");
  EXPECT_EQ(card.exit_code, 5) << card.output;  // INVALID_ARGUMENT
  EXPECT_NE(card.output.find("does not fit: needs 48.34 GiB per GPU, 22.00 GiB available (a 24 "
                             "GiB card less 2 GiB for the CUDA context)"),
            std::string::npos)
      << card.output;
  // (The least it needs: recompute auto then fills 80% of the rest of the
  // card with the top layers' MLP products.)
  EXPECT_NE(card.output.find("would fit: dist.cpu_offload=true (15.76 GiB)"),
            std::string::npos)
      << card.output;
  CliResult capped = RunCli(daemon_->grpc_address(),
                            "submit --model random:llama2-13b --gpus 1 "
                            "--set train.batch_size=2 --set train.context_length=2048 "
                            "--set dist.max_gpu_memory_gib=8");
  EXPECT_EQ(capped.exit_code, 5) << capped.output;
  EXPECT_NE(capped.output.find("needs 13.36 GiB per GPU, 8.00 GiB available "
                               "(dist.max_gpu_memory_gib)"),
            std::string::npos)
      << capped.output;
  CliResult list = RunCli(daemon_->grpc_address(), "list --json");
  EXPECT_EQ(list.output.find("job-"), std::string::npos) << list.output;  // nothing stored
  // The same job with the planner's settings is admitted.
  CliResult fits = RunCli(daemon_->grpc_address(),
                          "submit --json --model random:llama2-13b --gpus 1 "
                          "--set train.batch_size=2 --set train.context_length=2048 "
                          "--set dist.max_gpu_memory_gib=8 --set dist.cpu_offload=true "
                          "--set train.max_steps=1");
  EXPECT_EQ(fits.exit_code, 0) << fits.output;
}

TEST_F(DaemonE2ETest, NonLoopbackListenWithoutTokenIsRefused) {
  daemon_ = std::make_unique<DaemonProcess>((dir_ / "state").string(), RIGTUNE_FAKE_WORKER,
                                            std::vector<std::string>{"--http-listen", "0.0.0.0:0"});
  unsetenv("RIGTUNE_TOKEN");
  EXPECT_FALSE(daemon_->Start());
  EXPECT_NE(daemon_->Log().find("http_listen: 0.0.0.0:0 is not loopback"), std::string::npos)
      << daemon_->Log();
}

#ifdef RIGTUNE_REAL_WORKER
TEST_F(DaemonE2ETest, RealWorkerTrainsATinyModelToSuccess) {
  StartDaemon(RIGTUNE_REAL_WORKER);
  std::string file = WriteJobFile(
      "model: random:tiny\n"
      "lora: {r: 4, alpha: 8}\n"
      "train: {max_steps: 3, batch_size: 1, context_length: 64, dtype: fp32}\n"
      "checkpoint: {every_steps: 2}\n");
  std::string id = Submit(file);
  ASSERT_FALSE(id.empty());
  ExpectFullSuccess(id);
  auto job = GetJob(id);
  ASSERT_TRUE(job.contains("result"));
  EXPECT_TRUE(fs::exists(fs::path(job["result"]["adapter_path"].get<std::string>()) /
                         "adapter_config.json"));
}
#endif

}  // namespace
}  // namespace rigtune::e2e
