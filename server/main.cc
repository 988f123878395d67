// rigtuned: the rigtune coordinator daemon.
//
//   rigtuned --state-dir /var/lib/rigtune --gpus auto
//
// Serves JobService (+ grpc.health.v1.Health, server reflection) and the
// workers' WorkerService on --grpc-listen, REST + /metrics + /healthz on
// --http-listen. Under systemd (Type=notify) it reports READY=1 once both
// ports listen, pings the watchdog from its scheduling thread and keeps a
// STATUS= line. SIGTERM/SIGINT: workers checkpoint and stop, the daemon
// exits 0, and the next start resumes their jobs. SIGHUP: the TLS
// certificate, key and client CA are read again (new connections use them;
// on an error the old ones stay and the reason is logged).
#include <signal.h>
#include <systemd/sd-daemon.h>

#include <cstdio>
#include <memory>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "nlohmann/json.hpp"
#include "server/auth.h"
#include "server/config.h"
#include "server/coordinator.h"
#include "server/grpc_tls.h"
#include "server/http_server.h"
#include "server/job_file.h"
#include "server/job_service.h"
#include "server/tls_material.h"
#include "server/worker_service.h"

namespace {

using rigtune::server::DaemonConfig;

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "rigtuned: %s\n", std::string(status.message()).c_str());
  return 1;
}

// The address workers dial: the gRPC listen address with the bound port,
// and a wildcard host replaced by loopback.
std::string WorkerAddress(const std::string& listen, int port) {
  if (listen.rfind("unix:", 0) == 0) return listen;
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "[::]") host = "127.0.0.1";
  return absl::StrCat(host, ":", port);
}

int Run(DaemonConfig& config) {
  absl::StatusOr<std::vector<int>> gpus = rigtune::server::ParseGpuInventory(config.gpus);
  if (!gpus.ok()) return Fail(gpus.status());

  rigtune::server::CoordinatorOptions options;
  options.state_dir = config.state_dir;
  options.db_path = config.db;
  options.gpus = *gpus;
  options.cpu_slots = config.cpu_slots;
  options.worker_binary = config.worker_binary;
  options.worker_args = config.worker_args;
  options.roots = {config.model_roots, config.data_roots, config.output_roots};
  options.max_restarts = config.max_restarts;
  options.gpu_memory_gib = config.gpu_memory_gib;
  options.grace_period = absl::Seconds(config.grace_period_seconds);
  options.worker_token = config.token;
  options.version = RIGTUNE_VERSION;
  options.heartbeat = [](const std::string& status) {
    sd_notify(0, absl::StrCat("WATCHDOG=1\nSTATUS=", status).c_str());
  };
  auto coordinator = rigtune::server::Coordinator::Create(options);
  if (!coordinator.ok()) return Fail(coordinator.status());

  std::unique_ptr<rigtune::server::TlsMaterial> tls;
  if (!config.tls_cert_file.empty()) {
    auto loaded = rigtune::server::TlsMaterial::Load(
        {config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file});
    if (!loaded.ok()) return Fail(loaded.status());
    tls = *std::move(loaded);
  }

  rigtune::server::TokenAuth auth(config.token);
  rigtune::server::JobServiceImpl job_service(coordinator->get(), &auth);
  rigtune::server::WorkerServiceImpl worker_service(coordinator->get(), &auth);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  // With TLS the workers (local processes) dial a loopback port of their own.
  int worker_port = 0;
  if (tls != nullptr) {
    builder.AddListeningPort(config.grpc_listen,
                             std::make_shared<rigtune::server::ReloadingSslServerCredentials>(
                                 tls.get()),
                             &grpc_port);
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &worker_port);
  } else {
    builder.AddListeningPort(config.grpc_listen, grpc::InsecureServerCredentials(), &grpc_port);
  }
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.max_request_bytes));
  builder.RegisterService(&job_service);
  builder.RegisterService(&worker_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || (grpc_port == 0 && config.grpc_listen.rfind("unix:", 0) != 0)) {
    return Fail(absl::UnavailableError(
        absl::StrCat("grpc_listen: cannot listen on ", config.grpc_listen)));
  }
  const std::string worker_address = tls != nullptr
                                         ? absl::StrCat("127.0.0.1:", worker_port)
                                         : WorkerAddress(config.grpc_listen, grpc_port);
  if (absl::Status s = (*coordinator)->Start(worker_address); !s.ok()) return Fail(s);

  rigtune::server::HttpOptions http_options;
  http_options.address = config.http_listen;
  http_options.max_request_bytes = static_cast<size_t>(config.max_request_bytes);
  http_options.request_timeout = absl::Seconds(config.http_request_timeout_seconds);
  http_options.max_connections = config.http_max_connections;
  http_options.max_streams = config.http_max_streams;
  http_options.max_streams_per_client = config.http_max_streams_per_client;
  http_options.tls = tls.get();
  auto http = rigtune::server::HttpServer::Create(coordinator->get(), &auth, http_options);
  if (!http.ok()) {
    (*coordinator)->Shutdown();
    return Fail(http.status());
  }
  (*http)->Start();
  server->GetHealthCheckService()->SetServingStatus(true);

  if (!config.port_file.empty()) {
    nlohmann::json ports = {{"grpc_port", grpc_port}, {"http_port", (*http)->port()}};
    if (absl::Status s = rigtune::server::WriteFileAtomically(config.port_file, ports.dump());
        !s.ok()) {
      return Fail(s);
    }
  }
  std::fprintf(stderr, "rigtuned %s: gRPC on %s, HTTP%s on port %d, %zu GPU(s), state in %s\n",
               RIGTUNE_VERSION, WorkerAddress(config.grpc_listen, grpc_port).c_str(),
               tls != nullptr ? "S (TLS on both ports)" : "", (*http)->port(), gpus->size(),
               config.state_dir.c_str());
  sd_notify(0, "READY=1\nSTATUS=serving");

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  int signal_number = 0;
  while (sigwait(&signals, &signal_number) == 0 && signal_number == SIGHUP) {
    if (tls == nullptr) {
      std::fprintf(stderr, "rigtuned: SIGHUP: no TLS configured, nothing to reload\n");
    } else if (absl::Status s = tls->Reload(); !s.ok()) {
      std::fprintf(stderr, "rigtuned: SIGHUP: keeping the old certificate: %s\n",
                   std::string(s.message()).c_str());
    } else {
      std::fprintf(stderr, "rigtuned: SIGHUP: reloaded the TLS certificate and key\n");
    }
  }

  std::fprintf(stderr, "rigtuned: signal %d; stopping workers (they checkpoint first)\n",
               signal_number);
  sd_notify(0, "STOPPING=1\nSTATUS=stopping workers");
  server->GetHealthCheckService()->SetServingStatus(false);
  (*coordinator)->Shutdown();  // workers still report through the gRPC server
  (*http)->Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Every thread inherits this mask; the main thread takes the signals with
  // sigwait(). Workers get the default mask back before exec.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  CLI::App app("rigtuned: the rigtune fine-tuning daemon", "rigtuned");
  DaemonConfig config;
  rigtune::server::AddDaemonFlags(app, config);
  CLI11_PARSE(app, argc, argv);
  if (absl::Status s = rigtune::server::FinishDaemonConfig(app, config); !s.ok()) return Fail(s);
  return Run(config);
}
