#include "server/tls_material.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace rigtune::server {

namespace {

absl::StatusOr<std::string> ReadPemFile(const char* setting, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(setting, ": cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  if (text.str().find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(setting, ": ", path, " is not PEM"));
  }
  return text.str();
}

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Deleter {
  void operator()(X509* x509) const { X509_free(x509); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};

std::unique_ptr<BIO, BioDeleter> MemoryBio(const std::string& pem) {
  return std::unique_ptr<BIO, BioDeleter>(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

}  // namespace

absl::StatusOr<TlsPem> ReadTlsFiles(const TlsFiles& files) {
  TlsPem pem;
  absl::StatusOr<std::string> cert = ReadPemFile("tls_cert_file", files.cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPemFile("tls_key_file", files.key_file);
  if (!key.ok()) return key.status();
  pem.cert_chain = *std::move(cert);
  pem.private_key = *std::move(key);
  std::unique_ptr<X509, X509Deleter> leaf(
      PEM_read_bio_X509(MemoryBio(pem.cert_chain).get(), nullptr, nullptr, nullptr));
  if (leaf == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("tls_cert_file: ", files.cert_file, " holds no readable certificate"));
  }
  std::unique_ptr<EVP_PKEY, KeyDeleter> private_key(
      PEM_read_bio_PrivateKey(MemoryBio(pem.private_key).get(), nullptr, nullptr, nullptr));
  if (private_key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tls_key_file: ", files.key_file, " holds no readable (unencrypted) private key"));
  }
  if (X509_check_private_key(leaf.get(), private_key.get()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("tls_key_file: ", files.key_file,
                                                   " does not match ", files.cert_file));
  }
  if (!files.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPemFile("tls_client_ca_file", files.client_ca_file);
    if (!ca.ok()) return ca.status();
    pem.client_ca = *std::move(ca);
    if (std::unique_ptr<X509, X509Deleter>(
            PEM_read_bio_X509(MemoryBio(pem.client_ca).get(), nullptr, nullptr, nullptr)) ==
        nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tls_client_ca_file: ", files.client_ca_file, " holds no readable certificate"));
    }
  }
  return pem;
}

absl::StatusOr<std::unique_ptr<TlsMaterial>> TlsMaterial::Load(const TlsFiles& files) {
  absl::StatusOr<TlsPem> pem = ReadTlsFiles(files);
  if (!pem.ok()) return pem.status();
  return std::unique_ptr<TlsMaterial>(new TlsMaterial(files, *std::move(pem)));
}

TlsMaterial::TlsMaterial(TlsFiles files, TlsPem pem)
    : files_(std::move(files)), pem_(std::make_shared<const TlsPem>(std::move(pem))) {}

absl::Status TlsMaterial::Reload() {
  absl::StatusOr<TlsPem> pem = ReadTlsFiles(files_);
  if (!pem.ok()) return pem.status();
  absl::MutexLock lock(&mu_);
  pem_ = std::make_shared<const TlsPem>(*std::move(pem));
  ++generation_;
  return absl::OkStatus();
}

std::shared_ptr<const TlsPem> TlsMaterial::pem() const {
  absl::MutexLock lock(&mu_);
  return pem_;
}

int64_t TlsMaterial::generation() const {
  absl::MutexLock lock(&mu_);
  return generation_;
}

}  // namespace rigtune::server
