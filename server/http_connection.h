// The per-connection half of HttpServer (Boost.Beast); internal to
// http_server.cc and http_connection.cc.
#ifndef RIGTUNE_SERVER_HTTP_CONNECTION_H_
#define RIGTUNE_SERVER_HTTP_CONNECTION_H_

#include <atomic>
#include <memory>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/thread_pool.hpp>

#include "server/coordinator.h"
#include "server/http_server.h"
#include "server/rest_routes.h"
#include "server/stream_admission.h"

namespace rigtune::server::http_internal {

// What every connection of one HttpServer shares. Outlives the connections
// (see HttpServer::Impl).
struct ServerShared {
  ServerShared(Coordinator* coordinator, const TokenAuth* auth, const HttpOptions& options)
      : coordinator(coordinator),
        routes(coordinator, auth),
        admission(options.max_streams, options.max_streams_per_client),
        options(options),
        handlers(static_cast<size_t>(options.handler_threads)) {}

  Coordinator* coordinator;
  RestRoutes routes;
  StreamAdmission admission;
  const HttpOptions options;
  boost::asio::thread_pool handlers;  // runs RestRoutes::Handle and SSE reads
  std::atomic<int> connections{0};
};

// Serves an accepted socket until it closes: plain HTTP when `tls` is null,
// else HTTPS with that context (a plaintext request gets a 400 saying so).
void ServeAccepted(boost::asio::ip::tcp::socket socket, ServerShared& shared,
                   std::shared_ptr<boost::asio::ssl::context> tls);

}  // namespace rigtune::server::http_internal

#endif  // RIGTUNE_SERVER_HTTP_CONNECTION_H_
