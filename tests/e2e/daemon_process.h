// Test helpers for end-to-end tests: a rigtuned child process on ephemeral
// ports with its own state folder, and running the rigtune CLI.
#ifndef RIGTUNE_TESTS_E2E_DAEMON_PROCESS_H_
#define RIGTUNE_TESTS_E2E_DAEMON_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/time/time.h"

namespace rigtune::e2e {

struct CliResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

class DaemonProcess {
 public:
  DaemonProcess(std::string state_dir, std::string worker_binary,
                std::vector<std::string> extra_args = {})
      : state_dir_(std::move(state_dir)),
        worker_binary_(std::move(worker_binary)),
        extra_args_(std::move(extra_args)) {}
  ~DaemonProcess();

  // Starts rigtuned and waits until its port file appears. False on failure
  // (the daemon's log is in <state_dir>/rigtuned.log).
  bool Start();
  // Sends `signal` and waits for the exit; returns the wait status.
  int Stop(int signal);

  pid_t pid() const { return pid_; }
  int grpc_port() const { return grpc_port_; }
  int http_port() const { return http_port_; }
  std::string grpc_address() const;
  // Pids of the daemon's live child processes (its workers).
  std::vector<pid_t> Children() const;
  std::string Log() const;

 private:
  std::string state_dir_;
  std::string worker_binary_;
  std::vector<std::string> extra_args_;
  pid_t pid_ = -1;
  int grpc_port_ = 0;
  int http_port_ = 0;
};

// Runs `rigtune --server <address> <args>` through the shell.
CliResult RunCli(const std::string& address, const std::string& args);

}  // namespace rigtune::e2e

#endif  // RIGTUNE_TESTS_E2E_DAEMON_PROCESS_H_
