// The REST front end: validation at the door, the routes, SSE, auth.
#include "server/http_server.h"

#include "tests/server/http_fixture.h"

namespace rigtune::server {
namespace {

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

TEST_F(HttpServerTest, BearerSchemeIsCaseInsensitive) {
  Start("s3cret");
  for (const char* scheme : {"bearer", "BEARER", "bEaReR"}) {
    httplib::Headers headers = {{"Authorization", std::string(scheme) + " s3cret"}};
    EXPECT_EQ(client_->Get("/v1/jobs", headers)->status, 200) << scheme;
  }
  httplib::Headers wrong_case_token = {{"Authorization", "bearer S3CRET"}};
  EXPECT_EQ(client_->Get("/v1/jobs", wrong_case_token)->status, 401);
}

}  // namespace
}  // namespace rigtune::server
