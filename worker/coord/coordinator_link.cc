#include "worker/coord/coordinator_link.h"

#include <unistd.h>

#include <cstdlib>
#include <deque>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "rigtune/v1/worker_service.grpc.pb.h"

namespace rigtune::worker {

namespace {

namespace v1 = rigtune::v1;

constexpr size_t kMaxQueued = 10000;  // reports beyond this are dropped (oldest first)
constexpr absl::Duration kControlPeriod = absl::Milliseconds(500);

int EnvInt(const char* name, int fallback) {
  const char* value = std::getenv(name);
  int parsed = 0;
  return value != nullptr && absl::SimpleAtoi(value, &parsed) ? parsed : fallback;
}

absl::Status FromGrpc(const grpc::Status& status, const std::string& what) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(what, ": ", status.error_message()));
}

}  // namespace

LinkIdentity LinkIdentityFromEnv() {
  LinkIdentity identity;
  if (const char* job = std::getenv("RIGTUNE_JOB_ID")) identity.job_id = job;
  identity.rank = EnvInt("RANK", 0);
  identity.world_size = EnvInt("WORLD_SIZE", 1);
  identity.attempt = EnvInt("RIGTUNE_ATTEMPT", 0);
  return identity;
}

class CoordinatorLink::Impl {
 public:
  Impl(std::shared_ptr<grpc::Channel> channel, const LinkIdentity& identity, std::string token)
      : service_(v1::WorkerService::NewStub(channel)), token_(std::move(token)) {
    worker_.set_job_id(identity.job_id);
    worker_.set_rank(identity.rank);
    worker_.set_attempt(identity.attempt);
    world_size_ = identity.world_size;
  }

  ~Impl() { StopThread(); }

  void Prepare(grpc::ClientContext& context, absl::Duration timeout) const {
    if (!token_.empty()) context.AddMetadata("authorization", "Bearer " + token_);
    context.set_deadline(std::chrono::system_clock::now() +
                         absl::ToChronoMilliseconds(timeout));
  }

  absl::Status Register() {
    v1::RegisterRequest request;
    *request.mutable_worker() = worker_;
    request.set_world_size(world_size_);
    request.set_pid(getpid());
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    request.set_hostname(host);
    absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (true) {
      grpc::ClientContext context;
      Prepare(context, absl::Seconds(5));
      v1::RegisterResponse response;
      grpc::Status status = service_->Register(&context, request, &response);
      if (status.ok()) return absl::OkStatus();
      if (status.error_code() != grpc::StatusCode::UNAVAILABLE || absl::Now() > deadline) {
        return FromGrpc(status, "register with the coordinator");
      }
      absl::SleepFor(absl::Milliseconds(200));
    }
  }

  void StartThread() {
    thread_ = std::thread([this] { Loop(); });
  }

  void StopThread() {
    {
      absl::MutexLock lock(&mu_);
      if (!thread_.joinable()) return;
      closing_ = true;
    }
    thread_.join();
  }

  void Enqueue(v1::WorkerReport report) {
    *report.mutable_worker() = worker_;
    absl::MutexLock lock(&mu_);
    if (queue_.size() >= kMaxQueued) queue_.pop_front();
    queue_.push_back(std::move(report));
  }

