#include "server/http_server.h"

#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/strand.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/http_connection.h"

namespace rigtune::server {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

namespace {

absl::StatusOr<std::shared_ptr<ssl::context>> MakeSslContext(const TlsPem& pem) {
  try {
    auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
    context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                         ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                         ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
    context->use_certificate_chain(asio::buffer(pem.cert_chain));
    context->use_private_key(asio::buffer(pem.private_key), ssl::context::pem);
    if (!pem.client_ca.empty()) {
      context->add_certificate_authority(asio::buffer(pem.client_ca));
      context->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    }
    return context;
  } catch (const boost::system::system_error& e) {
    return absl::InvalidArgumentError(absl::StrCat("tls: ", e.what()));
  }
}

}  // namespace

// Members are destroyed bottom-up: the io_context (and with it every
// connection still queued in it) goes before `shared`, which connections
// point into. Stop() drains the handler pool first, so no handler holds a
// connection by then.
struct HttpServer::Impl {
  Impl(Coordinator* coordinator, const TokenAuth* auth, const HttpOptions& options)
      : shared(coordinator, auth, options), acceptor(io) {}

  // The SSL context for a new connection: rebuilt when TlsMaterial was
  // reloaded; on a (rare) build failure the previous one stays.
  std::shared_ptr<ssl::context> CurrentTls() {
    if (shared.options.tls == nullptr) return nullptr;
    absl::MutexLock lock(&tls_mu);
    const int64_t generation = shared.options.tls->generation();
    if (tls_context == nullptr || generation != tls_generation) {
      absl::StatusOr<std::shared_ptr<ssl::context>> context =
          MakeSslContext(*shared.options.tls->pem());
      if (context.ok()) tls_context = *std::move(context);
      tls_generation = generation;
    }
    return tls_context;
  }

  void Accept() {
    acceptor.async_accept(asio::make_strand(io), [this](boost::system::error_code ec,
                                                        tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      if (!ec) http_internal::ServeAccepted(std::move(socket), shared, CurrentTls());
      Accept();  // also after EMFILE and friends: the next accept may succeed
    });
  }

  http_internal::ServerShared shared;
  asio::io_context io;
  tcp::acceptor acceptor;
  std::vector<std::thread> threads;
  bool stopped = false;
  int port = 0;

  absl::Mutex tls_mu;
  std::shared_ptr<ssl::context> tls_context ABSL_GUARDED_BY(tls_mu);
  int64_t tls_generation ABSL_GUARDED_BY(tls_mu) = -1;
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(Coordinator* coordinator,
                                                               const TokenAuth* auth,
                                                               const HttpOptions& options) {
  const std::string& address = options.address;
  size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("http_listen: '", address, "' is not host:port"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  if (host == "localhost") host = "127.0.0.1";  // not ::1: where clients dial by default
  auto impl = std::make_unique<Impl>(coordinator, auth, options);
  if (options.tls != nullptr) {
    absl::StatusOr<std::shared_ptr<ssl::context>> context = MakeSslContext(*options.tls->pem());
    if (!context.ok()) return context.status();
  }
  boost::system::error_code ec;
  tcp::endpoint endpoint;
  asio::ip::address ip = asio::ip::make_address(host.empty() ? "0.0.0.0" : host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(ip, static_cast<uint16_t>(port));
  } else {  // a host name: its first address
    tcp::resolver resolver(impl->io);
    auto found = resolver.resolve(host, std::to_string(port), ec);
    if (ec || found.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("http_listen: cannot resolve '", host, "'", ec ? ": " + ec.message() : ""));
    }
    endpoint = found.begin()->endpoint();
  }
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(options.backlog, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("http_listen: cannot listen on ", address, ": ", ec.message()));
  }
  impl->port = impl->acceptor.local_endpoint().port();
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

int HttpServer::port() const { return impl_->port; }

void HttpServer::Start() {
  impl_->Accept();
  for (int i = 0; i < impl_->shared.options.io_threads; ++i) {
    impl_->threads.emplace_back([this] { impl_->io.run(); });
  }
}

void HttpServer::Stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  impl_->io.stop();
  for (std::thread& thread : impl_->threads) thread.join();
  impl_->shared.handlers.join();  // runs what was queued; replies only queue on the stopped io
  boost::system::error_code ignored;
  impl_->acceptor.close(ignored);
}

}  // namespace rigtune::server
