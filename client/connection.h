// Connection: the CLI's gRPC channel to rigtuned, with the bearer token and
// a per-call deadline, and the exit codes every subcommand shares.
#ifndef RIGTUNE_CLIENT_CONNECTION_H_
#define RIGTUNE_CLIENT_CONNECTION_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "rigtune/v1/job_service.grpc.pb.h"

namespace rigtune::client {

// Exit codes scripts can rely on (also in docs/api.md).
enum ExitCode : int {
  kExitOk = 0,               // done; for watch: the job SUCCEEDED
  kExitError = 1,            // any other failure
  kExitUsage = 2,            // bad flags or job file
  kExitUnavailable = 3,      // rigtuned not reachable / not serving
  kExitNotFound = 4,         // no such job
  kExitInvalid = 5,          // the server rejected the request (INVALID_ARGUMENT)
  kExitConflict = 6,         // not allowed in the job's state, or key reused
  kExitUnauthenticated = 7,  // missing or wrong token
  kExitJobFailed = 10,       // watch: the job FAILED
  kExitJobCancelled = 11,    // watch: the job was CANCELLED
  kExitJobPaused = 12,       // watch: the job PAUSED
};

// Maps a failed call to its exit code and prints "rigtune: <message>".
int ReportError(const grpc::Status& status);

struct ConnectionOptions {
  std::string server = "127.0.0.1:50051";  // host:port; https://host:port turns on TLS
  std::string token;                       // empty: none
  double timeout_seconds = 30;
  bool tls = false;
  std::string ca_file;    // PEM CA of the server's certificate; empty: the system's CAs
  std::string cert_file;  // PEM client certificate and key, for mutual TLS
  std::string key_file;
};

class Connection {
 public:
  // Reads the TLS files (INVALID_ARGUMENT names an unreadable one) and makes
  // the channel; nothing is dialled until the first call.
  static absl::StatusOr<std::unique_ptr<Connection>> Create(ConnectionOptions options);

  rigtune::v1::JobService::Stub& jobs() { return *jobs_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }

  // A context with the token and, unless `streaming`, the deadline.
  std::unique_ptr<grpc::ClientContext> Context(bool streaming = false) const;

 private:
  Connection(ConnectionOptions options, std::shared_ptr<grpc::ChannelCredentials> credentials);

  ConnectionOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<rigtune::v1::JobService::Stub> jobs_;
};

}  // namespace rigtune::client

#endif  // RIGTUNE_CLIENT_CONNECTION_H_
