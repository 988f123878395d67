// DaemonConfig: rigtuned's settings, from flags (CLI11) and an optional YAML
// file (yaml-cpp). A flag given on the command line wins over the file.
//
//   rigtuned --config /etc/rigtune/rigtuned.yaml --gpus 0,1
//
// The YAML keys are the flag names with underscores:
//
//   grpc_listen: 127.0.0.1:50051
//   http_listen: 127.0.0.1:8080
//   state_dir: /var/lib/rigtune
//   gpus: auto            # auto | none | 0,1,...
//   gpu_memory_gib: 24    # each GPU's memory, for the admission check
//   model_roots: [/srv/models]
//   data_roots: [/srv/datasets]
//   output_roots: [/srv/adapters]
//   token_file: /etc/rigtune/token
//   tls_cert_file: /etc/rigtune/tls.crt      # both ports then speak TLS
//   tls_key_file: /etc/rigtune/tls.key
//   tls_client_ca_file: /etc/rigtune/clients-ca.crt   # optional: mutual TLS
//   allow_insecure: false   # true: allow a non-loopback listen without TLS
//   http_max_connections: 4096
//   http_max_streams: 1024
//   http_max_streams_per_client: 64
//   http_request_timeout_seconds: 10
//   max_restarts: 2
//   grace_period_seconds: 30
#ifndef RIGTUNE_SERVER_CONFIG_H_
#define RIGTUNE_SERVER_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace rigtune::server {

struct DaemonConfig {
  std::string config_file;
  std::string grpc_listen = "127.0.0.1:50051";
  std::string http_listen = "127.0.0.1:8080";
  std::string state_dir = "/var/lib/rigtune";
  std::string db;  // empty: <state_dir>/rigtune.db
  std::string gpus = "auto";
  int cpu_slots = 1;
  double gpu_memory_gib = 0;  // 0: unknown (only jobs with a memory cap are planned)
  std::string worker_binary;  // empty: rigtune-worker beside rigtuned (or ../worker/)
  std::vector<std::string> worker_args;
  std::vector<std::string> model_roots;
  std::vector<std::string> data_roots;
  std::vector<std::string> output_roots;
  std::string token_file;  // the bearer token; else $RIGTUNE_TOKEN
  std::string token;       // resolved by FinishDaemonConfig
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  bool allow_insecure = false;  // beyond loopback without TLS (the token is still required)
  int http_max_connections = 4096;
  int http_max_streams = 1024;
  int http_max_streams_per_client = 64;
  double http_request_timeout_seconds = 10;
  int max_restarts = 2;
  double grace_period_seconds = 30;
  int64_t max_request_bytes = 1 << 20;
  std::string port_file;  // written once listening: {"grpc_port": N, "http_port": M}
};

// Declares every flag on `app`, bound to `config`.
void AddDaemonFlags(CLI::App& app, DaemonConfig& config);

// After app.parse(): fills the fields the command line left alone from the
// YAML file (if any), resolves the token and the worker binary, and checks
// the result: beyond loopback a listen needs a token and TLS (TLS may be
// waived with allow_insecure). INVALID_ARGUMENT names the flag or key, e.g.
// "grpc_listen: 0.0.0.0:50051 is not loopback; set token_file or RIGTUNE_TOKEN".
absl::Status FinishDaemonConfig(const CLI::App& app, DaemonConfig& config);

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_CONFIG_H_
