// The Coordinator with real worker processes: the fake-rigtune-worker (the
// real worker/main.cc over a stand-in engine) or tiny shell scripts.
#include "server/coordinator.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/server/test_dir.h"
#include "server/job_service.h"
#include "server/sse_events.h"
#include "server/worker_service.h"
#include "worker/train/checkpoint_manifest.h"

namespace rigtune::server {
namespace {

namespace fs = std::filesystem;
using rigtune::v1::Job;

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = rigtune::testing::FreshTestDir();
    rigtune::testing::ClearFakeWorkerKnobs();
    options_.state_dir = (dir_ / "state").string();
    options_.worker_binary = RIGTUNE_FAKE_WORKER;
    options_.grace_period = absl::Seconds(5);
    options_.tick = absl::Milliseconds(20);
  }

  void TearDown() override { Stop(); }

  void Start() {
    auto coordinator = Coordinator::Create(options_);
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = *std::move(coordinator);
    jobs_ = std::make_unique<JobServiceImpl>(coordinator_.get(), &auth_);
    workers_ = std::make_unique<WorkerServiceImpl>(coordinator_.get(), &auth_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(jobs_.get());
    builder.RegisterService(workers_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(port, 0);
    address_ = "127.0.0.1:" + std::to_string(port);
    ASSERT_TRUE(coordinator_->Start(address_).ok());
  }

  void Stop() {
    if (coordinator_) coordinator_->Shutdown();
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
    server_.reset();
    coordinator_.reset();
  }

  std::string Script(const std::string& body) {
    fs::path path = dir_ / "worker.sh";
    std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
    chmod(path.c_str(), 0755);
    return path.string();
  }

  Job Submit(int64_t max_steps, int64_t every_steps = 0, const std::string& key = "") {
    rigtune::v1::CreateJobRequest request;
    request.mutable_spec()->set_model("random:tiny");
    request.mutable_spec()->mutable_train()->set_max_steps(max_steps);
    if (every_steps > 0) request.mutable_spec()->mutable_checkpoint()->set_every_steps(every_steps);
    request.set_idempotency_key(key);
    auto job = coordinator_->CreateJob(request);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.value_or(Job());
  }

  Job WaitFor(const std::string& id, Job::State state, absl::Duration limit = absl::Seconds(20)) {
    absl::Time deadline = absl::Now() + limit;
    Job job;
    while (absl::Now() < deadline) {
      job = *coordinator_->GetJob(id);
      if (job.state() == state) return job;
      absl::SleepFor(absl::Milliseconds(20));
    }
    ADD_FAILURE() << "job " << id << " is " << Job::State_Name(job.state()) << ", wanted "
                  << Job::State_Name(state);
    return job;
  }

  std::vector<rigtune::v1::JobEvent> Events(const std::string& id) {
    rigtune::v1::ListJobEventsRequest request;
    request.set_id(id);
    request.set_page_size(5000);
    auto response = coordinator_->ListJobEvents(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return {response->events().begin(), response->events().end()};
  }

  fs::path dir_;
  CoordinatorOptions options_;
  TokenAuth auth_{""};
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<JobServiceImpl> jobs_;
  std::unique_ptr<WorkerServiceImpl> workers_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

TEST_F(CoordinatorTest, RunsAJobToSuccessWithMetricsAndCheckpoints) {
  Start();
  Job job = Submit(6, 2);
  Job done = WaitFor(job.id(), Job::SUCCEEDED);
  EXPECT_EQ(done.result().steps(), 6);
  EXPECT_EQ(done.result().tokens_trained(), 6 * 128);
  EXPECT_FALSE(done.result().adapter_path().empty());
  EXPECT_EQ(done.latest_metrics().step(), 6);
  EXPECT_EQ(done.attempt(), 1);
  auto events = Events(job.id());
  std::set<Job::State> states;
  int metrics = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i + 1));
    if (events[i].has_state_change()) states.insert(events[i].state_change().to());
    metrics += events[i].has_metrics();
  }
  EXPECT_EQ(metrics, 6);
  EXPECT_EQ(states, (std::set<Job::State>{Job::QUEUED, Job::STARTING, Job::RUNNING,
                                          Job::SUCCEEDED}));
  auto checkpoints = coordinator_->ListCheckpoints(job.id());
  ASSERT_TRUE(checkpoints.ok());
  EXPECT_EQ(checkpoints->checkpoints_size(), 3);
  EXPECT_TRUE(fs::exists(fs::path(done.log_dir()) / "rank0.log"));
  EXPECT_NE(coordinator_->metrics().Serialize().find("rigtune_job_train_loss{job=\"" + job.id()),
            std::string::npos);
}

TEST_F(CoordinatorTest, ValidationReportsAreStoredAndExported) {
  Start();
  rigtune::v1::CreateJobRequest request;
  request.mutable_spec()->set_model("random:tiny");
  request.mutable_spec()->mutable_train()->set_max_steps(4);
  request.mutable_spec()->mutable_train()->set_eval_every_steps(2);  // the fake reports 4 / step
  auto job = coordinator_->CreateJob(request);
  ASSERT_TRUE(job.ok()) << job.status();
  WaitFor(job->id(), Job::SUCCEEDED);
  std::vector<rigtune::v1::ValidationMetrics> validations;
  for (const auto& event : Events(job->id())) {
    if (event.has_validation()) validations.push_back(event.validation());
  }
  ASSERT_EQ(validations.size(), 2u);
  EXPECT_EQ(validations[0].step(), 2);
  EXPECT_DOUBLE_EQ(validations[0].loss(), 2.0);
  EXPECT_EQ(validations[1].step(), 4);
  EXPECT_EQ(validations[1].tokens(), 64);
  // Over SSE each is an "event: validation" frame.
  std::string frames;
  for (int64_t after = 0;;) {
    auto batch = NextSseBatch(*coordinator_, job->id(), after);
    ASSERT_TRUE(batch.ok()) << batch.status();
    frames += batch->frames;
    if (batch->finished || batch->frames.empty()) break;
    after = batch->after_seq;
  }
  int validation_frames = 0;
  for (size_t at = frames.find("\nevent: validation\n"); at != std::string::npos;
       at = frames.find("\nevent: validation\n", at + 1)) {
    ++validation_frames;
  }
  EXPECT_EQ(validation_frames, 2) << frames;
  EXPECT_NE(coordinator_->metrics().Serialize().find("rigtune_job_validation_loss{job=\"" +
                                                     job->id() + "\"} 1"),
            std::string::npos)
      << coordinator_->metrics().Serialize();
}

TEST_F(CoordinatorTest, WatchReplaysHistoryAndEndsAtTheTerminalState) {
  Start();
  Job job = Submit(4);
  std::vector<rigtune::v1::JobEvent> seen;
  rigtune::v1::WatchJobRequest request;
  request.set_id(job.id());
  absl::Status status = coordinator_->WatchJob(
      request, [&](const rigtune::v1::JobEvent& e) { seen.push_back(e); return true; }, nullptr);
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().state_change().to(), Job::SUCCEEDED);
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i].seq(), static_cast<int64_t>(i + 1));
  // Resuming after event 3 yields exactly the rest.
  std::vector<rigtune::v1::JobEvent> rest;
  request.set_after_seq(3);
  ASSERT_TRUE(coordinator_->WatchJob(
      request, [&](const rigtune::v1::JobEvent& e) { rest.push_back(e); return true; }, nullptr)
                  .ok());
  ASSERT_EQ(rest.size(), seen.size() - 3);
  EXPECT_EQ(rest.front().seq(), 4);
}

