// RestRoutes: the REST resources of rigtuned's HTTP port, free of any
// transport. The HTTP front end (http_server.cc) parses a request into a
// RestRequest, calls Handle() on a handler thread (it may touch SQLite) and
// writes the RestReply back; a :watch request comes back as a WatchStart
// that the front end turns into a Server-Sent Events stream (sse_stream.h).
//
//   POST /v1/jobs                      CreateJobRequest JSON -> Job
//   GET  /v1/jobs?page_size=&page_token=&state=&label=   -> ListJobsResponse
//   GET  /v1/jobs/{id}                 -> Job
//   POST /v1/jobs/{id}:cancel | :pause | :resume          -> Job
//   GET  /v1/jobs/{id}/events?after_seq=&page_size=      -> ListJobEventsResponse
//   GET  /v1/jobs/{id}/checkpoints     -> ListCheckpointsResponse
//   GET  /v1/jobs/{id}:watch?after_seq=  Server-Sent Events (see sse_stream.h)
//   GET  /metrics                      Prometheus text format
//   GET  /healthz, /readyz             liveness, readiness (no token needed)
//
// Bodies are proto3 JSON of the rigtune.v1 messages (field names as in the
// .proto). Unknown fields, bad JSON and invalid values get 400 with
// {"error": {"code", "status", "message"}} naming the field. With a token
// configured, /v1/ and /metrics need "Authorization: Bearer <token>" (the
// scheme in any case, RFC 7235).
#ifndef RIGTUNE_SERVER_REST_ROUTES_H_
#define RIGTUNE_SERVER_REST_ROUTES_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "server/auth.h"
#include "server/coordinator.h"

namespace rigtune::server {

struct RestRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query, as sent: /v1/jobs?state=RUNNING
  std::string authorization;
  std::optional<std::string> last_event_id;  // the SSE resume header, if sent
  std::string body;
};

// Where a :watch stream starts: events with seq > after_seq.
struct WatchStart {
  std::string job_id;
  int64_t after_seq = 0;
};

struct RestReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::optional<WatchStart> watch;  // set: stream events instead of `body`
};

// The reply for a failed call: the HTTP code for `status` and the JSON
// error body.
RestReply ErrorReply(const absl::Status& status);

class RestRoutes {
 public:
  RestRoutes(Coordinator* coordinator, const TokenAuth* auth)
      : coordinator_(coordinator), auth_(auth) {}

  // True for the routes cheap enough to answer on an I/O thread (no store
  // access, no token): /healthz and /readyz.
  static bool IsProbe(const std::string& target);

  // Thread-safe; may block on the store.
  RestReply Handle(const RestRequest& request);

 private:
  RestReply HandleJobs(const RestRequest& request, const std::string& path);
  RestReply Watch(const RestRequest& request, const std::string& id);

  Coordinator* coordinator_;
  const TokenAuth* auth_;
};

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_REST_ROUTES_H_
