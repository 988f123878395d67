// The fixture of the HTTP front end tests: a coordinator whose jobs stay
// QUEUED behind an HttpServer on an ephemeral port, and an httplib client.
#ifndef RIGTUNE_TESTS_SERVER_HTTP_FIXTURE_H_
#define RIGTUNE_TESTS_SERVER_HTTP_FIXTURE_H_

#include <httplib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/http_server.h"
#include "tests/server/test_dir.h"

namespace rigtune::server {

namespace fs = std::filesystem;

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = rigtune::testing::FreshTestDir();
    fs::create_directories(dir_ / "data");
    std::ofstream(dir_ / "data" / "train.jsonl") << "{}\n";
  }

  // Starts the coordinator (no job ever launches) and the HTTP server with
  // `http_options_`.
  void Start(const std::string& token = "") {
    CoordinatorOptions options;
    options.state_dir = (dir_ / "state").string();
    options.worker_binary = "/bin/false";
    options.cpu_slots = 0;  // jobs stay QUEUED: these tests are about the door
    options.roots.data = {(dir_ / "data").string()};
    options.roots.output = {(dir_ / "out").string()};
    auto coordinator = Coordinator::Create(options);
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = *std::move(coordinator);
    ASSERT_TRUE(coordinator_->Start("127.0.0.1:1").ok());
    auth_ = std::make_unique<TokenAuth>(token);
    auto http = HttpServer::Create(coordinator_.get(), auth_.get(), http_options_);
    ASSERT_TRUE(http.ok()) << http.status();
    http_ = *std::move(http);
    http_->Start();
    client_ = std::make_unique<httplib::Client>("127.0.0.1", http_->port());
    client_->set_read_timeout(10, 0);
  }

  void TearDown() override {
    if (http_) http_->Stop();
    if (coordinator_) coordinator_->Shutdown();
  }

  httplib::Result Post(const std::string& path, const std::string& body) {
    return client_->Post(path.c_str(), body, "application/json");
  }

  // 400 whose message names `field`, and no job was stored.
  void ExpectRejected(const std::string& body, const std::string& field) {
    auto res = Post("/v1/jobs", body);
    ASSERT_TRUE(res) << "no response";
    EXPECT_EQ(res->status, 400) << res->body;
    auto json = nlohmann::json::parse(res->body, nullptr, false);
    ASSERT_FALSE(json.is_discarded()) << res->body;
    EXPECT_EQ(json["error"]["status"], "INVALID_ARGUMENT");
    std::string message = json["error"]["message"];
    EXPECT_NE(message.find(field), std::string::npos) << message;
    auto list = client_->Get("/v1/jobs");
    ASSERT_TRUE(list);
    EXPECT_EQ(list->body, "{}") << "a rejected request changed the store";
  }

  // A QUEUED job (it never starts): one event, seq 1.
  std::string CreateJob() {
    const std::string body = R"({"spec": {"model": "random:tiny", "dataset": {"path": ")" +
                             (dir_ / "data" / "train.jsonl").string() + R"("}}})";
    auto created = Post("/v1/jobs", body);
    if (!created || created->status != 200) return "";
    return nlohmann::json::parse(created->body)["id"];
  }

  HttpOptions http_options_ = [] {
    HttpOptions options;
    options.address = "127.0.0.1:0";
    options.max_request_bytes = 64 * 1024;
    return options;
  }();
  fs::path dir_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<TokenAuth> auth_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<httplib::Client> client_;
};

}  // namespace rigtune::server

#endif  // RIGTUNE_TESTS_SERVER_HTTP_FIXTURE_H_
