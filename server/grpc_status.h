// Status conversions for the front ends: absl::Status to grpc::Status (same
// codes, same message) and to the HTTP status a REST client expects.
#ifndef RIGTUNE_SERVER_GRPC_STATUS_H_
#define RIGTUNE_SERVER_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace rigtune::server {

grpc::Status ToGrpcStatus(const absl::Status& status);

// INVALID_ARGUMENT -> 400, NOT_FOUND -> 404, ALREADY_EXISTS -> 409, ...
int HttpStatusFor(absl::StatusCode code);

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_GRPC_STATUS_H_
