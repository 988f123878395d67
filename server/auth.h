// TokenAuth: the bearer-token check shared by the gRPC front ends (metadata
// "authorization: Bearer <token>") and the HTTP front end (Authorization
// header). With no token configured every request passes; rigtuned refuses
// to listen beyond loopback without one (see config.h).
#ifndef RIGTUNE_SERVER_AUTH_H_
#define RIGTUNE_SERVER_AUTH_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace rigtune::server {

class TokenAuth {
 public:
  explicit TokenAuth(std::string token) : token_(std::move(token)) {}

  bool required() const { return !token_.empty(); }

  // UNAUTHENTICATED unless no token is configured or `authorization` is
  // "Bearer <token>" (the scheme in any case, RFC 7235; the token compared
  // exactly, in constant time).
  absl::Status Check(absl::string_view authorization) const;

 private:
  std::string token_;
};

// True for 127.0.0.0/8, ::1, localhost and unix: addresses. `address` is
// host:port, [v6]:port or unix:path.
bool IsLoopbackAddress(const std::string& address);

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_AUTH_H_
