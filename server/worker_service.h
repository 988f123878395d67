// WorkerServiceImpl: the gRPC front end the rigtune-worker ranks talk to.
// Thin: token check, then the Coordinator.
#ifndef RIGTUNE_SERVER_WORKER_SERVICE_H_
#define RIGTUNE_SERVER_WORKER_SERVICE_H_

#include "rigtune/v1/worker_service.grpc.pb.h"
#include "server/auth.h"
#include "server/coordinator.h"

namespace rigtune::server {

class WorkerServiceImpl final : public rigtune::v1::WorkerService::Service {
 public:
  WorkerServiceImpl(Coordinator* coordinator, const TokenAuth* auth)
      : coordinator_(coordinator), auth_(auth) {}

  grpc::Status Register(grpc::ServerContext* context, const rigtune::v1::RegisterRequest* request,
                        rigtune::v1::RegisterResponse* response) override;
  // Reports are applied as they arrive; the first rejected one ends the
  // stream with its status (e.g. FAILED_PRECONDITION for a stale attempt).
  grpc::Status StreamReports(grpc::ServerContext* context,
                             grpc::ServerReader<rigtune::v1::WorkerReport>* reader,
                             rigtune::v1::StreamReportsResponse* response) override;
  grpc::Status ReportCheckpoint(grpc::ServerContext* context,
                                const rigtune::v1::ReportCheckpointRequest* request,
                                rigtune::v1::ReportCheckpointResponse* response) override;
  grpc::Status GetControl(grpc::ServerContext* context,
                          const rigtune::v1::GetControlRequest* request,
                          rigtune::v1::GetControlResponse* response) override;
  grpc::Status Finish(grpc::ServerContext* context, const rigtune::v1::FinishRequest* request,
                      rigtune::v1::FinishResponse* response) override;

 private:
  Coordinator* coordinator_;
  const TokenAuth* auth_;
};

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_WORKER_SERVICE_H_
