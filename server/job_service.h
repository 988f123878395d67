// JobServiceImpl: the gRPC front end of the public JobService. Each method
// checks the bearer token and forwards to the Coordinator; no logic of its
// own.
#ifndef RIGTUNE_SERVER_JOB_SERVICE_H_
#define RIGTUNE_SERVER_JOB_SERVICE_H_

#include "rigtune/v1/job_service.grpc.pb.h"
#include "server/auth.h"
#include "server/coordinator.h"

namespace rigtune::server {

class JobServiceImpl final : public rigtune::v1::JobService::Service {
 public:
  JobServiceImpl(Coordinator* coordinator, const TokenAuth* auth)
      : coordinator_(coordinator), auth_(auth) {}

  grpc::Status CreateJob(grpc::ServerContext* context, const rigtune::v1::CreateJobRequest* request,
                         rigtune::v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const rigtune::v1::GetJobRequest* request,
                      rigtune::v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const rigtune::v1::ListJobsRequest* request,
                        rigtune::v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const rigtune::v1::CancelJobRequest* request,
                         rigtune::v1::Job* response) override;
  grpc::Status PauseJob(grpc::ServerContext* context, const rigtune::v1::PauseJobRequest* request,
                        rigtune::v1::Job* response) override;
  grpc::Status ResumeJob(grpc::ServerContext* context, const rigtune::v1::ResumeJobRequest* request,
                         rigtune::v1::Job* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const rigtune::v1::WatchJobRequest* request,
                        grpc::ServerWriter<rigtune::v1::JobEvent>* writer) override;
  grpc::Status ListJobEvents(grpc::ServerContext* context,
                             const rigtune::v1::ListJobEventsRequest* request,
                             rigtune::v1::ListJobEventsResponse* response) override;
  grpc::Status ListCheckpoints(grpc::ServerContext* context,
                               const rigtune::v1::ListCheckpointsRequest* request,
                               rigtune::v1::ListCheckpointsResponse* response) override;

 private:
  absl::Status Authorize(grpc::ServerContext* context) const;

  Coordinator* coordinator_;
  const TokenAuth* auth_;
};

// UNAUTHENTICATED unless the call's "authorization" metadata passes `auth`.
absl::Status AuthorizeCall(const TokenAuth& auth, grpc::ServerContext* context);

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_JOB_SERVICE_H_
