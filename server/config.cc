#include "server/config.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/auth.h"
#include "yaml-cpp/yaml.h"

namespace rigtune::server {

namespace {

namespace fs = std::filesystem;

using Setter = std::function<void(const YAML::Node&)>;

template <typename T>
Setter Set(T* field) {
  return [field](const YAML::Node& node) { *field = node.as<T>(); };
}

std::string SelfDir() {
  std::error_code error;
  fs::path self = fs::read_symlink("/proc/self/exe", error);
  return error ? std::string(".") : self.parent_path().string();
}

absl::Status ApplyYaml(const CLI::App& app, DaemonConfig& config) {
  const std::map<std::string, Setter> keys = {
      {"grpc_listen", Set(&config.grpc_listen)},
      {"http_listen", Set(&config.http_listen)},
      {"state_dir", Set(&config.state_dir)},
      {"db", Set(&config.db)},
      {"gpus", Set(&config.gpus)},
      {"cpu_slots", Set(&config.cpu_slots)},
      {"gpu_memory_gib", Set(&config.gpu_memory_gib)},
      {"worker_binary", Set(&config.worker_binary)},
      {"model_roots", Set(&config.model_roots)},
      {"data_roots", Set(&config.data_roots)},
      {"output_roots", Set(&config.output_roots)},
      {"token_file", Set(&config.token_file)},
      {"max_restarts", Set(&config.max_restarts)},
      {"grace_period_seconds", Set(&config.grace_period_seconds)},
      {"max_request_bytes", Set(&config.max_request_bytes)},
      {"tls_cert_file", Set(&config.tls_cert_file)},
      {"tls_key_file", Set(&config.tls_key_file)},
      {"tls_client_ca_file", Set(&config.tls_client_ca_file)},
      {"allow_insecure", Set(&config.allow_insecure)},
      {"http_max_connections", Set(&config.http_max_connections)},
      {"http_max_streams", Set(&config.http_max_streams)},
      {"http_max_streams_per_client", Set(&config.http_max_streams_per_client)},
      {"http_request_timeout_seconds", Set(&config.http_request_timeout_seconds)},
  };
  YAML::Node root;
  try {
    root = YAML::LoadFile(config.config_file);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config: ", config.config_file, ": ", e.what()));
  }
  if (!root.IsMap() && !root.IsNull()) {
    return absl::InvalidArgumentError(absl::StrCat("config: ", config.config_file,
                                                   " must be a mapping of settings"));
  }
  for (const auto& entry : root) {
    const std::string key = entry.first.as<std::string>();
    auto it = keys.find(key);
    if (it == keys.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(key, ": unknown setting in ", config.config_file));
    }
    std::string flag = "--" + key;
    for (char& c : flag) c = c == '_' ? '-' : c;
    if (absl::EndsWith(key, "_roots")) flag.pop_back();  // model_roots: --model-root
    if (app.count(flag) > 0) continue;  // the command line wins
    try {
      it->second(entry.second);
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat(key, ": wrong type in ", config.config_file, ": ", e.what()));
    }
  }
  return absl::OkStatus();
}

absl::Status ResolveToken(DaemonConfig& config) {
  if (!config.token_file.empty()) {
    std::ifstream in(config.token_file);
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrCat("token_file: cannot read ", config.token_file));
    }
    std::stringstream text;
    text << in.rdbuf();
    config.token = std::string(absl::StripAsciiWhitespace(text.str()));
    if (config.token.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("token_file: ", config.token_file,
                                                     " is empty"));
    }
  } else if (const char* env = std::getenv("RIGTUNE_TOKEN"); env != nullptr && *env) {
    config.token = env;
  }
  return absl::OkStatus();
}

// Beyond loopback: a token always, TLS unless allow_insecure.
absl::Status CheckExposure(const DaemonConfig& config) {
  if (config.tls_cert_file.empty() != config.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "tls_cert_file, tls_key_file: set both (the certificate and its key) or neither");
  }
  if (!config.tls_client_ca_file.empty() && config.tls_cert_file.empty()) {
    return absl::InvalidArgumentError(
        "tls_client_ca_file: needs tls_cert_file and tls_key_file (mutual TLS is on top of TLS)");
  }
  for (const auto* listen : {&config.grpc_listen, &config.http_listen}) {
    if (IsLoopbackAddress(*listen)) continue;
    const char* name = listen == &config.grpc_listen ? "grpc_listen: " : "http_listen: ";
    if (config.token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, *listen, " is not loopback; set token_file or RIGTUNE_TOKEN"));
    }
    if (config.tls_cert_file.empty() && !config.allow_insecure) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, *listen,
          " is not loopback; set tls_cert_file and tls_key_file (docs/operations.md shows how "
          "to make them), or allow_insecure: true to send the token in plaintext"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

