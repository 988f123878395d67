// FsdpLauncher: a GoogleTest fixture that runs one training job as N rank
// processes (fsdp_rank_tool), the way a launcher or rigtuned would, and reads
// back rank 0's losses and adapter. Shared by the CPU (Gloo) tests and the
// GPU (NCCL) tests.
#ifndef RIGTUNE_TESTS_WORKER_DIST_FSDP_LAUNCHER_H_
#define RIGTUNE_TESTS_WORKER_DIST_FSDP_LAUNCHER_H_

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"
#include "worker/model/safetensors.h"

namespace rigtune::testing {

// Note: POSIX calls and shell-free paths only; see Note [libstdc++ before
// LibTorch] in worker/CMakeLists.txt for why std::filesystem is avoided.
inline int FreePort() {
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

inline std::string Slurp(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct LaunchOptions {
  std::string model = "random:layers=2,hidden=64,intermediate=128,heads=4,kv_heads=2,vocab=96";
  int world = 1;
  int local_world = 0;  // ranks per simulated node; 0 = all on one node
  int batch = 4;
  std::string sharding = "full_shard";
  std::string device = "cpu";
  std::string dtype = "fp32";
  std::string backend = "auto";
  int kill_rank = -1;  // SIGKILLed after its first step
  int stop_rank = -1;  // SIGSTOPped (hung) after its first step; killed once the others exit
  double timeout_seconds = 60;  // dist.timeout_seconds
  int steps = 4;
  bool cpu_offload = false;
  std::string resume_from = "";  // checkpoint folder to resume from
  int stop_after = 0;        // > 0: should_stop() asks to stop after this many steps
  int checkpoint_every = 0;  // checkpoint.every_steps
  std::string dataset = "";      // text-format dataset.path; empty: synthetic tokens
  double validation_fraction = 0;  // dataset.validation_fraction
  int eval_every = 0;              // train.eval_every_steps
  bool offload_optimizer = false;
  int grad_accum = 1;
  std::string base = "nf4";     // train.base
  std::string method = "lora";  // train.method
  int expand_every = 0;         // train.expand_every (llama_pro)
};

struct Outcome {
  std::vector<int> exit_codes;
  std::vector<double> losses;
  std::vector<nlohmann::json> validations;  // rank 0's {step, loss, perplexity, tokens}
  std::string dir;
  std::string rank0_log;
};

class FsdpLauncher : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/rigtune_fsdp_XXXXXX";
    root_ = mkdtemp(tmpl);
  }
  void TearDown() override {
    const std::string cmd = "rm -rf '" + root_ + "'";
    if (std::system(cmd.c_str()) != 0) ADD_FAILURE() << "cannot remove " << root_;
  }

  Outcome Launch(const std::string& name, const LaunchOptions& o) {
    Outcome out;
    out.dir = root_ + "/" + name;
    mkdir(out.dir.c_str(), 0755);
    nlohmann::json job = {
        {"model", o.model},
        {"output_dir", out.dir},
        {"lora", {{"r", 4}, {"alpha", 8}}},
        // max_grad_norm small enough that clipping acts on every step
        {"optim", {{"lr", 0.01}, {"schedule", "constant"}, {"weight_decay", 0.01},
                   {"max_grad_norm", 0.05}}},
        {"train", {{"context_length", 16}, {"batch_size", o.batch}, {"max_steps", o.steps},
                   {"dtype", o.dtype}, {"device", o.device}, {"seed", 3},
                   {"grad_accum", o.grad_accum}, {"base", o.base}, {"method", o.method}}},
        {"dist", {{"sharding", o.sharding}, {"timeout_seconds", o.timeout_seconds},
                  {"cpu_offload", o.cpu_offload}, {"offload_optimizer", o.offload_optimizer},
                  {"backend", o.backend}}},
        {"checkpoint", {{"every_steps", o.checkpoint_every}}},
        {"resume_from", o.resume_from}};
    if (o.expand_every > 0) job["train"]["expand_every"] = o.expand_every;
    if (!o.dataset.empty()) {
      job["dataset"] = {{"path", o.dataset}, {"format", "text"}};
      if (o.validation_fraction > 0) job["dataset"]["validation_fraction"] = o.validation_fraction;
      job["train"]["eval_every_steps"] = o.eval_every;
    }
    std::ofstream(out.dir + "/job.json") << job.dump();
    const std::string port = std::to_string(FreePort());
    std::vector<pid_t> pids;
    for (int r = 0; r < o.world; ++r) {
      pid_t pid = fork();
      if (pid == 0) {
        setenv("RANK", std::to_string(r).c_str(), 1);
        const int per_node = o.local_world > 0 ? o.local_world : o.world;
        setenv("LOCAL_RANK", std::to_string(r % per_node).c_str(), 1);
        setenv("LOCAL_WORLD_SIZE", std::to_string(per_node).c_str(), 1);
        setenv("WORLD_SIZE", std::to_string(o.world).c_str(), 1);
        setenv("MASTER_ADDR", "127.0.0.1", 1);
        setenv("MASTER_PORT", port.c_str(), 1);
        const std::string log = out.dir + "/rank" + std::to_string(r) + ".log";
        if (freopen(log.c_str(), "w", stderr) == nullptr) _exit(126);
        const std::string losses = out.dir + "/losses" + std::to_string(r) + ".json";
        const std::string job_path = out.dir + "/job.json";
        const std::string stop_after = std::to_string(o.stop_after);
        execl(RIGTUNE_FSDP_RANK_TOOL, RIGTUNE_FSDP_RANK_TOOL, job_path.c_str(), losses.c_str(),
              stop_after.c_str(), static_cast<char*>(nullptr));
        _exit(127);
      }
      pids.push_back(pid);
    }
    for (auto [r, sig] : {std::pair{o.kill_rank, SIGKILL}, std::pair{o.stop_rank, SIGSTOP}}) {
      if (r < 0) continue;
      const std::string log = out.dir + "/rank" + std::to_string(r) + ".log";
      for (int i = 0; i < 600 && Slurp(log).find("step 1 ") == std::string::npos; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      kill(pids[r], sig);
    }
    out.exit_codes.assign(o.world, -1);
    auto reap = [&](int r) {
      int status = 0;
      waitpid(pids[r], &status, 0);
      out.exit_codes[r] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    };
    for (int r = 0; r < o.world; ++r) {
      if (r != o.stop_rank) reap(r);
    }
    if (o.stop_rank >= 0) {  // the hung rank never exits by itself
      kill(pids[o.stop_rank], SIGKILL);
      reap(o.stop_rank);
    }
    out.rank0_log = Slurp(out.dir + "/rank0.log");
    const std::string losses = Slurp(out.dir + "/losses0.json");
    if (!losses.empty()) {
      const nlohmann::json parsed = nlohmann::json::parse(losses);
      out.losses = parsed["losses"].get<std::vector<double>>();
      if (parsed.contains("validation")) {
        for (const auto& v : parsed["validation"]) out.validations.push_back(v);
      }
    }
    return out;
  }

  static std::map<std::string, at::Tensor> Adapter(const Outcome& o) {
    auto f = model::SafetensorsFile::Open(o.dir + "/adapter/adapter_model.safetensors");
    EXPECT_TRUE(f.ok()) << f.status();
    std::map<std::string, at::Tensor> out;
    if (!f.ok()) return out;
    for (const std::string& name : f->Names()) out[name] = *f->Read(name);
    return out;
  }

  // Same loss trajectory (relative `tol`) and final adapter (norm-wise
  // `weight_tol`, by default `tol`).
  void ExpectSameTraining(const Outcome& a, const Outcome& b, double tol, double weight_tol = 0) {
    if (weight_tol <= 0) weight_tol = tol;
    for (int c : b.exit_codes) ASSERT_EQ(c, 0) << b.rank0_log;
    ASSERT_EQ(a.losses.size(), b.losses.size());
    for (size_t i = 0; i < a.losses.size(); ++i) {
      EXPECT_NEAR(b.losses[i], a.losses[i], tol * std::abs(a.losses[i])) << "step " << i;
    }
    auto wa = Adapter(a), wb = Adapter(b);
    ASSERT_EQ(wa.size(), wb.size());
    for (const auto& [k, t] : wa) {
      const double rel = ((wb[k] - t).norm() / t.norm()).item<double>();
      EXPECT_LT(rel, weight_tol) << k;
    }
  }

  std::string root_;
};

}  // namespace rigtune::testing

#endif  // RIGTUNE_TESTS_WORKER_DIST_FSDP_LAUNCHER_H_
