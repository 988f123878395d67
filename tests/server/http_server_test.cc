// The REST front end: validation at the door, the routes, SSE, auth.
#include "server/http_server.h"

#include <httplib.h>

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "tests/server/test_dir.h"
#include "nlohmann/json.hpp"

namespace rigtune::server {
namespace {

namespace fs = std::filesystem;

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = rigtune::testing::FreshTestDir();
    fs::create_directories(dir_ / "data");
    std::ofstream(dir_ / "data" / "train.jsonl") << "{}\n";
  }

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
    auto http = HttpServer::Create(coordinator_.get(), auth_.get(), "127.0.0.1:0", 64 * 1024);
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

  fs::path dir_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<TokenAuth> auth_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(HttpServerTest, MalformedJsonIsRejected) {
  Start();
  ExpectRejected("{\"spec\": {\"model\": ", "body");
}

TEST_F(HttpServerTest, UnknownFieldIsRejectedByName) {
  Start();
  ExpectRejected(R"({"spec": {"model": "random:tiny", "lora": {"rank": 8}}})", "rank");
}

TEST_F(HttpServerTest, OutOfRangeValueIsRejectedByName) {
  Start();
  ExpectRejected(R"({"spec": {"model": "random:tiny", "lora": {"r": 0}}})", "spec.lora.r");
  ExpectRejected(R"({"spec": {"model": "random:tiny", "train": {"batch_size": -3}}})",
                 "spec.train.batch_size");
  ExpectRejected(R"({"spec": {"model": "random:tiny", "gpus": 1}})", "spec.gpus");
}

TEST_F(HttpServerTest, WrongTypeIsRejected) {
  Start();
  ExpectRejected(R"({"spec": {"model": "random:tiny", "lora": {"r": "eight"}}})", "r");
}

TEST_F(HttpServerTest, PathOutsideTheRootsIsRejected) {
  Start();
  ExpectRejected(R"({"spec": {"model": "random:tiny", "dataset": {"path": "/etc/passwd"}}})",
                 "spec.dataset.path");
  ExpectRejected(R"({"spec": {"model": "random:tiny", "output_dir": "/tmp/elsewhere"}})",
                 "spec.output_dir");
}

TEST_F(HttpServerTest, HugeBodyIsRejected) {
  Start();
  std::string huge = R"({"spec": {"model": "random:tiny", "labels": {"x": ")" +
                     std::string(200 * 1024, 'a') + "\"}}}";
  ExpectRejected(huge, "body");
}

TEST_F(HttpServerTest, JobLifecycleOverRest) {
  Start();
  const std::string body = R"({"spec": {"model": "random:tiny", "dataset": {"path": ")" +
                           (dir_ / "data" / "train.jsonl").string() +
                           R"("}, "labels": {"team": "nlp"}}, "idempotency_key": "k1"})";
  auto created = Post("/v1/jobs", body);
  ASSERT_TRUE(created);
  ASSERT_EQ(created->status, 200) << created->body;
  auto job = nlohmann::json::parse(created->body);
  const std::string id = job["id"];
  EXPECT_EQ(job["state"], "QUEUED");
  EXPECT_EQ(job["queue_position"], 1);
  EXPECT_EQ(nlohmann::json::parse(Post("/v1/jobs", body)->body)["id"], id);  // idempotent

  auto got = client_->Get(("/v1/jobs/" + id).c_str());
  ASSERT_TRUE(got);
  EXPECT_EQ(got->status, 200);
  EXPECT_EQ(nlohmann::json::parse(Post("/v1/jobs/" + id + ":pause", "")->body)["state"], "PAUSED");
  EXPECT_EQ(nlohmann::json::parse(Post("/v1/jobs/" + id + ":resume", "{}")->body)["state"],
            "QUEUED");
  auto cancelled = Post("/v1/jobs/" + id + ":cancel", R"({"reason": "test"})");
  EXPECT_EQ(nlohmann::json::parse(cancelled->body)["state"], "CANCELLED");
  auto again = Post("/v1/jobs/" + id + ":cancel", "");
  EXPECT_EQ(again->status, 409) << again->body;

  auto listed = nlohmann::json::parse(client_->Get("/v1/jobs?state=CANCELLED&label=team%3Dnlp")->body);
  ASSERT_EQ(listed["jobs"].size(), 1u);
  EXPECT_EQ(client_->Get("/v1/jobs?state=NOPE")->status, 400);
  EXPECT_EQ(client_->Get("/v1/jobs?page_size=x")->status, 400);

  auto events = nlohmann::json::parse(client_->Get(("/v1/jobs/" + id + "/events").c_str())->body);
  EXPECT_EQ(events["events"].size(), 4u);  // QUEUED, PAUSED, QUEUED, CANCELLED
  EXPECT_EQ(events["last_seq"], "4");      // int64 is a string in proto3 JSON

  // The job is terminal: the SSE stream replays everything and ends.
  auto sse = client_->Get(("/v1/jobs/" + id + ":watch?after_seq=1").c_str());
  ASSERT_TRUE(sse);
  EXPECT_EQ(sse->get_header_value("Content-Type"), "text/event-stream");
  EXPECT_EQ(sse->body.find("id: 1\n"), std::string::npos);
  EXPECT_NE(sse->body.find("id: 4\nevent: state\n"), std::string::npos) << sse->body;
  EXPECT_NE(sse->body.find("event: end"), std::string::npos);
}

TEST_F(HttpServerTest, UnknownJobIs404) {
  Start();
  EXPECT_EQ(client_->Get("/v1/jobs/job-nope")->status, 404);
  EXPECT_EQ(client_->Get("/v1/jobs/job-nope:watch")->status, 404);
  EXPECT_EQ(Post("/v1/jobs/job-nope:pause", "")->status, 404);
}

TEST_F(HttpServerTest, HealthReadinessAndMetrics) {
  Start();
  EXPECT_EQ(client_->Get("/healthz")->status, 200);
  EXPECT_EQ(client_->Get("/readyz")->status, 200);
  auto metrics = client_->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("rigtune_build_info{version="), std::string::npos);
  EXPECT_NE(metrics->body.find("rigtune_jobs{state=\"QUEUED\"}"), std::string::npos);
}

TEST_F(HttpServerTest, TokenIsRequiredWhenConfigured) {
  Start("s3cret");
  EXPECT_EQ(client_->Get("/v1/jobs")->status, 401);
  EXPECT_EQ(client_->Get("/metrics")->status, 401);
  EXPECT_EQ(client_->Get("/healthz")->status, 200);
  httplib::Headers wrong = {{"Authorization", "Bearer nope"}};
  EXPECT_EQ(client_->Get("/v1/jobs", wrong)->status, 401);
  httplib::Headers right = {{"Authorization", "Bearer s3cret"}};
  EXPECT_EQ(client_->Get("/v1/jobs", right)->status, 200);
}

}  // namespace
}  // namespace rigtune::server