void AddDaemonFlags(CLI::App& app, DaemonConfig& config) {
  // A flag given twice takes its last value (systemd drop-ins append flags);
  // the repeatable lists below collect every value.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--config", config.config_file, "YAML settings file")->check(CLI::ExistingFile);
  app.add_option("--grpc-listen", config.grpc_listen, "gRPC address (host:port, port 0: any)")
      ->capture_default_str();
  app.add_option("--http-listen", config.http_listen, "REST, /metrics, /healthz address")
      ->capture_default_str();
  app.add_option("--state-dir", config.state_dir, "job files, worker logs, the database")
      ->capture_default_str();
  app.add_option("--db", config.db, "SQLite file (default <state-dir>/rigtune.db)");
  app.add_option("--gpus", config.gpus, "auto | none | GPU indices, e.g. 0,1")
      ->capture_default_str();
  app.add_option("--cpu-slots", config.cpu_slots, "concurrent CPU jobs")
      ->capture_default_str()
      ->check(CLI::Range(0, 256));
  app.add_option("--gpu-memory-gib", config.gpu_memory_gib,
                 "each GPU's memory in GiB (e.g. 24): jobs the memory planner says cannot fit "
                 "are refused at submission; 0: the smallest managed card NVML reports")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 4096.0));
  app.add_option("--worker-binary", config.worker_binary, "rigtune-worker executable");
  app.add_option("--worker-arg", config.worker_args, "extra argument for every worker")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--model-root", config.model_roots, "folder models may come from (repeat)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--data-root", config.data_roots, "folder datasets may come from (repeat)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--output-root", config.output_roots, "folder outputs may go to (repeat)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--token-file", config.token_file, "file holding the bearer token");
  app.add_option("--max-restarts", config.max_restarts, "relaunches after a worker failure")
      ->capture_default_str()
      ->check(CLI::Range(0, 100));
  app.add_option("--grace-period-seconds", config.grace_period_seconds,
                 "SIGTERM to SIGKILL delay when stopping workers")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 3600.0));
  app.add_option("--max-request-bytes", config.max_request_bytes, "request size limit")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1024}, int64_t{1} << 30));
  app.add_option("--port-file", config.port_file, "write the bound ports here as JSON");
  app.add_option("--tls-cert-file", config.tls_cert_file,
                 "PEM certificate chain: gRPC and HTTP speak TLS (reloaded on SIGHUP)");
  app.add_option("--tls-key-file", config.tls_key_file, "PEM private key of --tls-cert-file");
  app.add_option("--tls-client-ca-file", config.tls_client_ca_file,
                 "PEM CA: clients must present a certificate it signed (mutual TLS)");
  app.add_flag("--allow-insecure", config.allow_insecure,
               "allow a non-loopback listen without TLS (the token is still required)");
  for (auto [flag, field, help] :
       {std::tuple{"--http-max-connections", &config.http_max_connections,
                   "open HTTP connections beyond which new ones get 503"},
        std::tuple{"--http-max-streams", &config.http_max_streams,
                   "open SSE watches beyond which new ones get 503"},
        std::tuple{"--http-max-streams-per-client", &config.http_max_streams_per_client,
                   "open SSE watches per client address beyond which new ones get 429"}}) {
    app.add_option(flag, *field, help)->capture_default_str()->check(CLI::Range(1, 1 << 20));
  }
  app.add_option("--http-request-timeout-seconds", config.http_request_timeout_seconds,
                 "time to send one whole request (headers and body); also the keep-alive idle limit")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
}

absl::Status FinishDaemonConfig(const CLI::App& app, DaemonConfig& config) {
  if (!config.config_file.empty()) {
    if (absl::Status s = ApplyYaml(app, config); !s.ok()) return s;
  }
  if (absl::Status s = ResolveToken(config); !s.ok()) return s;
  if (absl::Status s = CheckExposure(config); !s.ok()) return s;
  if (config.worker_binary.empty()) {
    const std::string dir = SelfDir();
    for (const std::string& candidate :
         {dir + "/rigtune-worker", dir + "/../worker/rigtune-worker"}) {
      if (access(candidate.c_str(), X_OK) == 0) {
        config.worker_binary = fs::weakly_canonical(candidate).string();
        break;
      }
    }
    if (config.worker_binary.empty()) config.worker_binary = dir + "/rigtune-worker";
  }
  if (!fs::path(config.worker_binary).is_absolute()) {
    config.worker_binary = fs::absolute(config.worker_binary).string();
  }
  if (config.http_max_connections < 1 || config.http_max_streams < 1 ||
      config.http_max_streams_per_client < 1) {
    return absl::InvalidArgumentError(
        "http_max_connections, http_max_streams, http_max_streams_per_client: must be >= 1");
  }
  if (config.http_request_timeout_seconds <= 0) {
    return absl::InvalidArgumentError("http_request_timeout_seconds: must be > 0");
  }
  if (config.max_request_bytes < 1024) {
    return absl::InvalidArgumentError("max_request_bytes: must be >= 1024");
  }
  return absl::OkStatus();
}

}  // namespace rigtune::server
