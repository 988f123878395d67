#include "server/http_connection.h"

#include <array>
#include <chrono>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "absl/strings/str_cat.h"
#include "server/sse_events.h"

namespace rigtune::server::http_internal {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

// An idle stream is checked for new events this often (a cheap counter
// read; the store is read only when it moved).
constexpr auto kStreamPoll = std::chrono::milliseconds(100);
constexpr auto kStreamKeepAlive = std::chrono::seconds(15);
// A stream write that cannot finish in this long (the client stopped
// reading) drops the connection.
constexpr auto kStreamWriteTimeout = std::chrono::seconds(30);
constexpr auto kLinger = std::chrono::seconds(2);

enum class Mode { kServe, kRefuseBusy, kRefusePlaintext };

// Counts a connection from accept to close, TLS handshake included.
class ConnectionSlot {
 public:
  explicit ConnectionSlot(ServerShared& shared) : shared_(&shared) { ++shared_->connections; }
  ConnectionSlot(ConnectionSlot&& other) noexcept : shared_(std::exchange(other.shared_, nullptr)) {}
  ConnectionSlot& operator=(ConnectionSlot&&) = delete;
  ~ConnectionSlot() {
    if (shared_ != nullptr) --shared_->connections;
  }

 private:
  ServerShared* shared_;
};

// Note [Streams hold no thread]
// A connection is a chain of asynchronous operations on its strand: read a
// request (bounded by request_timeout), hand it to the handler pool, write
// the reply, read the next. A :watch request turns the connection into an
// SSE stream: fetch a batch of events on the handler pool, write it as one
// chunk, and when nothing is new wait on a timer that checks the
// coordinator's event generation. A read stays pending the whole time so a
// client that goes away frees its stream slot at once. Nothing here ever
// blocks an I/O thread, so a thousand watchers cost a thousand sockets and
// no threads.
template <class Stream>
class Connection : public std::enable_shared_from_this<Connection<Stream>> {
 public:
  Connection(Stream stream, ServerShared& shared, ConnectionSlot slot,
             std::shared_ptr<ssl::context> tls, Mode mode, std::string client)
      : stream_(std::move(stream)),
        shared_(shared),
        slot_(std::move(slot)),
        tls_(std::move(tls)),
        mode_(mode),
        client_(std::move(client)),
        wake_(stream_.get_executor()) {}

  void Start(beast::flat_buffer buffer) {
    buffer_ = std::move(buffer);
    if (mode_ == Mode::kRefuseBusy) {
      return Respond(ErrorReply(absl::UnavailableError(absl::StrCat(
                         "the server has ", shared_.options.max_connections,
                         " open connections (http_max_connections); retry later"))),
                     /*close=*/true);
    }
    ReadRequest();
  }

 private:
  beast::tcp_stream& Socket() { return beast::get_lowest_layer(stream_); }

  std::shared_ptr<Connection> Self() { return this->shared_from_this(); }