  // Waits until the thread has written everything queued so far.
  void Flush() {
    absl::MutexLock lock(&mu_);
    auto drained = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return (queue_.empty() && !writing_) || !thread_.joinable();
    };
    mu_.AwaitWithTimeout(absl::Condition(&drained), absl::Seconds(5));
  }

  absl::Status SendCheckpoint(const train::CheckpointInfo& checkpoint) {
    Flush();
    v1::ReportCheckpointRequest request;
    *request.mutable_worker() = worker_;
    request.mutable_checkpoint()->set_step(checkpoint.step);
    request.mutable_checkpoint()->set_path(checkpoint.path);
    request.mutable_checkpoint()->set_loss(checkpoint.loss);
    grpc::Status status;
    for (int attempt = 0; attempt < 3; ++attempt) {
      grpc::ClientContext context;
      Prepare(context, absl::Seconds(5));
      v1::ReportCheckpointResponse response;
      status = service_->ReportCheckpoint(&context, request, &response);
      if (status.error_code() != grpc::StatusCode::UNAVAILABLE) break;
      absl::SleepFor(absl::Milliseconds(200));
    }
    if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
      RequestStop(status.error_message());
    }
    return FromGrpc(status, "report the checkpoint");
  }

  bool stop_requested() const {
    absl::MutexLock lock(&mu_);
    return stop_requested_;
  }
  std::string stop_reason() const {
    absl::MutexLock lock(&mu_);
    return stop_reason_;
  }

  absl::Status Finish(const absl::StatusOr<train::RunResult>& result) {
    StopThread();  // drains the queue and closes the stream
    v1::FinishRequest request;
    *request.mutable_worker() = worker_;
    request.set_ok(result.ok());
    if (result.ok()) {
      request.mutable_result()->set_adapter_path(result->adapter_path);
      request.mutable_result()->set_tokens_trained(result->tokens_trained);
      request.mutable_result()->set_steps(result->steps);
      request.mutable_result()->set_final_loss(result->final_loss);
      request.set_stopped_early(result->stopped_early);
    } else {
      request.set_error_message(result.status().ToString());
    }
    grpc::ClientContext context;
    Prepare(context, absl::Seconds(10));
    v1::FinishResponse response;
    return FromGrpc(service_->Finish(&context, request, &response), "report the outcome");
  }

 private:
  struct Stream {
    grpc::ClientContext context;
    v1::StreamReportsResponse response;
    std::unique_ptr<grpc::ClientWriter<v1::WorkerReport>> writer;
  };

  void OpenStream() {
    stream_ = std::make_unique<Stream>();
    if (!token_.empty()) stream_->context.AddMetadata("authorization", "Bearer " + token_);
    stream_->writer = service_->StreamReports(&stream_->context, &stream_->response);
  }

  // Ends the stream; a rejection (stale attempt) turns into a stop request.
  void CloseStream() {
    if (!stream_) return;
    stream_->writer->WritesDone();
    grpc::Status status = stream_->writer->Finish();
    if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
      RequestStop(status.error_message());
    }
    stream_.reset();
  }

  void RequestStop(const std::string& reason) {
    absl::MutexLock lock(&mu_);
    if (!stop_requested_) stop_reason_ = reason;
    stop_requested_ = true;
  }

  void PollControl() {
    v1::GetControlRequest request;
    *request.mutable_worker() = worker_;
    grpc::ClientContext context;
    Prepare(context, absl::Seconds(5));
    v1::GetControlResponse response;
    if (service_->GetControl(&context, request, &response).ok() &&
        response.action() == v1::GetControlResponse::STOP) {
      RequestStop(response.reason());
    }
  }

  void Loop() {
    absl::Time next_poll = absl::Now();
    while (true) {
      std::deque<v1::WorkerReport> batch;
      bool closing;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return closing_ || !queue_.empty();
        };
        mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(100));
        batch.swap(queue_);
        closing = closing_;
        writing_ = !batch.empty();
      }
      for (const v1::WorkerReport& report : batch) {
        if (!stream_) OpenStream();
        if (!stream_->writer->Write(report)) {
          CloseStream();  // broken: the next report opens a fresh one
        }
      }
      {
        absl::MutexLock lock(&mu_);
        writing_ = false;
      }
      if (closing) break;
      if (absl::Now() >= next_poll) {
        PollControl();
        next_poll = absl::Now() + kControlPeriod;
      }
    }
    CloseStream();
  }

  std::unique_ptr<v1::WorkerService::Stub> service_;
  const std::string token_;
  v1::WorkerIdentity worker_;
  int world_size_ = 1;
  std::unique_ptr<Stream> stream_;  // used by the thread only
  std::thread thread_;

  mutable absl::Mutex mu_;
  std::deque<v1::WorkerReport> queue_ ABSL_GUARDED_BY(mu_);
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;  // the thread holds a batch
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;
  std::string stop_reason_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<CoordinatorLink>> CoordinatorLink::Connect(
    const std::string& address, const LinkIdentity& identity, const std::string& token) {
  if (identity.job_id.empty()) {
    return absl::InvalidArgumentError("job id: required with a coordinator (--job-id)");
  }
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  auto impl = std::make_unique<Impl>(channel, identity, token);
  if (absl::Status s = impl->Register(); !s.ok()) return s;
  impl->StartThread();
  return std::unique_ptr<CoordinatorLink>(new CoordinatorLink(std::move(impl)));
}

CoordinatorLink::CoordinatorLink(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CoordinatorLink::~CoordinatorLink() = default;

void CoordinatorLink::ReportStep(const train::StepMetrics& m) {
  v1::WorkerReport report;
  v1::StepMetrics* out = report.mutable_metrics();
  out->set_step(m.step);
  out->set_total_steps(m.total_steps);
  out->set_epoch(m.epoch);
  out->set_loss(m.loss);
  out->set_learning_rate(m.learning_rate);
  out->set_grad_norm(m.grad_norm);
  out->set_tokens(m.tokens);
  out->set_tokens_per_second(m.tokens_per_second);
  out->set_step_seconds(m.step_seconds);
  out->set_gpu_memory_peak_bytes(m.gpu_memory_peak_bytes);
  out->set_gpu_memory_reserved_bytes(m.gpu_memory_reserved_bytes);
  impl_->Enqueue(std::move(report));
}

void CoordinatorLink::ReportLog(const std::string& line) {
  v1::WorkerReport report;
  report.mutable_log()->set_text(line);
  impl_->Enqueue(std::move(report));
}

void CoordinatorLink::ReportValidation(const train::ValidationMetrics& v) {
  v1::WorkerReport report;
  v1::ValidationMetrics* out = report.mutable_validation();
  out->set_step(v.step);
  out->set_loss(v.loss);
  out->set_perplexity(v.perplexity);
  out->set_tokens(v.tokens);
  impl_->Enqueue(std::move(report));
}

absl::Status CoordinatorLink::ReportCheckpoint(const train::CheckpointInfo& checkpoint) {
  return impl_->SendCheckpoint(checkpoint);
}

bool CoordinatorLink::StopRequested() const { return impl_->stop_requested(); }
std::string CoordinatorLink::stop_reason() const { return impl_->stop_reason(); }

absl::Status CoordinatorLink::Finish(const absl::StatusOr<train::RunResult>& result) {
  return impl_->Finish(result);
}

}  // namespace rigtune::worker
