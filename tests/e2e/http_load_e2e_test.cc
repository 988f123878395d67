// rigtuned's HTTP port under load with a worker running, with small
// numbers: behaviour only (no resets, exact idempotency, no starvation),
// never a time. tests/bench/http_load_bench.cc runs the same scenarios at
// full size and prints latencies.
#include <chrono>

#include "gtest/gtest.h"
#include "tests/e2e/daemon_process.h"
#include "tests/e2e/http_load.h"
#include "tests/server/test_dir.h"

namespace rigtune::e2e {
namespace {

constexpr char kLongJob[] = R"({"model": "random:tiny", "train": {"max_steps": 100000}})";
constexpr char kQueuedJob[] = R"({"model": "random:tiny", "train": {"max_steps": 1}})";

TEST(HttpLoadE2ETest, BurstsStreamsAndSlowClientsWithAWorkerRunning) {
  rigtune::testing::ClearFakeWorkerKnobs();
  setenv("RIGTUNE_FAKE_STEP_MS", "20", 1);
  DaemonProcess daemon((rigtune::testing::FreshTestDir("e2e") / "state").string(),
                       RIGTUNE_FAKE_WORKER, {"--http-request-timeout-seconds", "2"});
  ASSERT_TRUE(daemon.Start()) << daemon.Log();
  const int port = daemon.http_port();
  const std::string running = SubmitOne(port, kLongJob);
  ASSERT_TRUE(WaitForState(port, running, "RUNNING")) << daemon.Log();

  // 40 submissions at once, 20 of them over 4 shared keys: 4 + 20 jobs.
  BurstResult burst = SubmitBurst(port, 40, 20, 4, kQueuedJob);
  EXPECT_EQ(burst.connection_errors, 0);
  EXPECT_EQ(burst.rejected, 0);
  EXPECT_EQ(burst.ok, 40);
  EXPECT_EQ(burst.ids.size(), 24u);

  // Streams and slow clients open; short requests still all answer.
  auto watchers = OpenWatchers(port, running, 20, 4);
  auto slow = OpenSlowClients(port, 10);
  for (const char* path : {"/healthz", "/v1/jobs", "/metrics"}) {
    ProbeResult probe = Probe(port, path, 10);
    EXPECT_EQ(probe.answered, 10) << path;
  }
  for (auto& watcher : watchers) {
    EXPECT_EQ(watcher.received().rfind("HTTP/1.1 200", 0), 0u) << watcher.received();
    EXPECT_TRUE(watcher.ReadUntil("event: metrics", std::chrono::seconds(30)))
        << "a stream stopped delivering: " << watcher.received().substr(0, 300);
  }
  // Slow clients are dropped after the request timeout.
  for (auto& client : slow) EXPECT_TRUE(client.WaitClosed(std::chrono::seconds(30)));
}

}  // namespace
}  // namespace rigtune::e2e
