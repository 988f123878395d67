// HttpServer: rigtuned's one HTTP port (cpp-httplib).
//
//   POST /v1/jobs                      CreateJobRequest JSON -> Job
//   GET  /v1/jobs?page_size=&page_token=&state=&label=   -> ListJobsResponse
//   GET  /v1/jobs/{id}                 -> Job
//   POST /v1/jobs/{id}:cancel | :pause | :resume          -> Job
//   GET  /v1/jobs/{id}/events?after_seq=&page_size=      -> ListJobEventsResponse
//   GET  /v1/jobs/{id}/checkpoints     -> ListCheckpointsResponse
//   GET  /v1/jobs/{id}:watch?after_seq=  Server-Sent Events, one JobEvent per
//                                      event ("id:" is its seq, so a
//                                      reconnecting client's Last-Event-ID resumes it)
//   GET  /metrics                      Prometheus text format
//   GET  /healthz, /readyz             liveness, readiness
//
// Bodies are proto3 JSON of the rigtune.v1 messages (field names as in the
// .proto). Unknown fields, bad JSON, bodies over the size limit and invalid
// values get 400 with {"error": {"code", "status", "message"}} naming the
// field. With a token configured, /v1/ and /metrics need
// "Authorization: Bearer <token>".
#ifndef RIGTUNE_SERVER_HTTP_SERVER_H_
#define RIGTUNE_SERVER_HTTP_SERVER_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "server/auth.h"
#include "server/coordinator.h"

namespace httplib {
class Server;
}

namespace rigtune::server {

class HttpServer {
 public:
  // Binds `address` (host:port; port 0 picks a free one). Serves nothing
  // until Start().
  static absl::StatusOr<std::unique_ptr<HttpServer>> Create(Coordinator* coordinator,
                                                            const TokenAuth* auth,
                                                            const std::string& address,
                                                            size_t max_request_bytes);
  ~HttpServer();

  int port() const { return port_; }
  void Start();
  void Stop();

 private:
  HttpServer(Coordinator* coordinator, const TokenAuth* auth, size_t max_request_bytes);
  void Routes();

  Coordinator* coordinator_;
  const TokenAuth* auth_;
  size_t max_request_bytes_;
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  std::thread thread_;
};

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_HTTP_SERVER_H_