TEST_F(CoordinatorTest, CrashedWorkerIsRetriedFromItsLatestCheckpoint) {
  setenv("RIGTUNE_FAKE_CRASH_AT_STEP", "5", 1);
  Start();
  Job job = Submit(8, 2);
  Job done = WaitFor(job.id(), Job::SUCCEEDED);
  EXPECT_EQ(done.restarts(), 1);
  EXPECT_EQ(done.attempt(), 2);
  bool retried_from_checkpoint = false;
  for (const auto& event : Events(job.id())) {
    const std::string& reason = event.state_change().reason();
    if (reason.find("restart 1 of 2 from") != std::string::npos &&
        reason.find("checkpoints/step-4") != std::string::npos) {
      retried_from_checkpoint = true;
    }
  }
  EXPECT_TRUE(retried_from_checkpoint);
  EXPECT_NE(coordinator_->metrics().Serialize().find("rigtune_worker_restarts_total 1"),
            std::string::npos);
}

TEST_F(CoordinatorTest, FailsWithTheWorkersErrorAfterMaxRestarts) {
  setenv("RIGTUNE_FAKE_FAIL", "1", 1);
  options_.max_restarts = 1;
  Start();
  Job job = Submit(5);
  Job failed = WaitFor(job.id(), Job::FAILED);
  EXPECT_EQ(failed.restarts(), 1);
  EXPECT_EQ(failed.error().code(), "WORKER_FAILED");
  EXPECT_NE(failed.error().message().find("asked to fail at step 2"), std::string::npos)
      << failed.error().message();
}

