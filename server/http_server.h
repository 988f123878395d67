// HttpServer: rigtuned's one HTTP port (REST, SSE, /metrics, /healthz; the
// routes are in rest_routes.h), served asynchronously with Boost.Beast.
//
// Note [An HTTP front end that scales with connections]
// A connection costs a socket and a few buffers, not a thread: a couple of
// I/O threads run every read and write, and a small pool of handler threads
// runs the route handlers (they may wait on SQLite). /healthz and /readyz
// are answered on the I/O thread itself, so they stay fast even while a
// burst of submissions queues up for the handler pool. An SSE stream parks
// on a timer between batches and holds no thread at all. Every request must
// arrive whole within request_timeout (headers and body; a slow-header
// client is dropped), headers are capped at max_header_bytes (431), bodies
// at max_request_bytes (400 naming the body), connections at
// max_connections (503), streams per client address and in total (429/503,
// stream_admission.h). The listen backlog absorbs bursts of new connections.
//
// With `tls` set the port speaks HTTPS only; a plaintext request gets a 400
// that says to use https://, and new connections pick up certificates
// reloaded by TlsMaterial::Reload().
#ifndef RIGTUNE_SERVER_HTTP_SERVER_H_
#define RIGTUNE_SERVER_HTTP_SERVER_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/auth.h"
#include "server/coordinator.h"
#include "server/tls_material.h"

namespace rigtune::server {

struct HttpOptions {
  std::string address = "127.0.0.1:8080";  // host:port; port 0 picks a free one
  size_t max_request_bytes = 1 << 20;
  size_t max_header_bytes = 16 << 10;
  absl::Duration request_timeout = absl::Seconds(10);  // also the keep-alive idle limit
  int max_connections = 4096;
  int max_streams = 1024;
  int max_streams_per_client = 64;
  int backlog = 4096;  // the kernel caps it at net.core.somaxconn
  int io_threads = 2;
  int handler_threads = 8;
  const TlsMaterial* tls = nullptr;  // set: HTTPS; must outlive the server
};

class HttpServer {
 public:
  // Binds and listens on options.address. Serves nothing until Start().
  // UNAVAILABLE when the address cannot be bound, INVALID_ARGUMENT when it
  // is not host:port.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Create(Coordinator* coordinator,
                                                            const TokenAuth* auth,
                                                            const HttpOptions& options);
  ~HttpServer();

  int port() const;
  void Start();
  // Closes the port and every connection (open streams end without their
  // "end" frame; clients resume with Last-Event-ID). Idempotent.
  void Stop();

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_HTTP_SERVER_H_
