// http_load_bench: rigtuned's HTTP port under concurrent clients, with a
// worker (the fake engine) training throughout.
//
//   http_load_bench [SUBMISSIONS=200] [WATCHERS=100] [SLOW_CLIENTS=50] [PROBES=500]
//
// 1. A burst of SUBMISSIONS concurrent POST /v1/jobs, half of them sharing
//    10 idempotency keys: prints the distinct jobs (expected: 10 + half)
//    and the connections that got no HTTP response (expected: 0).
// 2. WATCHERS SSE streams (from 4 client addresses) and SLOW_CLIENTS that
//    send half a request line and stop; meanwhile PROBES sequential
//    /healthz and GET /v1/jobs, each on a new connection: prints p50, p99
//    and max latency, and checks every stream still delivers.
// Exits 1 when a behaviour check fails. docs/benchmarks.md quotes it.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "tests/e2e/daemon_process.h"
#include "tests/e2e/http_load.h"

namespace {

using namespace rigtune::e2e;

constexpr char kLongJob[] = R"({"model": "random:tiny", "train": {"max_steps": 1000000}})";
constexpr char kQueuedJob[] = R"({"model": "random:tiny", "train": {"max_steps": 1}})";

int Arg(int argc, char** argv, int index, int fallback) {
  return argc > index ? std::atoi(argv[index]) : fallback;
}

void PrintLatency(const char* path, const ProbeResult& probe) {
  std::printf("  %-9s answered %d/%zu  p50 %.2f ms  p99 %.2f ms  max %.2f ms\n", path,
              probe.answered, static_cast<size_t>(probe.answered + probe.failed),
              Quantile(probe.latency_ms, 0.5), Quantile(probe.latency_ms, 0.99),
              probe.latency_ms.empty() ? 0.0 : probe.latency_ms.back());
}

}  // namespace

int main(int argc, char** argv) {
  const int submissions = Arg(argc, argv, 1, 200);
  const int watchers = Arg(argc, argv, 2, 100);
  const int slow_clients = Arg(argc, argv, 3, 50);
  const int probes = Arg(argc, argv, 4, 500);
  const std::string state = (std::filesystem::temp_directory_path() /
                             ("http_load_bench." + std::to_string(getpid()))).string();
  setenv("RIGTUNE_FAKE_STEP_MS", "20", 1);
  DaemonProcess daemon(state, RIGTUNE_FAKE_WORKER);
  if (!daemon.Start()) {
    std::fprintf(stderr, "rigtuned did not start:\n%s\n", daemon.Log().c_str());
    return 1;
  }
  const int port = daemon.http_port();
  const std::string running = SubmitOne(port, kLongJob);
  if (running.empty() || !WaitForState(port, running, "RUNNING")) {
    std::fprintf(stderr, "the worker did not start:\n%s\n", daemon.Log().c_str());
    return 1;
  }
  bool ok = true;

  std::printf("idle: %d probes each\n", probes);
  PrintLatency("/healthz", Probe(port, "/healthz", probes));
  PrintLatency("/v1/jobs", Probe(port, "/v1/jobs", probes));

  const int shared = submissions / 2;
  const size_t expected = static_cast<size_t>(10 + submissions - shared);
  BurstResult burst = SubmitBurst(port, submissions, shared, 10, kQueuedJob);
  std::printf("burst: %d concurrent POST /v1/jobs (%d over 10 keys): %d ok, %d other status, "
              "%d connection errors, %zu distinct jobs (expected %zu)\n",
              submissions, shared, burst.ok, burst.rejected, burst.connection_errors,
              burst.ids.size(), expected);
  ok = ok && burst.connection_errors == 0 && burst.ids.size() == expected;

  auto streams = OpenWatchers(port, running, watchers, 4);
  auto slow = OpenSlowClients(port, slow_clients);
  std::printf("under load: %d SSE streams, %d slow-header clients, %d probes each\n", watchers,
              slow_clients, probes);
  ProbeResult health = Probe(port, "/healthz", probes);
  ProbeResult list = Probe(port, "/v1/jobs", probes);
  PrintLatency("/healthz", health);
  PrintLatency("/v1/jobs", list);
  ok = ok && health.failed == 0 && list.failed == 0;
  int delivering = 0;
  for (auto& stream : streams) {
    delivering += stream.ReadUntil("event: metrics", std::chrono::seconds(30)) ? 1 : 0;
  }
  std::printf("streams still delivering events: %d/%d\n", delivering, watchers);
  ok = ok && delivering == watchers;
  std::printf("%s\n", ok ? "PASS" : "FAIL");
  daemon.Stop(SIGTERM);
  std::filesystem::remove_all(state);
  return ok ? 0 : 1;
}
