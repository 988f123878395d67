#include "server/job_service.h"

#include <utility>

#include "server/grpc_status.h"

namespace rigtune::server {

namespace {

// Copies a StatusOr's value into `response` and converts its status.
template <typename T>
grpc::Status Reply(absl::StatusOr<T> result, T* response) {
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

}  // namespace

absl::Status AuthorizeCall(const TokenAuth& auth, grpc::ServerContext* context) {
  if (!auth.required()) return absl::OkStatus();
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return auth.Check("");
  return auth.Check(absl::string_view(it->second.data(), it->second.size()));
}

absl::Status JobServiceImpl::Authorize(grpc::ServerContext* context) const {
  return AuthorizeCall(*auth_, context);
}

grpc::Status JobServiceImpl::CreateJob(grpc::ServerContext* context,
                                       const rigtune::v1::CreateJobRequest* request,
                                       rigtune::v1::Job* response) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpcStatus(s);
  return Reply(coordinator_->CreateJob(*request), response);
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext* context,
                                    const rigtune::v1::GetJobRequest* request,
                                    rigtune::v1::Job* response) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpcStatus(s);
  return Reply(coordinator_->GetJob(request->id()), response);
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext* context,
                                      const rigtune::v1::ListJobsRequest* request,
                                      rigtune::v1::ListJobsResponse* response) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpcStatus(s);
  return Reply(coordinator_->ListJobs(*request), response);
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* context,
                                       const rigtune::v1::CancelJobRequest* request,
                                       rigtune::v1::Job* response) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpcStatus(s);
  return Reply(coordinator_->CancelJob(request->id(), request->reason()), response);
}

grpc::Status JobServiceImpl::PauseJob(grpc::ServerContext* context,
                                      const rigtune::v1::PauseJobRequest* request,
                                      rigtune::v1::Job* response) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpcStatus(s);
  return Reply(coordinator_->PauseJob(request->id()), response);
}

grpc::Status JobServiceImpl::ResumeJob(grpc::ServerContext* context,
                                       const rigtune::v1::ResumeJobRequest* request,
                                       rigtune::v1::Job* response) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpcStatus(s);
  return Reply(coordinator_->ResumeJob(request->id()), response);
}

grpc::Status JobServiceImpl::WatchJob(grpc::ServerContext* context,
                                      const rigtune::v1::WatchJobRequest* request,
                                      grpc::ServerWriter<rigtune::v1::JobEvent>* writer) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpcStatus(s);
  return ToGrpcStatus(coordinator_->WatchJob(
      *request, [writer](const rigtune::v1::JobEvent& event) { return writer->Write(event); },
      [context] { return context->IsCancelled(); }));
}

grpc::Status JobServiceImpl::ListJobEvents(grpc::ServerContext* context,
                                           const rigtune::v1::ListJobEventsRequest* request,
                                           rigtune::v1::ListJobEventsResponse* response) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpcStatus(s);
  return Reply(coordinator_->ListJobEvents(*request), response);
}

grpc::Status JobServiceImpl::ListCheckpoints(grpc::ServerContext* context,
                                             const rigtune::v1::ListCheckpointsRequest* request,
                                             rigtune::v1::ListCheckpointsResponse* response) {
  if (absl::Status s = Authorize(context); !s.ok()) return ToGrpcStatus(s);
  return Reply(coordinator_->ListCheckpoints(request->id()), response);
}

}  // namespace rigtune::server
