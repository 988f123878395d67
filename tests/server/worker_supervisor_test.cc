#include "server/worker_supervisor.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "tests/server/test_dir.h"

namespace rigtune::server {
namespace {

namespace fs = std::filesystem;

class WorkerSupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = rigtune::testing::FreshTestDir();
  }

  // A worker script: the shell snippet runs with the launch environment.
  std::string Script(const std::string& body) {
    fs::path path = dir_ / "worker.sh";
    std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
    chmod(path.c_str(), 0755);
    return path.string();
  }

  GroupLaunch Group(const std::string& program, int ranks) {
    GroupLaunch launch;
    launch.job_id = "job-1";
    launch.attempt = 1;
    launch.program = program;
    launch.args = {"--job", "job.json"};
    launch.env = {"WORLD_SIZE=" + std::to_string(ranks)};
    for (int r = 0; r < ranks; ++r) {
      launch.ranks.push_back({r, {"RANK=" + std::to_string(r)},
                              (dir_ / ("rank" + std::to_string(r) + ".log")).string()});
    }
    return launch;
  }

  std::vector<GroupExit> WaitForExit(WorkerSupervisor& supervisor, absl::Duration limit) {
    absl::Time deadline = absl::Now() + limit;
    while (absl::Now() < deadline) {
      auto exits = supervisor.Poll();
      if (!exits.empty()) return exits;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return {};
  }

  std::string Read(const std::string& name) {
    std::ifstream in(dir_ / name);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  fs::path dir_;
};

TEST_F(WorkerSupervisorTest, EachRankGetsItsEnvironmentArgsAndLog) {
  WorkerSupervisor supervisor(absl::Seconds(5));
  ASSERT_TRUE(supervisor.Launch(Group(Script("echo \"rank=$RANK world=$WORLD_SIZE args=$*\""), 2))
                  .ok());
  auto exits = WaitForExit(supervisor, absl::Seconds(10));
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_TRUE(exits[0].ok);
  EXPECT_EQ(exits[0].job_id, "job-1");
  EXPECT_NE(Read("rank0.log").find("rank=0 world=2 args=--job job.json"), std::string::npos);
  EXPECT_NE(Read("rank1.log").find("rank=1 world=2"), std::string::npos);
  EXPECT_FALSE(supervisor.HasGroup("job-1"));
}

TEST_F(WorkerSupervisorTest, OneFailingRankTearsDownTheGroup) {
  WorkerSupervisor supervisor(absl::Seconds(5));
  // Rank 1 fails at once; rank 0 would run for a minute.
  ASSERT_TRUE(supervisor
                  .Launch(Group(Script("if [ \"$RANK\" = 1 ]; then exit 7; fi; sleep 60"), 2))
                  .ok());
  auto exits = WaitForExit(supervisor, absl::Seconds(10));
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_FALSE(exits[0].ok);
  EXPECT_EQ(exits[0].failed_rank, 1);
  EXPECT_NE(exits[0].failure.find("exited with status 7"), std::string::npos) << exits[0].failure;
}

TEST_F(WorkerSupervisorTest, StopEscalatesToSigkillAfterTheGracePeriod) {
  WorkerSupervisor supervisor(absl::Milliseconds(300));
  ASSERT_TRUE(supervisor.Launch(Group(Script("trap '' TERM; while true; do sleep 0.05; done"), 1))
                  .ok());
  absl::SleepFor(absl::Milliseconds(200));
  absl::Time start = absl::Now();
  supervisor.Stop("job-1");
  auto exits = WaitForExit(supervisor, absl::Seconds(10));
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_NE(exits[0].failure.find("signal 9"), std::string::npos) << exits[0].failure;
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(250));
}

TEST_F(WorkerSupervisorTest, SigtermEndsACooperativeWorker) {
  WorkerSupervisor supervisor(absl::Seconds(30));
  ASSERT_TRUE(
      supervisor.Launch(Group(Script("trap 'echo bye; exit 0' TERM; while true; do sleep 0.05; done"), 1))
          .ok());
  absl::SleepFor(absl::Milliseconds(200));
  supervisor.Stop("job-1");
  auto exits = WaitForExit(supervisor, absl::Seconds(10));
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_TRUE(exits[0].ok) << exits[0].failure;
  EXPECT_NE(Read("rank0.log").find("bye"), std::string::npos);
}

TEST_F(WorkerSupervisorTest, MissingBinaryIsAFailedRank) {
  WorkerSupervisor supervisor(absl::Seconds(1));
  ASSERT_TRUE(supervisor.Launch(Group((dir_ / "no-such-worker").string(), 1)).ok());
  auto exits = WaitForExit(supervisor, absl::Seconds(10));
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_FALSE(exits[0].ok);
  EXPECT_NE(exits[0].failure.find("status 127: the worker binary could not be executed"),
            std::string::npos)
      << exits[0].failure;
  EXPECT_FALSE(exits[0].retryable);
}

TEST_F(WorkerSupervisorTest, FailureCarriesTheRanksReasonLineOfThisAttempt) {
  WorkerSupervisor supervisor(absl::Seconds(1));
  ASSERT_TRUE(supervisor.Launch(Group(Script("echo 'rigtune-worker: stale'; exit 1"), 1)).ok());
  ASSERT_EQ(WaitForExit(supervisor, absl::Seconds(10)).size(), 1u);
  GroupLaunch second = Group(Script("echo 'rigtune-worker: lost a peer' >&2; echo tail; exit 1"), 1);
  second.attempt = 2;
  ASSERT_TRUE(supervisor.Launch(second).ok());
  auto exits = WaitForExit(supervisor, absl::Seconds(10));
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_NE(exits[0].failure.find("exited with status 1: lost a peer (log: "), std::string::npos)
      << exits[0].failure;
  EXPECT_EQ(exits[0].failure.find("stale"), std::string::npos) << exits[0].failure;
  EXPECT_TRUE(exits[0].has_reason);
  EXPECT_TRUE(exits[0].retryable);
}

TEST_F(WorkerSupervisorTest, BadJobExitStatusIsNotRetryable) {
  WorkerSupervisor supervisor(absl::Seconds(1));
  ASSERT_TRUE(supervisor
                  .Launch(Group(Script("echo 'rigtune-worker: dataset.path: is a folder' >&2; "
                                       "exit 2"),
                                1))
                  .ok());
  auto exits = WaitForExit(supervisor, absl::Seconds(10));
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_FALSE(exits[0].retryable);
  EXPECT_NE(exits[0].failure.find("status 2: dataset.path: is a folder"), std::string::npos)
      << exits[0].failure;
}

TEST_F(WorkerSupervisorTest, KilledRankIsRetryableAndKeepsNoStaleReason) {
  WorkerSupervisor supervisor(absl::Seconds(1));
  ASSERT_TRUE(
      supervisor.Launch(Group(Script("echo 'rigtune-worker: warning'; kill -9 $$"), 1)).ok());
  auto exits = WaitForExit(supervisor, absl::Seconds(10));
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_TRUE(exits[0].retryable);
  EXPECT_FALSE(exits[0].has_reason);
  EXPECT_NE(exits[0].failure.find("signal 9 (log: "), std::string::npos) << exits[0].failure;
}

TEST_F(WorkerSupervisorTest, SecondLaunchOfTheSameJobIsRefused) {
  WorkerSupervisor supervisor(absl::Milliseconds(100));
  ASSERT_TRUE(supervisor.Launch(Group(Script("sleep 60"), 1)).ok());
  EXPECT_EQ(supervisor.Launch(Group(Script("sleep 60"), 1)).code(),
            absl::StatusCode::kFailedPrecondition);
  supervisor.Kill("job-1");
  EXPECT_EQ(WaitForExit(supervisor, absl::Seconds(10)).size(), 1u);
}

}  // namespace
}  // namespace rigtune::server
