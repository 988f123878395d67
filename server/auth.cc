#include "server/auth.h"

#include "absl/strings/match.h"

namespace rigtune::server {

absl::Status TokenAuth::Check(absl::string_view authorization) const {
  if (token_.empty()) return absl::OkStatus();
  // RFC 7235: the scheme is case-insensitive ("bearer", "BEARER").
  constexpr absl::string_view kPrefix = "Bearer ";
  if (!absl::StartsWithIgnoreCase(authorization, kPrefix)) {
    return absl::UnauthenticatedError("authorization: missing \"Bearer <token>\"");
  }
  absl::string_view given = authorization.substr(kPrefix.size());
  unsigned char diff = given.size() == token_.size() ? 0 : 1;
  for (size_t i = 0; i < token_.size(); ++i) {
    diff |= static_cast<unsigned char>(token_[i] ^ (i < given.size() ? given[i] : 0));
  }
  if (diff != 0) return absl::UnauthenticatedError("authorization: wrong token");
  return absl::OkStatus();
}

bool IsLoopbackAddress(const std::string& address) {
  if (absl::StartsWith(address, "unix:")) return true;
  std::string host = address;
  if (absl::StartsWith(host, "[")) {
    host = host.substr(1, host.find(']') - 1);
  } else if (size_t colon = host.rfind(':'); colon != std::string::npos) {
    host = host.substr(0, colon);
  }
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

}  // namespace rigtune::server
