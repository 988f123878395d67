#include "server/grpc_tls.h"

#include <grpc/grpc.h>

namespace rigtune::server {

int ReloadingSslServerCredentials::AddPortToServer(const std::string& address,
                                                   grpc_server* server) {
  grpc_ssl_server_credentials_options* options =
      grpc_ssl_server_credentials_create_options_using_config_fetcher(
          tls_->mutual() ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                         : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
          &ReloadingSslServerCredentials::Fetch, this);
  // Takes ownership of `options`.
  grpc_server_credentials* credentials = grpc_ssl_server_credentials_create_with_options(options);
  const int port = grpc_server_add_http2_port(server, address.c_str(), credentials);
  grpc_server_credentials_release(credentials);
  return port;
}

grpc_ssl_certificate_config_reload_status ReloadingSslServerCredentials::Fetch(
    void* self, grpc_ssl_server_certificate_config** config) {
  auto* credentials = static_cast<ReloadingSslServerCredentials*>(self);
  const int64_t generation = credentials->tls_->generation();
  if (credentials->served_generation_.exchange(generation) == generation) {
    return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
  }
  std::shared_ptr<const TlsPem> pem = credentials->tls_->pem();
  grpc_ssl_pem_key_cert_pair pair = {pem->private_key.c_str(), pem->cert_chain.c_str()};
  // gRPC copies the strings. It insists on root certificates even when it
  // asks clients for none; without a client CA it gets the server's own
  // chain, which it then never uses.
  *config = grpc_ssl_server_certificate_config_create(
      pem->client_ca.empty() ? pem->cert_chain.c_str() : pem->client_ca.c_str(), &pair, 1);
  return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
}

}  // namespace rigtune::server