  void ReadRequest() {
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(shared_.options.max_header_bytes));
    parser_->body_limit(shared_.options.max_request_bytes);
    // One deadline for the whole request: headers, "100 Continue", body.
    Socket().expires_after(absl::ToChronoMilliseconds(shared_.options.request_timeout));
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = Self()](beast::error_code ec, size_t) { self->OnHeader(ec); });
  }

  // Clients such as curl announce a large body with "Expect: 100-continue"
  // and wait for the go-ahead before sending it.
  void OnHeader(beast::error_code ec) {
    if (ec) return OnRead(ec);
    auto read_body = [self = Self()](beast::error_code ec, size_t) {
      if (ec) return self->OnRead(ec);
      http::async_read(self->stream_, self->buffer_, *self->parser_,
                       [self](beast::error_code ec, size_t) { self->OnRead(ec); });
    };
    if (beast::iequals(parser_->get()[http::field::expect], "100-continue") &&
        mode_ == Mode::kServe) {
      static constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
      return asio::async_write(stream_, asio::buffer(kContinue, sizeof(kContinue) - 1),
                               std::move(read_body));
    }
    read_body(beast::error_code(), 0);
  }

  void OnRead(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      return Respond(ErrorReply(absl::InvalidArgumentError(
                         absl::StrCat("body: larger than the ", shared_.options.max_request_bytes,
                                      "-byte request limit"))),
                     /*close=*/true);
    }
    if (ec == http::error::header_limit) {
      RestReply reply = ErrorReply(absl::InvalidArgumentError(absl::StrCat(
          "headers: larger than the ", shared_.options.max_header_bytes, "-byte limit")));
      reply.status = 431;
      return Respond(std::move(reply), /*close=*/true);
    }
    if (ec && ec.category() == http::make_error_code(http::error::bad_target).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message) {
      return Respond(ErrorReply(absl::InvalidArgumentError(
                         absl::StrCat("request: malformed HTTP (", ec.message(), ")"))),
                     /*close=*/true);
    }
    if (ec) return Close();  // end of stream, timeout, reset
    http::request<http::string_body>& message = parser_->get();
    keep_alive_ = message.keep_alive();
    version_ = message.version();
    if (mode_ == Mode::kRefusePlaintext) {
      return Respond(ErrorReply(absl::InvalidArgumentError(
                         "this port speaks HTTPS only: use https:// (see docs/operations.md)")),
                     /*close=*/true);
    }
    RestRequest request;
    request.method = std::string(message.method_string());
    request.target = std::string(message.target());
    request.authorization = std::string(message[http::field::authorization]);
    if (auto it = message.find("Last-Event-ID"); it != message.end()) {
      request.last_event_id = std::string(it->value());
    }
    request.body = std::move(message.body());
    if (RestRoutes::IsProbe(request.target)) return OnReply(shared_.routes.Handle(request));
    asio::post(shared_.handlers, [self = Self(), request = std::move(request)] {
      RestReply reply = self->shared_.routes.Handle(request);
      asio::post(self->stream_.get_executor(),
                 [self, reply = std::move(reply)]() mutable { self->OnReply(std::move(reply)); });
    });
  }

  void OnReply(RestReply reply) {
    if (reply.watch) return StartStream(*reply.watch);
    Respond(std::move(reply), !keep_alive_);
  }

  void Respond(RestReply reply, bool close) {
    auto response = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(reply.status), version_);
    response->set(http::field::server, "rigtuned");
    response->set(http::field::content_type, reply.content_type);
    response->keep_alive(!close);
    response->body() = std::move(reply.body);
    response->prepare_payload();
    Socket().expires_after(absl::ToChronoMilliseconds(shared_.options.request_timeout));
    http::async_write(stream_, *response,
                      [self = Self(), response, close](beast::error_code ec, size_t) {
                        if (ec) return;  // the peer went away; nothing to finish
                        if (close) return self->Close();
                        self->ReadRequest();
                      });
  }

  // Ends the connection politely: TLS close_notify, or a half-close and a
  // short drain so unread request bytes do not turn our reply into a reset.
  void Close() {
    Socket().expires_after(kLinger);
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
      beast::error_code ignored;
      Socket().socket().shutdown(tcp::socket::shutdown_send, ignored);
      Drain();
    } else {
      stream_.async_shutdown([self = Self()](beast::error_code) { self->Socket().close(); });
    }
  }

  void Drain() {
    stream_.async_read_some(asio::buffer(scratch_), [self = Self()](beast::error_code ec, size_t) {
      if (ec) return self->Socket().close();
      self->Drain();
    });
  }

  // ---- SSE ----

  void StartStream(const WatchStart& start) {
    absl::StatusOr<StreamTicket> ticket = shared_.admission.Admit(client_);
    if (!ticket.ok()) return Respond(ErrorReply(ticket.status()), !keep_alive_);
    ticket_ = *std::move(ticket);
    watch_ = start;
    stream_header_.emplace(http::status::ok, version_);
    stream_header_->set(http::field::server, "rigtuned");
    stream_header_->set(http::field::content_type, "text/event-stream");
    stream_header_->set(http::field::cache_control, "no-cache");
    stream_header_->chunked(true);
    stream_header_->keep_alive(false);  // the connection ends with the stream
    serializer_.emplace(*stream_header_);
    Socket().expires_never();
    WatchPeer();
    Socket().expires_after(kStreamWriteTimeout);  // the read is pending: writes only
    http::async_write_header(stream_, *serializer_,
                             [self = Self()](beast::error_code ec, size_t) {
                               if (ec) return self->EndStream();
                               self->last_write_ = std::chrono::steady_clock::now();
                               self->FetchEvents();
                             });
  }

  // Keeps a read pending for the life of the stream; it completes when the
  // client closes (stray bytes from the client are ignored).
  void WatchPeer() {
    stream_.async_read_some(asio::buffer(scratch_), [self = Self()](beast::error_code ec, size_t) {
      if (!ec) return self->WatchPeer();
      self->peer_gone_ = true;
      self->wake_.cancel();
    });
  }

  void FetchEvents() {
    if (peer_gone_) return EndStream();
    asio::post(shared_.handlers, [self = Self()] {
      absl::StatusOr<SseBatch> batch =
          NextSseBatch(*self->shared_.coordinator, self->watch_.job_id, self->watch_.after_seq);
      asio::post(self->stream_.get_executor(),
                 [self, batch = std::move(batch)]() mutable { self->OnBatch(std::move(batch)); });
    });
  }

  void OnBatch(absl::StatusOr<SseBatch> batch) {
    if (peer_gone_) return EndStream();
    if (!batch.ok()) {
      return WriteChunk(absl::StrCat("event: error\ndata: ", ErrorReply(batch.status()).body,
                                     "\n\n"),
                        /*last=*/true);
    }
    watch_.after_seq = batch->after_seq;
    generation_ = batch->generation;
    if (!batch->frames.empty()) return WriteChunk(std::move(batch->frames), batch->finished);
    WaitForEvents();
  }

  void WaitForEvents() {
    wake_.expires_after(kStreamPoll);
    wake_.async_wait([self = Self()](beast::error_code) {
      if (self->peer_gone_) return self->EndStream();
      if (self->shared_.coordinator->event_generation() != self->generation_) {
        return self->FetchEvents();
      }
      if (std::chrono::steady_clock::now() - self->last_write_ >= kStreamKeepAlive) {
        return self->WriteChunk(kSseKeepAlive, /*last=*/false);
      }
      self->WaitForEvents();
    });
  }

  void WriteChunk(std::string text, bool last) {
    chunk_ = std::move(text);
    Socket().expires_after(kStreamWriteTimeout);
    auto done = [self = Self(), last](beast::error_code ec, size_t) {
      if (ec || last) return self->EndStream();
      self->last_write_ = std::chrono::steady_clock::now();
      self->FetchEvents();
    };
    if (last) {
      asio::async_write(stream_,
                        beast::buffers_cat(http::make_chunk(asio::buffer(chunk_)),
                                           http::make_chunk_last()),
                        std::move(done));
    } else {
      asio::async_write(stream_, http::make_chunk(asio::buffer(chunk_)), std::move(done));
    }
  }

  void EndStream() {
    ticket_.Reset();
    wake_.cancel();
    Socket().close();  // ends the pending peer read; the connection then goes away
  }

  Stream stream_;
  ServerShared& shared_;
  ConnectionSlot slot_;
  std::shared_ptr<ssl::context> tls_;  // keeps the SSL context of this connection alive
  const Mode mode_;
  const std::string client_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool keep_alive_ = false;
  unsigned version_ = 11;
  std::array<char, 512> scratch_{};

  // The SSE stream, when this connection is one.
  WatchStart watch_;
  StreamTicket ticket_;
  std::optional<http::response<http::empty_body>> stream_header_;
  std::optional<http::response_serializer<http::empty_body>> serializer_;
  asio::steady_timer wake_;
  int64_t generation_ = 0;
  std::chrono::steady_clock::time_point last_write_;
  bool peer_gone_ = false;
  std::string chunk_;
};

