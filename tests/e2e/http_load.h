// Load scenarios for rigtuned's HTTP port, shared by the load test program
// (tests/bench/http_load_bench.cc, which prints latencies) and the CI test
// (tests/e2e/http_load_e2e_test.cc, which asserts behaviour with smaller
// numbers and never a time).
#ifndef RIGTUNE_TESTS_E2E_HTTP_LOAD_H_
#define RIGTUNE_TESTS_E2E_HTTP_LOAD_H_

#include <set>
#include <utility>
#include <string>
#include <vector>

#include "tests/server/raw_http.h"

namespace rigtune::e2e {

struct BurstResult {
  int ok = 0;                  // 200 responses
  int rejected = 0;            // other HTTP statuses (a reused key with another spec: 409)
  int connection_errors = 0;   // no HTTP response at all: refused, reset, closed early
  std::set<std::string> ids;   // distinct job ids answered
};

// POSTs `total` jobs at once, one connection each. The first `shared`
// requests use idempotency keys "burst-key-<i % keys>" with identical specs;
// the rest use unique keys. Expected distinct jobs: keys + (total - shared).
BurstResult SubmitBurst(int port, int total, int shared, int keys, const std::string& spec_json);

// One request on a fresh connection ("GET /v1/jobs HTTP/1.1\r\n..."): the
// status (0: no HTTP response at all) and the body.
std::pair<int, std::string> Exchange(int port, const std::string& request);

// POSTs one job; its id, or "" on failure.
std::string SubmitOne(int port, const std::string& spec_json);

// Polls GET /v1/jobs/{id} until its state is `state`; false after a minute.
bool WaitForState(int port, const std::string& id, const std::string& state);

// `count` open SSE watches of `job`, spread over `addresses` client
// addresses (127.0.0.2, 127.0.0.3, ...). Each has its response header.
std::vector<rigtune::testing::RawHttpConnection> OpenWatchers(int port, const std::string& job,
                                                              int count, int addresses);

// `count` clients that send half a request line and stop.
std::vector<rigtune::testing::RawHttpConnection> OpenSlowClients(int port, int count);

struct ProbeResult {
  int answered = 0;                // 200 responses
  int failed = 0;                  // anything else, connection errors included
  std::vector<double> latency_ms;  // of the answered ones, sorted
};

// `count` sequential GETs of `path`, each on a fresh connection.
ProbeResult Probe(int port, const std::string& path, int count);

// The q-quantile (0..1) of sorted values; 0 when empty.
double Quantile(const std::vector<double>& sorted, double q);

}  // namespace rigtune::e2e

#endif  // RIGTUNE_TESTS_E2E_HTTP_LOAD_H_
