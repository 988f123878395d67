#include "tests/e2e/http_load.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace rigtune::e2e {

namespace {

using rigtune::testing::RawHttpConnection;
using std::chrono::milliseconds;

constexpr milliseconds kPatience(60000);

}  // namespace

std::pair<int, std::string> Exchange(int port, const std::string& request) {
  RawHttpConnection connection;
  if (!connection.Connect(port) || !connection.Send(request)) return {0, ""};
  connection.WaitClosed(kPatience);
  const std::string& text = connection.received();
  if (text.rfind("HTTP/1.1 ", 0) != 0 || text.size() < 12) return {0, ""};
  const size_t body = text.find("\r\n\r\n");
  return {std::stoi(text.substr(9, 3)), body == std::string::npos ? "" : text.substr(body + 4)};
}

namespace {

std::string PostRequest(const std::string& body) {
  return absl::StrCat("POST /v1/jobs HTTP/1.1\r\nHost: load\r\nConnection: close\r\n"
                      "Content-Type: application/json\r\nContent-Length: ",
                      body.size(), "\r\n\r\n", body);
}

}  // namespace

std::string SubmitOne(int port, const std::string& spec_json) {
  auto [status, reply] = Exchange(port, PostRequest(absl::StrCat(R"({"spec": )", spec_json, "}")));
  auto job = nlohmann::json::parse(reply, nullptr, false);
  return status == 200 && !job.is_discarded() ? job.value("id", "") : "";
}

bool WaitForState(int port, const std::string& id, const std::string& state) {
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  while (std::chrono::steady_clock::now() < deadline) {
    auto [status, reply] = Exchange(
        port, absl::StrCat("GET /v1/jobs/", id, " HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\r\n"));
    auto job = nlohmann::json::parse(reply, nullptr, false);
    if (status == 200 && !job.is_discarded() && job.value("state", "") == state) return true;
    std::this_thread::sleep_for(milliseconds(50));
  }
  return false;
}

BurstResult SubmitBurst(int port, int total, int shared, int keys, const std::string& spec_json) {
  BurstResult result;
  std::mutex mu;
  std::vector<std::thread> threads;
  for (int i = 0; i < total; ++i) {
    threads.emplace_back([&, i] {
      const std::string key =
          i < shared ? absl::StrCat("burst-key-", i % keys) : absl::StrCat("burst-unique-", i);
      const std::string body =
          absl::StrCat(R"({"spec": )", spec_json, R"(, "idempotency_key": ")", key, R"("})");
      auto [status, reply] = Exchange(port, PostRequest(body));
      std::lock_guard<std::mutex> lock(mu);
      if (status == 0) {
        ++result.connection_errors;
      } else if (status != 200) {
        ++result.rejected;
      } else {
        ++result.ok;
        auto job = nlohmann::json::parse(reply, nullptr, false);
        if (!job.is_discarded()) result.ids.insert(job.value("id", ""));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  return result;
}

std::vector<RawHttpConnection> OpenWatchers(int port, const std::string& job, int count,
                                            int addresses) {
  std::vector<RawHttpConnection> watchers;
  for (int i = 0; i < count; ++i) {
    RawHttpConnection watcher;
    const std::string source = absl::StrCat("127.0.0.", 2 + i % addresses);
    if (watcher.Connect(port, source.c_str()) &&
        watcher.Send(absl::StrCat("GET /v1/jobs/", job, ":watch HTTP/1.1\r\nHost: load\r\n\r\n"))) {
      watcher.ReadUntil("\r\n\r\n", kPatience);
    }
    watchers.push_back(std::move(watcher));
  }
  return watchers;
}

std::vector<RawHttpConnection> OpenSlowClients(int port, int count) {
  std::vector<RawHttpConnection> clients(static_cast<size_t>(count));
  for (RawHttpConnection& client : clients) {
    if (client.Connect(port)) client.Send("GET /v1/jobs HTTP/1.1\r\nHo");
  }
  return clients;
}

ProbeResult Probe(int port, const std::string& path, int count) {
  ProbeResult result;
  for (int i = 0; i < count; ++i) {
    const auto start = std::chrono::steady_clock::now();
    auto [status, body] = Exchange(
        port, absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\r\n"));
    const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
    if (status == 200) {
      ++result.answered;
      result.latency_ms.push_back(took.count());
    } else {
      ++result.failed;
    }
  }
  std::sort(result.latency_ms.begin(), result.latency_ms.end());
  return result;
}

double Quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const size_t index = std::min(sorted.size() - 1, static_cast<size_t>(q * sorted.size()));
  return sorted[index];
}

}  // namespace rigtune::e2e
