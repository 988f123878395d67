// Multi-process FSDP on the CPU (Gloo): N ranks must train exactly what one
// rank with N times the batch trains, for every sharding strategy; and a
// rank that dies must end the job with an error naming it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>

#include "nlohmann/json.hpp"
#include "worker/model/safetensors.h"

namespace {

namespace fs = std::filesystem;

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

std::string Slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Outcome {
  std::vector<int> exit_codes;
  std::vector<double> losses;
  fs::path dir;
  std::string rank0_log;
};

class FsdpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("rigtune_fsdp_" + std::to_string(getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // Launches `world` ranks of a job; kill_rank >= 0 is SIGKILLed after its
  // first step.
  Outcome Launch(const std::string& name, int world, int batch, const std::string& sharding,
                 int kill_rank = -1, int steps = 4) {
    Outcome out;
    out.dir = root_ / name;
    fs::create_directories(out.dir);
    nlohmann::json job = {
        {"model", "random:layers=2,hidden=64,intermediate=128,heads=4,kv_heads=2,vocab=96"},
        {"output_dir", out.dir.string()},
        {"lora", {{"r", 4}, {"alpha", 8}}},
        {"optim", {{"lr", 0.01}, {"schedule", "constant"}, {"weight_decay", 0.01}}},
        {"train", {{"context_length", 16}, {"batch_size", batch}, {"max_steps", steps},
                   {"dtype", "fp32"}, {"device", "cpu"}, {"seed", 3}}},
        {"dist", {{"sharding", sharding}, {"timeout_seconds", 60}}}};
    std::ofstream(out.dir / "job.json") << job.dump();
    const std::string port = std::to_string(FreePort());
    std::vector<pid_t> pids;
    for (int r = 0; r < world; ++r) {
      pid_t pid = fork();
      if (pid == 0) {
        setenv("RANK", std::to_string(r).c_str(), 1);
        setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
        setenv("MASTER_ADDR", "127.0.0.1", 1);
        setenv("MASTER_PORT", port.c_str(), 1);
        const std::string log = (out.dir / ("rank" + std::to_string(r) + ".log")).string();
        freopen(log.c_str(), "w", stderr);
        const std::string losses = (out.dir / ("losses" + std::to_string(r) + ".json")).string();
        execl(RIGTUNE_FSDP_RANK_TOOL, RIGTUNE_FSDP_RANK_TOOL, (out.dir / "job.json").c_str(),
              losses.c_str(), static_cast<char*>(nullptr));
        _exit(127);
      }
      pids.push_back(pid);
    }
    if (kill_rank >= 0) {
      const fs::path log = out.dir / ("rank" + std::to_string(kill_rank) + ".log");
      for (int i = 0; i < 600 && Slurp(log).find("step 1 ") == std::string::npos; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      kill(pids[kill_rank], SIGKILL);
    }
    for (pid_t pid : pids) {
      int status = 0;
      waitpid(pid, &status, 0);
      out.exit_codes.push_back(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    }
    out.rank0_log = Slurp(out.dir / "rank0.log");
    if (fs::exists(out.dir / "losses0.json")) {
      out.losses = nlohmann::json::parse(Slurp(out.dir / "losses0.json"))["losses"]
                       .get<std::vector<double>>();
    }
    return out;
  }

  static std::map<std::string, at::Tensor> Adapter(const Outcome& o) {
    auto f = rigtune::model::SafetensorsFile::Open(
        (o.dir / "adapter" / "adapter_model.safetensors").string());
    EXPECT_TRUE(f.ok()) << f.status();
    std::map<std::string, at::Tensor> out;
    for (const std::string& name : f->Names()) out[name] = *f->Read(name);
    return out;
  }

  void ExpectSameTraining(const Outcome& a, const Outcome& b) {
    for (int c : b.exit_codes) ASSERT_EQ(c, 0) << b.rank0_log;
    ASSERT_EQ(a.losses.size(), b.losses.size());
    for (size_t i = 0; i < a.losses.size(); ++i) {
      EXPECT_NEAR(b.losses[i], a.losses[i], 1e-5 * std::abs(a.losses[i])) << "step " << i;
    }
    auto wa = Adapter(a), wb = Adapter(b);
    ASSERT_EQ(wa.size(), wb.size());
    for (const auto& [k, t] : wa) {
      const double rel = ((wb[k] - t).norm() / t.norm()).item<double>();
      EXPECT_LT(rel, 1e-5) << k;
    }
  }

  fs::path root_;
};

TEST_F(FsdpTest, ShardingStrategiesMatchOneRank) {
  Outcome one = Launch("one", 1, 4, "full_shard");
  ASSERT_EQ(one.exit_codes[0], 0) << one.rank0_log;
  ASSERT_EQ(one.losses.size(), 4u);
  EXPECT_LT(one.losses.back(), one.losses.front());
  for (const char* sharding : {"full_shard", "shard_grad_op", "no_shard"}) {
    SCOPED_TRACE(sharding);
    ExpectSameTraining(one, Launch(std::string("two_") + sharding, 2, 2, sharding));
  }
}

TEST_F(FsdpTest, FourRanksMatchOneRank) {
  Outcome one = Launch("one", 1, 4, "full_shard");
  ASSERT_EQ(one.exit_codes[0], 0) << one.rank0_log;
  for (const char* sharding : {"full_shard", "shard_grad_op", "no_shard"}) {
    SCOPED_TRACE(sharding);
    ExpectSameTraining(one, Launch(std::string("four_") + sharding, 4, 1, sharding));
  }
}

TEST_F(FsdpTest, DeadRankEndsTheJobNamingIt) {
  Outcome o = Launch("dead", 2, 2, "full_shard", /*kill_rank=*/1, /*steps=*/100000);
  EXPECT_NE(o.exit_codes[1], 0);
  EXPECT_EQ(o.exit_codes[0], 1);
  EXPECT_THAT(o.rank0_log, ::testing::HasSubstr("rank 1"));
}

}  // namespace
