// TlsMaterial: the daemon's certificate, key and optional client CA, read
// from the files named by tls_cert_file, tls_key_file and tls_client_ca_file
// and shared by the gRPC port (grpc_tls.h) and the HTTPS port
// (http_server.h). Reload() (on SIGHUP) reads the files again; on any error
// the old material stays in use, so a half-copied certificate never takes
// the daemon down.
//
//   ASSIGN_OR_RETURN(auto tls, TlsMaterial::Load({"/etc/rigtune/tls.crt",
//                                                 "/etc/rigtune/tls.key", ""}));
//   ... SIGHUP ...
//   if (absl::Status s = tls->Reload(); !s.ok()) LOG(s);  // still serving the old one
//
// Thread-safe.
#ifndef RIGTUNE_SERVER_TLS_MATERIAL_H_
#define RIGTUNE_SERVER_TLS_MATERIAL_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace rigtune::server {

struct TlsFiles {
  std::string cert_file;       // PEM certificate chain, leaf first
  std::string key_file;        // PEM private key of the leaf
  std::string client_ca_file;  // PEM CA bundle; set: clients must present a certificate it signed
};

struct TlsPem {
  std::string cert_chain;
  std::string private_key;
  std::string client_ca;  // empty: no client certificates asked for
};

// Reads and checks the files: each parses as PEM and the key matches the
// certificate. INVALID_ARGUMENT names the setting and the file.
absl::StatusOr<TlsPem> ReadTlsFiles(const TlsFiles& files);

class TlsMaterial {
 public:
  static absl::StatusOr<std::unique_ptr<TlsMaterial>> Load(const TlsFiles& files);

  absl::Status Reload();

  // The current material and its generation (bumped by each good Reload()).
  std::shared_ptr<const TlsPem> pem() const;
  int64_t generation() const;
  bool mutual() const { return !files_.client_ca_file.empty(); }

 private:
  TlsMaterial(TlsFiles files, TlsPem pem);

  const TlsFiles files_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const TlsPem> pem_ ABSL_GUARDED_BY(mu_);
  int64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_TLS_MATERIAL_H_
