#include "client/connection.h"

#include <chrono>
#include <cstdio>

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

Connection::Connection(const ConnectionOptions& options) : options_(options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  channel_ = grpc::CreateCustomChannel(options.server, grpc::InsecureChannelCredentials(), args);
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