std::string ClientAddress(const tcp::socket& socket) {
  beast::error_code ec;
  tcp::endpoint peer = socket.remote_endpoint(ec);
  return ec ? std::string("unknown") : peer.address().to_string();
}

template <class Stream>
void Serve(Stream stream, ServerShared& shared, ConnectionSlot slot,
           std::shared_ptr<ssl::context> tls, Mode mode, std::string client,
           beast::flat_buffer buffer) {
  std::make_shared<Connection<Stream>>(std::move(stream), shared, std::move(slot), std::move(tls),
                                       mode, std::move(client))
      ->Start(std::move(buffer));
}

// Looks at the first bytes of a connection on an HTTPS port: a TLS
// handshake goes on to TLS, anything else gets the plaintext refusal.
struct TlsDetector : std::enable_shared_from_this<TlsDetector> {
  TlsDetector(tcp::socket socket, ServerShared& shared, ConnectionSlot slot,
              std::shared_ptr<ssl::context> tls, bool busy)
      : stream(std::move(socket)),
        shared(shared),
        slot(std::move(slot)),
        tls(std::move(tls)),
        busy(busy),
        client(ClientAddress(stream.socket())) {}

  void Run() {
    stream.expires_after(absl::ToChronoMilliseconds(shared.options.request_timeout));
    beast::async_detect_ssl(stream, buffer,
                            [self = shared_from_this()](beast::error_code ec, bool is_tls) {
                              if (ec) return;
                              if (is_tls) return self->Handshake();
                              Serve(std::move(self->stream), self->shared, std::move(self->slot),
                                    nullptr, Mode::kRefusePlaintext, self->client,
                                    std::move(self->buffer));
                            });
  }

  void Handshake() {
    auto secure = std::make_shared<beast::ssl_stream<beast::tcp_stream>>(std::move(stream), *tls);
    secure->async_handshake(
        ssl::stream_base::server, buffer.data(),
        [self = shared_from_this(), secure](beast::error_code ec, size_t used) {
          if (ec) return;  // a wrong CA, no client certificate, not TLS after all
          self->buffer.consume(used);
          Serve(std::move(*secure), self->shared, std::move(self->slot), self->tls,
                self->busy ? Mode::kRefuseBusy : Mode::kServe, self->client,
                std::move(self->buffer));
        });
  }

  beast::tcp_stream stream;
  ServerShared& shared;
  ConnectionSlot slot;
  std::shared_ptr<ssl::context> tls;
  const bool busy;
  const std::string client;
  beast::flat_buffer buffer;
};

}  // namespace

void ServeAccepted(tcp::socket socket, ServerShared& shared, std::shared_ptr<ssl::context> tls) {
  const bool busy = shared.connections.load() >= shared.options.max_connections;
  ConnectionSlot slot(shared);
  if (tls != nullptr) {
    std::make_shared<TlsDetector>(std::move(socket), shared, std::move(slot), std::move(tls), busy)
        ->Run();
    return;
  }
  std::string client = ClientAddress(socket);
  Serve(beast::tcp_stream(std::move(socket)), shared, std::move(slot), nullptr,
        busy ? Mode::kRefuseBusy : Mode::kServe, std::move(client), beast::flat_buffer());
}

}  // namespace rigtune::server::http_internal