TEST_F(CoordinatorTest, JobCountsAreReadFromTheStoreAtScrapeTime) {
  // No scheduling thread: nothing but the scrape itself can update the gauges.
  auto coordinator = Coordinator::Create(options_);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  rigtune::v1::CreateJobRequest request;
  request.mutable_spec()->set_model("random:tiny");
  auto job = (*coordinator)->CreateJob(request);
  ASSERT_TRUE(job.ok()) << job.status();
  std::string text = (*coordinator)->metrics().Serialize();
  EXPECT_NE(text.find("rigtune_jobs{state=\"QUEUED\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("rigtune_queue_depth 1"), std::string::npos) << text;
  ASSERT_TRUE((*coordinator)->CancelJob(job->id(), "test").ok());
  text = (*coordinator)->metrics().Serialize();
  EXPECT_NE(text.find("rigtune_jobs{state=\"QUEUED\"} 0"), std::string::npos) << text;
  EXPECT_NE(text.find("rigtune_jobs{state=\"CANCELLED\"} 1"), std::string::npos) << text;
}

TEST_F(CoordinatorTest, GpuGaugesComeFromNvml) {
  options_.nvml_library = RIGTUNE_FAKE_NVML;
  Start();
  EXPECT_NE(coordinator_->metrics().Serialize().find(
                "rigtune_gpu_memory_used_bytes{gpu=\"1\",name=\"Fake GPU B\"}"),
            std::string::npos);
}

TEST_F(CoordinatorTest, AdmissionTakesTheCardSizeFromNvml) {
  options_.nvml_library = RIGTUNE_FAKE_NVML;  // two 80 GiB cards
  options_.gpus = {0, 1};
  Start();
  rigtune::v1::CreateJobRequest request;
  rigtune::v1::JobSpec* spec = request.mutable_spec();
  spec->set_model("random:llama2-70b");
  spec->set_gpus(1);
  spec->mutable_train()->set_batch_size(4);
  spec->mutable_train()->set_context_length(2048);
  EXPECT_TRUE(coordinator_->CreateJob(request).ok());  // ~58 GiB: fits an 80 GiB card
  spec->mutable_train()->set_batch_size(32);
  auto refused = coordinator_->CreateJob(request);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("80"), std::string::npos) << refused.status();
}

TEST_F(CoordinatorTest, DeterministicFailureIsNotRetriedAndNamesTheWorkersReason) {
  setenv("RIGTUNE_FAKE_FAIL", "bad_data", 1);
  options_.max_restarts = 2;
  Start();
  Job job = Submit(5);
  Job failed = WaitFor(job.id(), Job::FAILED);
  EXPECT_EQ(failed.restarts(), 0);
  EXPECT_EQ(failed.attempt(), 1);
  EXPECT_EQ(failed.error().code(), "INVALID_JOB");
  EXPECT_NE(failed.error().message().find("exited with status 2: dataset too small: 0 rows"),
            std::string::npos)
      << failed.error().message();
  EXPECT_NE(coordinator_->metrics().Serialize().find("rigtune_worker_restarts_total 0"),
            std::string::npos);
}

TEST_F(CoordinatorTest, ReasonOfAWorkerThatFailsBeforeConnectingIsInTheError) {
  options_.worker_args = {"--no-such-flag", "1"};
  Start();
  Job job = Submit(5);
  Job failed = WaitFor(job.id(), Job::FAILED);
  EXPECT_EQ(failed.restarts(), 0);
  EXPECT_NE(failed.error().message().find("status 2: unknown flag --no-such-flag"),
            std::string::npos)
      << failed.error().message();
}

TEST_F(CoordinatorTest, PauseCheckpointsAndResumeFinishesTheJob) {
  setenv("RIGTUNE_FAKE_STEP_MS", "100", 1);
  Start();
  Job job = Submit(30);
  WaitFor(job.id(), Job::RUNNING);
  absl::SleepFor(absl::Milliseconds(400));
  auto pausing = coordinator_->PauseJob(job.id());
  ASSERT_TRUE(pausing.ok()) << pausing.status();
  EXPECT_EQ(pausing->state(), Job::PAUSING);
  Job paused = WaitFor(job.id(), Job::PAUSED);
  ASSERT_FALSE(paused.resume_from().empty());
  setenv("RIGTUNE_FAKE_STEP_MS", "10", 1);
  ASSERT_TRUE(coordinator_->ResumeJob(job.id()).ok());
  Job done = WaitFor(job.id(), Job::SUCCEEDED);
  EXPECT_EQ(done.result().steps(), 30);
  EXPECT_EQ(done.restarts(), 0);
  EXPECT_EQ(done.attempt(), 2);
}

TEST_F(CoordinatorTest, CancelPauseResumeInQueuedAndPaused) {
  options_.cpu_slots = 0;  // nothing ever starts
  Start();
  Job a = Submit(5);
  EXPECT_EQ(a.queue_position(), 1);
  EXPECT_EQ(coordinator_->ResumeJob(a.id())->state(), Job::QUEUED);  // no change
  EXPECT_EQ(coordinator_->PauseJob(a.id())->state(), Job::PAUSED);
  EXPECT_EQ(coordinator_->PauseJob(a.id())->state(), Job::PAUSED);  // no change
  EXPECT_EQ(coordinator_->ResumeJob(a.id())->state(), Job::QUEUED);
  EXPECT_EQ(coordinator_->CancelJob(a.id(), "")->state(), Job::CANCELLED);
  Job b = Submit(5);
  ASSERT_TRUE(coordinator_->PauseJob(b.id()).ok());
  EXPECT_EQ(coordinator_->CancelJob(b.id(), "not needed")->state(), Job::CANCELLED);
  // Terminal: every control call is refused and nothing changes.
  for (const std::string& id : {a.id(), b.id()}) {
    EXPECT_EQ(coordinator_->CancelJob(id, "").status().code(),
              absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(coordinator_->PauseJob(id).status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(coordinator_->ResumeJob(id).status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(coordinator_->GetJob(id)->state(), Job::CANCELLED);
  }
}

TEST_F(CoordinatorTest, ControlWhileStartingPausingAndCancelling) {
  // This worker never registers (STARTING forever) and ignores SIGTERM, so
  // PAUSING and CANCELLING last until the SIGKILL after the grace period.
  options_.worker_binary = Script("trap '' TERM; while true; do sleep 0.05; done");
  options_.grace_period = absl::Seconds(2);
  Start();
  Job job = Submit(5);
  WaitFor(job.id(), Job::STARTING);
  EXPECT_EQ(coordinator_->ResumeJob(job.id())->state(), Job::STARTING);  // no change
  EXPECT_EQ(coordinator_->PauseJob(job.id())->state(), Job::PAUSING);
  EXPECT_EQ(coordinator_->PauseJob(job.id())->state(), Job::PAUSING);  // no change
  EXPECT_EQ(coordinator_->ResumeJob(job.id()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(coordinator_->CancelJob(job.id(), "")->state(), Job::CANCELLING);
  EXPECT_EQ(coordinator_->CancelJob(job.id(), "")->state(), Job::CANCELLING);  // no change
  EXPECT_EQ(coordinator_->PauseJob(job.id()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(coordinator_->ResumeJob(job.id()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  WaitFor(job.id(), Job::CANCELLED);

  Job second = Submit(5);
  WaitFor(second.id(), Job::STARTING);
  EXPECT_EQ(coordinator_->CancelJob(second.id(), "")->state(), Job::CANCELLING);
  WaitFor(second.id(), Job::CANCELLED);
}

TEST_F(CoordinatorTest, CancelWhileRunningStopsTheWorkers) {
  setenv("RIGTUNE_FAKE_STEP_MS", "100", 1);
  Start();
  Job job = Submit(1000);
  WaitFor(job.id(), Job::RUNNING);
  EXPECT_EQ(coordinator_->ResumeJob(job.id())->state(), Job::RUNNING);  // no change
  EXPECT_EQ(coordinator_->CancelJob(job.id(), "wrong data")->state(), Job::CANCELLING);
  Job cancelled = WaitFor(job.id(), Job::CANCELLED);
  EXPECT_TRUE(cancelled.has_end_time());
}

TEST_F(CoordinatorTest, ConcurrentCreatesWithRepeatedKeysMakeExactlyTheRightJobs) {
  options_.cpu_slots = 0;
  Start();
  auto channel = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
  auto client = rigtune::v1::JobService::NewStub(channel);
  constexpr int kCalls = 200;
  std::vector<std::string> ids(kCalls);
  std::vector<grpc::Status> statuses(kCalls);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCalls; ++i) {
    threads.emplace_back([&, i] {
      rigtune::v1::CreateJobRequest request;
      request.mutable_spec()->set_model("random:tiny");
      // Calls 100..199 repeat the keys of calls 0..99.
      request.set_idempotency_key("key-" + std::to_string(i % 100));
      grpc::ClientContext context;
      Job job;
      statuses[i] = client->CreateJob(&context, request, &job);
      ids[i] = job.id();
    });
  }
  for (auto& thread : threads) thread.join();
  for (int i = 0; i < kCalls; ++i) ASSERT_TRUE(statuses[i].ok()) << statuses[i].error_message();
  for (int i = 0; i < 100; ++i) EXPECT_EQ(ids[i], ids[i + 100]) << "key-" << i;
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 100u);
  rigtune::v1::ListJobsRequest list;
  list.set_page_size(1000);
  EXPECT_EQ(coordinator_->ListJobs(list)->jobs_size(), 100);
}

TEST_F(CoordinatorTest, ShutdownLeavesRunningJobsToTheNextStart) {
  setenv("RIGTUNE_FAKE_STEP_MS", "50", 1);
  Start();
  Job job = Submit(40, 5);
  WaitFor(job.id(), Job::RUNNING);
  absl::SleepFor(absl::Milliseconds(700));
  Stop();  // the worker checkpoints on its way out
  {
    auto store = JobStore::Open((dir_ / "state" / "rigtune.db").string());
    ASSERT_TRUE(store.ok());
    auto stored = (*store)->GetJob(job.id());
    EXPECT_EQ(stored->state(), Job::RUNNING);
    EXPECT_FALSE(stored->resume_from().empty());
  }
  setenv("RIGTUNE_FAKE_STEP_MS", "5", 1);
  Start();
  Job done = WaitFor(job.id(), Job::SUCCEEDED);
  EXPECT_EQ(done.result().steps(), 40);
  EXPECT_EQ(done.restarts(), 0);
  auto events = Events(job.id());
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i + 1));
  }
}

// A copy of checkpoint `from` as step-<step> beside it, as the worker would
// have written it (trainer_state.json and manifest made for that step).
std::string CopyCheckpoint(const std::string& from, int64_t step) {
  const fs::path to = fs::path(from).parent_path() / ("step-" + std::to_string(step));
  fs::copy(from, to, fs::copy_options::recursive);
  std::ofstream(to / train::kTrainerState) << "{\"step\": " << step << ", \"loss\": 0.5}";
  std::ofstream(to / train::kManifest)
      << *train::MakeManifest(to.string(), step,
                              {train::kAdapter, train::kAdapterConfig, train::kOptimizer,
                               train::kTrainerState});
  return to.string();
}

TEST_F(CoordinatorTest, StartAdoptsTheNewestVerifiedCheckpointLeftUnrecorded) {
  setenv("RIGTUNE_FAKE_STEP_MS", "50", 1);
  Start();
  Job job = Submit(60, 5);
  WaitFor(job.id(), Job::RUNNING);
  absl::SleepFor(absl::Milliseconds(700));
  Stop();
  std::string recorded;
  {
    auto store = JobStore::Open((dir_ / "state" / "rigtune.db").string());
    ASSERT_TRUE(store.ok());
    recorded = (*store)->GetJob(job.id())->resume_from();
  }
  ASSERT_FALSE(recorded.empty());
  const int64_t step = std::stoll(fs::path(recorded).filename().string().substr(5));
  // The daemon died after the worker wrote step+3 and step+4, before it
  // recorded them; step+4 was damaged on the way.
  const std::string adopted = CopyCheckpoint(recorded, step + 3);
  const std::string damaged = CopyCheckpoint(recorded, step + 4);
  std::ofstream(fs::path(damaged) / train::kAdapter) << "torn";
  setenv("RIGTUNE_FAKE_STEP_MS", "5", 1);
  Start();
  Job done = WaitFor(job.id(), Job::SUCCEEDED);
  EXPECT_EQ(done.result().steps(), 60);
  bool resumed = false;
  int64_t first_step_after = -1;
  for (const auto& event : Events(job.id())) {
    if (event.state_change().reason().find("resuming from " + adopted + " (step " +
                                           std::to_string(step + 3) + ", written but not") !=
        std::string::npos) {
      resumed = true;
    }
    if (resumed && event.has_metrics() && first_step_after < 0) {
      first_step_after = event.metrics().step();
    }
  }
  EXPECT_TRUE(resumed);
  EXPECT_EQ(first_step_after, step + 4);  // nothing trained twice
  auto checkpoints = coordinator_->ListCheckpoints(job.id());
  ASSERT_TRUE(checkpoints.ok());
  bool listed = false;
  for (const auto& c : checkpoints->checkpoints()) listed |= c.path() == adopted;
  EXPECT_TRUE(listed);
}

TEST_F(CoordinatorTest, RecoveryFailsAJobWhoseCheckpointVanished) {
  setenv("RIGTUNE_FAKE_STEP_MS", "50", 1);
  Start();
  Job job = Submit(1000, 2);
  WaitFor(job.id(), Job::RUNNING);
  absl::SleepFor(absl::Milliseconds(500));
  Stop();
  auto store = JobStore::Open((dir_ / "state" / "rigtune.db").string());
  ASSERT_TRUE(store.ok());
  std::string checkpoint = (*store)->GetJob(job.id())->resume_from();
  ASSERT_FALSE(checkpoint.empty());
  store->reset();
  fs::remove_all(checkpoint);
  Start();
  Job failed = WaitFor(job.id(), Job::FAILED);
  EXPECT_EQ(failed.error().code(), "CHECKPOINT_MISSING");
  EXPECT_NE(failed.error().message().find(checkpoint), std::string::npos);
}

}  // namespace
}  // namespace rigtune::server
