// RawHttpConnection: a blocking TCP client for tests that need what an HTTP
// library hides: a request sent a few bytes at a time, a stream left open,
// a peer that closes. Every wait is bounded by a deadline.
#ifndef RIGTUNE_TESTS_SERVER_RAW_HTTP_H_
#define RIGTUNE_TESTS_SERVER_RAW_HTTP_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

namespace rigtune::testing {

class RawHttpConnection {
 public:
  RawHttpConnection() = default;
  RawHttpConnection(const RawHttpConnection&) = delete;
  RawHttpConnection& operator=(const RawHttpConnection&) = delete;
  RawHttpConnection(RawHttpConnection&& other) noexcept
      : fd_(other.fd_), closed_(other.closed_), received_(std::move(other.received_)) {
    other.fd_ = -1;
  }
  ~RawHttpConnection() { Close(); }

  // Connects to 127.0.0.1:`port` from `source` (any 127.x.y.z: a test can
  // play several client addresses); false on failure (errno says why).
  bool Connect(int port, const char* source = "127.0.0.1") {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in from{};
    from.sin_family = AF_INET;
    if (fd_ < 0 || inet_pton(AF_INET, source, &from.sin_addr) != 1 ||
        bind(fd_, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0) {
      return false;
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return fd_ >= 0 && connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }

  bool Send(const std::string& bytes) {
    return send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(bytes.size());
  }

  // Reads until `text` has arrived (true), the peer closed or the deadline
  // passed (false).
  bool ReadUntil(const std::string& text, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (received_.find(text) == std::string::npos) {
      if (!ReadSome(deadline)) return false;
    }
    return true;
  }

  // True once the peer closed the connection (EOF or reset) before the
  // deadline.
  bool WaitClosed(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (ReadSome(deadline)) {
    }
    return closed_;
  }

  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  const std::string& received() const { return received_; }

 private:
  // One read; false at EOF, on error (closed_ set) or at the deadline.
  bool ReadSome(std::chrono::steady_clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd waiter{fd_, POLLIN, 0};
    if (poll(&waiter, 1, static_cast<int>(left.count())) <= 0) return false;
    char buffer[4096];
    const ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
    if (n <= 0) {
      closed_ = true;
      return false;
    }
    received_.append(buffer, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool closed_ = false;
  std::string received_;
};

}  // namespace rigtune::testing

#endif  // RIGTUNE_TESTS_SERVER_RAW_HTTP_H_
