#include "tests/e2e/daemon_process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"

namespace rigtune::e2e {

namespace fs = std::filesystem;

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0) Stop(SIGKILL);
}

bool DaemonProcess::Start() {
  fs::create_directories(state_dir_);
  const std::string port_file = state_dir_ + "/ports.json";
  fs::remove(port_file);
  std::vector<std::string> args = {RIGTUNED_BINARY,
                                   "--grpc-listen", "127.0.0.1:0",
                                   "--http-listen", "127.0.0.1:0",
                                   "--state-dir", state_dir_,
                                   "--gpus", "none",
                                   "--worker-binary", worker_binary_,
                                   "--grace-period-seconds", "10",
                                   "--port-file", port_file};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const std::string log = state_dir_ + "/rigtuned.log";
  pid_ = fork();
  if (pid_ == 0) {
    FILE* out = std::fopen(log.c_str(), "a");
    if (out != nullptr) {
      dup2(fileno(out), STDOUT_FILENO);
      dup2(fileno(out), STDERR_FILENO);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    std::ifstream in(port_file);
    if (in) {
      nlohmann::json ports = nlohmann::json::parse(in, nullptr, false);
      if (!ports.is_discarded()) {
        grpc_port_ = ports["grpc_port"];
        http_port_ = ports["http_port"];
        return true;
      }
    }
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return false;
}

int DaemonProcess::Stop(int signal) {
  if (pid_ <= 0) return -1;
  kill(pid_, signal);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

std::string DaemonProcess::grpc_address() const { return absl::StrCat("127.0.0.1:", grpc_port_); }

std::vector<pid_t> DaemonProcess::Children() const {
  std::vector<pid_t> children;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &pid)) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::vector<std::string> fields = absl::StrSplit(stat.substr(paren + 2), ' ');
    pid_t parent = 0;
    if (fields.size() > 1 && fields[0] != "Z" && absl::SimpleAtoi(fields[1], &parent) &&
        parent == pid_) {
      children.push_back(pid);
    }
  }
  return children;
}

std::string DaemonProcess::Log() const {
  std::ifstream in(state_dir_ + "/rigtuned.log");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

CliResult RunCli(const std::string& address, const std::string& args) {
  const std::string command =
      absl::StrCat(RIGTUNE_CLI_BINARY, " --server ", address, " ", args, " 2>&1");
  CliResult result;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
  int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

}  // namespace rigtune::e2e
