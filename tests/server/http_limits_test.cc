// The HTTP front end under pressure: open streams and slow clients must not
// starve short requests; stream caps answer 429/503; oversized headers get
// 431; a watch's resume position is checked like after_seq.
#include <chrono>
#include <thread>
#include <vector>

#include "tests/server/http_fixture.h"
#include "tests/server/raw_http.h"

namespace rigtune::server {
namespace {

using rigtune::testing::RawHttpConnection;
using std::chrono::milliseconds;

constexpr milliseconds kPatience(10000);  // generous: a bound, never a measurement

// Opens an SSE watch on `job` and waits for its response header.
RawHttpConnection OpenWatch(int port, const std::string& job) {
  RawHttpConnection watch;
  EXPECT_TRUE(watch.Connect(port));
  EXPECT_TRUE(watch.Send("GET /v1/jobs/" + job + ":watch HTTP/1.1\r\nHost: t\r\n\r\n"));
  EXPECT_TRUE(watch.ReadUntil("\r\n\r\n", kPatience)) << watch.received();
  return watch;
}

int StatusOf(const RawHttpConnection& connection) {
  const std::string& text = connection.received();
  return text.size() > 12 ? std::stoi(text.substr(9, 3)) : 0;
}

TEST_F(HttpServerTest, OpenStreamsDoNotStarveShortRequests) {
  http_options_.handler_threads = 2;
  http_options_.io_threads = 1;
  http_options_.max_streams_per_client = 64;
  Start();
  const std::string job = CreateJob();
  ASSERT_FALSE(job.empty());
  std::vector<RawHttpConnection> watches;
  for (int i = 0; i < 20; ++i) {  // ten times the handler threads
    watches.push_back(OpenWatch(http_->port(), job));
    ASSERT_EQ(StatusOf(watches.back()), 200) << watches.back().received();
  }
  for (int i = 0; i < 5; ++i) {
    auto health = client_->Get("/healthz");
    ASSERT_TRUE(health) << "no answer with 20 streams open";
    EXPECT_EQ(health->status, 200);
    auto list = client_->Get("/v1/jobs");
    ASSERT_TRUE(list);
    EXPECT_EQ(list->status, 200);
    ASSERT_TRUE(client_->Get("/metrics"));
  }
  // Every stream still delivers: cancelling the job ends all of them.
  ASSERT_EQ(Post("/v1/jobs/" + job + ":cancel", "")->status, 200);
  for (RawHttpConnection& watch : watches) {
    EXPECT_TRUE(watch.ReadUntil("event: end", kPatience)) << watch.received();
  }
}

TEST_F(HttpServerTest, SlowHeaderClientsDoNotBlockAndAreDropped) {
  http_options_.request_timeout = absl::Milliseconds(500);
  Start("s3cret");
  std::vector<RawHttpConnection> slow(30);
  for (RawHttpConnection& client : slow) {
    ASSERT_TRUE(client.Connect(http_->port()));
    ASSERT_TRUE(client.Send("GET /v1/jobs HTTP/1.1\r\nHo"));  // and never the rest
  }
  auto health = client_->Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  httplib::Headers token = {{"Authorization", "Bearer s3cret"}};
  auto list = client_->Get("/v1/jobs", token);
  ASSERT_TRUE(list);
  EXPECT_EQ(list->status, 200);
  for (RawHttpConnection& client : slow) {
    EXPECT_TRUE(client.WaitClosed(kPatience)) << "a slow client kept its connection";
  }
}

TEST_F(HttpServerTest, StreamsOverThePerClientCapGet429) {
  http_options_.max_streams_per_client = 2;
  Start();
  const std::string job = CreateJob();
  RawHttpConnection first = OpenWatch(http_->port(), job);
  RawHttpConnection second = OpenWatch(http_->port(), job);
  RawHttpConnection third = OpenWatch(http_->port(), job);
  EXPECT_EQ(StatusOf(first), 200);
  EXPECT_EQ(StatusOf(second), 200);
  EXPECT_EQ(StatusOf(third), 429) << third.received();
  EXPECT_TRUE(third.ReadUntil("http_max_streams_per_client", kPatience)) << third.received();
  // Closing a stream frees its slot.
  first.Close();
  bool admitted = false;
  for (int attempt = 0; attempt < 100 && !admitted; ++attempt) {
    admitted = StatusOf(OpenWatch(http_->port(), job)) == 200;
    if (!admitted) std::this_thread::sleep_for(milliseconds(50));
  }
  EXPECT_TRUE(admitted);
}

TEST_F(HttpServerTest, StreamsOverTheTotalCapGet503) {
  http_options_.max_streams = 1;
  Start();
  const std::string job = CreateJob();
  RawHttpConnection first = OpenWatch(http_->port(), job);
  RawHttpConnection second = OpenWatch(http_->port(), job);
  EXPECT_EQ(StatusOf(first), 200);
  EXPECT_EQ(StatusOf(second), 503) << second.received();
  EXPECT_EQ(client_->Get("/healthz")->status, 200);
}

TEST_F(HttpServerTest, OversizedHeadersGet431) {
  http_options_.max_header_bytes = 4096;
  Start();
  httplib::Headers big = {{"X-Filler", std::string(8192, 'x')}};
  auto res = client_->Get("/healthz", big);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 431);
  EXPECT_NE(res->body.find("headers"), std::string::npos) << res->body;
}

TEST_F(HttpServerTest, ExpectContinueGetsTheGoAheadBeforeTheBody) {
  Start();
  const std::string body = R"({"spec": {"model": "random:tiny", "dataset": {"path": ")" +
                           (dir_ / "data" / "train.jsonl").string() + R"("}}})";
  RawHttpConnection client;
  ASSERT_TRUE(client.Connect(http_->port()));
  ASSERT_TRUE(client.Send("POST /v1/jobs HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                          "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n"));
  ASSERT_TRUE(client.ReadUntil("HTTP/1.1 100 Continue\r\n\r\n", kPatience)) << client.received();
  ASSERT_TRUE(client.Send(body));
  ASSERT_TRUE(client.ReadUntil("\"QUEUED\"", kPatience)) << client.received();
  EXPECT_NE(client.received().find("HTTP/1.1 200 OK"), std::string::npos) << client.received();
}

TEST_F(HttpServerTest, LastEventIdIsCheckedLikeAfterSeq) {
  Start();
  const std::string job = CreateJob();
  ASSERT_EQ(Post("/v1/jobs/" + job + ":cancel", "")->status, 200);  // events 1, 2; terminal
  const std::string watch = "/v1/jobs/" + job + ":watch";
  for (const std::string bad : {"abc", "-1", "1.5", ""}) {
    auto by_header = client_->Get(watch.c_str(), {{"Last-Event-ID", bad}});
    ASSERT_TRUE(by_header);
    EXPECT_EQ(by_header->status, 400) << bad;
    EXPECT_NE(by_header->body.find("Last-Event-ID"), std::string::npos) << by_header->body;
    auto by_query = client_->Get((watch + "?after_seq=" + bad).c_str());
    ASSERT_TRUE(by_query);
    EXPECT_EQ(by_query->status, 400) << bad;
    EXPECT_NE(by_query->body.find("after_seq"), std::string::npos) << by_query->body;
  }
  // Past the job's last event: the same 400 either way.
  auto past_header = client_->Get(watch.c_str(), {{"Last-Event-ID", "3"}});
  auto past_query = client_->Get((watch + "?after_seq=3").c_str());
  EXPECT_EQ(past_header->status, 400);
  EXPECT_EQ(past_query->status, 400);
  EXPECT_NE(past_header->body.find("OUT_OF_RANGE"), std::string::npos) << past_header->body;
  // A valid position resumes after it.
  auto resumed = client_->Get(watch.c_str(), {{"Last-Event-ID", "1"}});
  ASSERT_EQ(resumed->status, 200);
  EXPECT_EQ(resumed->body.find("id: 1\n"), std::string::npos) << resumed->body;
  EXPECT_NE(resumed->body.find("id: 2\n"), std::string::npos) << resumed->body;
}

}  // namespace
}  // namespace rigtune::server
