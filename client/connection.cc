#include "client/connection.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace rigtune::client {

int ReportError(const grpc::Status& status) {
  std::fprintf(stderr, "rigtune: %s\n", status.error_message().c_str());
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return kExitUnavailable;
    case grpc::StatusCode::NOT_FOUND:
      return kExitNotFound;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
      return kExitInvalid;
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::ABORTED:
      return kExitConflict;
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return kExitUnauthenticated;
    default:
      return kExitError;
  }
}

namespace {

absl::Status ReadFile(const char* flag, const std::string& path, std::string* contents) {
  if (path.empty()) return absl::OkStatus();
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  if (in) text << in.rdbuf();
  if (!in || text.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read ", path));
  }
  *contents = text.str();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Connection>> Connection::Create(ConnectionOptions options) {
  absl::string_view server = options.server;
  if (absl::ConsumePrefix(&server, "https://")) options.tls = true;
  absl::ConsumePrefix(&server, "http://");
  absl::ConsumeSuffix(&server, "/");
  options.server = std::string(server);
  if (!options.tls) {
    if (!options.ca_file.empty() || !options.cert_file.empty()) {
      return absl::InvalidArgumentError(
          "--ca-file, --cert-file: need TLS; add --tls or use an https:// server address");
    }
    return std::unique_ptr<Connection>(
        new Connection(std::move(options), grpc::InsecureChannelCredentials()));
  }
  if (options.cert_file.empty() != options.key_file.empty()) {
    return absl::InvalidArgumentError("--cert-file, --key-file: give both or neither");
  }
  grpc::SslCredentialsOptions ssl;
  for (absl::Status s : {ReadFile("--ca-file", options.ca_file, &ssl.pem_root_certs),
                         ReadFile("--cert-file", options.cert_file, &ssl.pem_cert_chain),
                         ReadFile("--key-file", options.key_file, &ssl.pem_private_key)}) {
    if (!s.ok()) return s;
  }
  return std::unique_ptr<Connection>(
      new Connection(std::move(options), grpc::SslCredentials(ssl)));
}

Connection::Connection(ConnectionOptions options,
                       std::shared_ptr<grpc::ChannelCredentials> credentials)
    : options_(std::move(options)) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  channel_ = grpc::CreateCustomChannel(options_.server, credentials, args);
  jobs_ = rigtune::v1::JobService::NewStub(channel_);
}

std::unique_ptr<grpc::ClientContext> Connection::Context(bool streaming) const {
  auto context = std::make_unique<grpc::ClientContext>();
  if (!options_.token.empty()) context->AddMetadata("authorization", "Bearer " + options_.token);
  if (!streaming) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(
                              static_cast<int64_t>(options_.timeout_seconds * 1000)));
  }
  return context;
}

}  // namespace rigtune::client
