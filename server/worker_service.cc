#include "server/worker_service.h"

#include "server/grpc_status.h"
#include "server/job_service.h"

namespace rigtune::server {

grpc::Status WorkerServiceImpl::Register(grpc::ServerContext* context,
                                         const rigtune::v1::RegisterRequest* request,
                                         rigtune::v1::RegisterResponse* response) {
  if (absl::Status s = AuthorizeCall(*auth_, context); !s.ok()) return ToGrpcStatus(s);
  absl::StatusOr<rigtune::v1::RegisterResponse> result = coordinator_->RegisterWorker(*request);
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *result;
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::StreamReports(
    grpc::ServerContext* context, grpc::ServerReader<rigtune::v1::WorkerReport>* reader,
    rigtune::v1::StreamReportsResponse* response) {
  if (absl::Status s = AuthorizeCall(*auth_, context); !s.ok()) return ToGrpcStatus(s);
  rigtune::v1::WorkerReport report;
  int64_t accepted = 0;
  while (reader->Read(&report)) {
    if (absl::Status s = coordinator_->HandleReport(report); !s.ok()) {
      response->set_accepted(accepted);
      return ToGrpcStatus(s);
    }
    ++accepted;
  }
  response->set_accepted(accepted);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::ReportCheckpoint(
    grpc::ServerContext* context, const rigtune::v1::ReportCheckpointRequest* request,
    rigtune::v1::ReportCheckpointResponse* response) {
  if (absl::Status s = AuthorizeCall(*auth_, context); !s.ok()) return ToGrpcStatus(s);
  rigtune::v1::WorkerReport report;
  *report.mutable_worker() = request->worker();
  *report.mutable_checkpoint() = request->checkpoint();
  return ToGrpcStatus(coordinator_->HandleReport(report));
}

grpc::Status WorkerServiceImpl::GetControl(grpc::ServerContext* context,
                                           const rigtune::v1::GetControlRequest* request,
                                           rigtune::v1::GetControlResponse* response) {
  if (absl::Status s = AuthorizeCall(*auth_, context); !s.ok()) return ToGrpcStatus(s);
  *response = coordinator_->GetControl(*request);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::Finish(grpc::ServerContext* context,
                                       const rigtune::v1::FinishRequest* request,
                                       rigtune::v1::FinishResponse* response) {
  if (absl::Status s = AuthorizeCall(*auth_, context); !s.ok()) return ToGrpcStatus(s);
  return ToGrpcStatus(coordinator_->FinishWorker(*request));
}

}  // namespace rigtune::server
