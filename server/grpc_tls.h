// ReloadingSslServerCredentials: TLS for rigtuned's gRPC port that picks up
// new certificates without a restart.
//
// Note [gRPC certificates reload on SIGHUP]
// grpc::SslServerCredentials copies its PEM strings once. Under it, gRPC's
// SSL credentials can instead ask a callback for the certificate config at
// every handshake; this class answers from TlsMaterial and hands gRPC a new
// config only when TlsMaterial's generation moved (a good SIGHUP reload), so
// connections made after the reload see the new certificate and open ones
// keep theirs. With a client CA, clients must present a certificate it
// signed (mutual TLS).
//
//   builder.AddListeningPort(address, std::make_shared<ReloadingSslServerCredentials>(tls));
#ifndef RIGTUNE_SERVER_GRPC_TLS_H_
#define RIGTUNE_SERVER_GRPC_TLS_H_

#include <grpc/grpc_security.h>

#include <atomic>
#include <memory>
#include <string>

#include "grpcpp/security/server_credentials.h"
#include "server/tls_material.h"

namespace rigtune::server {

class ReloadingSslServerCredentials final : public grpc::ServerCredentials {
 public:
  // `tls` must outlive the server.
  explicit ReloadingSslServerCredentials(const TlsMaterial* tls) : tls_(tls) {}

  void SetAuthMetadataProcessor(
      const std::shared_ptr<grpc::AuthMetadataProcessor>& /*processor*/) override {}

 private:
  int AddPortToServer(const std::string& address, grpc_server* server) override;
  static grpc_ssl_certificate_config_reload_status Fetch(
      void* self, grpc_ssl_server_certificate_config** config);

  const TlsMaterial* tls_;
  std::atomic<int64_t> served_generation_{-1};
};

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_GRPC_TLS_H_
