#include "server/job_store.h"

#include <filesystem>
#include <set>

#include "gtest/gtest.h"
#include "tests/server/test_dir.h"
#include "server/sqlite_db.h"

namespace rigtune::server {
namespace {

using rigtune::v1::Job;

class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = rigtune::testing::FreshTestDir();
    path_ = (dir_ / "store.db").string();
  }

  static Job NewJob(const std::string& id, const std::string& key = "") {
    Job job;
    job.set_id(id);
    job.set_state(Job::QUEUED);
    job.set_idempotency_key(key);
    job.mutable_spec()->set_model("random:tiny");
    return job;
  }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(JobStoreTest, NewFileIsAtLatestSchemaVersion) {
  auto store = JobStore::Open(path_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->SchemaVersion(), kLatestSchemaVersion);
}

TEST_F(JobStoreTest, MigrationFromV1BackfillsLabels) {
  {
    auto v1 = JobStore::Open(path_, /*schema_version=*/1);
    ASSERT_TRUE(v1.ok()) << v1.status();
    EXPECT_EQ((*v1)->SchemaVersion(), 1);
    Job job = NewJob("job-a");
    (*job.mutable_spec()->mutable_labels())["team"] = "nlp";
    ASSERT_TRUE((*v1)->CreateJob(job, "submitted").ok());
    ASSERT_TRUE((*v1)->CreateJob(NewJob("job-b"), "submitted").ok());
  }
  auto store = JobStore::Open(path_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->SchemaVersion(), 2);
  ListJobsQuery query;
  query.label_key = "team";
  query.label_value = "nlp";
  auto page = (*store)->ListJobs(query);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->jobs_size(), 1);
  EXPECT_EQ(page->jobs(0).id(), "job-a");
}

TEST_F(JobStoreTest, RefusesAFileFromANewerDaemon) {
  {
    auto db = SqliteDb::Open(path_);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->SetUserVersion(kLatestSchemaVersion + 1).ok());
  }
  auto store = JobStore::Open(path_);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(JobStoreTest, SameIdempotencyKeyReturnsTheFirstJob) {
  auto store = *JobStore::Open(path_);
  auto first = store->CreateJob(NewJob("job-1", "key"), "submitted");
  auto second = store->CreateJob(NewJob("job-2", "key"), "submitted");
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_TRUE(first->created);
  EXPECT_FALSE(second->created);
  EXPECT_EQ(second->job.id(), "job-1");
}

TEST_F(JobStoreTest, SameKeyWithADifferentSpecIsRefused) {
  auto store = *JobStore::Open(path_);
  ASSERT_TRUE(store->CreateJob(NewJob("job-1", "key"), "submitted").ok());
  Job other = NewJob("job-2", "key");
  other.mutable_spec()->set_model("random:small");
  auto result = store->CreateJob(other, "submitted");
  EXPECT_EQ(result.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(result.status().message().find("idempotency_key"), std::string::npos);
}

TEST_F(JobStoreTest, EventsAreNumberedWithoutGaps) {
  auto store = *JobStore::Open(path_);
  ASSERT_TRUE(store->CreateJob(NewJob("job-1"), "submitted").ok());
  auto updated = store->UpdateJob("job-1", [](Job& job, JobUpdate& update) {
    job.set_state(Job::STARTING);
    update.events.emplace_back();
    update.events.back().mutable_log()->set_text("hello");
    update.checkpoints.emplace_back();
    update.checkpoints.back().set_step(5);
    update.checkpoints.back().set_path("/x/checkpoint-5");
    return absl::OkStatus();
  });
  ASSERT_TRUE(updated.ok()) << updated.status();
  auto events = store->ListEvents("job-1", 0, 100);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 4u);  // submitted, STARTING, log, checkpoint
  for (size_t i = 0; i < events->size(); ++i) EXPECT_EQ((*events)[i].seq(), int64_t(i + 1));
  EXPECT_EQ((*events)[1].state_change().to(), Job::STARTING);
  EXPECT_TRUE((*events)[3].has_checkpoint());
  EXPECT_EQ(updated->last_event_seq(), 4);
  auto checkpoints = store->ListCheckpoints("job-1");
  ASSERT_TRUE(checkpoints.ok());
  ASSERT_EQ(checkpoints->size(), 1u);
  EXPECT_EQ((*checkpoints)[0].path(), "/x/checkpoint-5");
}

TEST_F(JobStoreTest, IllegalTransitionChangesNothing) {
  auto store = *JobStore::Open(path_);
  ASSERT_TRUE(store->CreateJob(NewJob("job-1"), "submitted").ok());
  auto result = store->UpdateJob("job-1", [](Job& job, JobUpdate& update) {
    job.set_state(Job::SUCCEEDED);  // QUEUED cannot jump there
    update.events.emplace_back();
    update.events.back().mutable_log()->set_text("never stored");
    return absl::OkStatus();
  });
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->GetJob("job-1")->state(), Job::QUEUED);
  EXPECT_EQ(store->ListEvents("job-1", 0, 100)->size(), 1u);
}

TEST_F(JobStoreTest, MutatorErrorRollsBack) {
  auto store = *JobStore::Open(path_);
  ASSERT_TRUE(store->CreateJob(NewJob("job-1"), "submitted").ok());
  auto result = store->UpdateJob("job-1", [](Job& job, JobUpdate& update) {
    job.set_state(Job::PAUSED);
    update.checkpoints.emplace_back();
    update.checkpoints.back().set_step(1);
    return absl::AbortedError("changed my mind");
  });
  EXPECT_EQ(result.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(store->GetJob("job-1")->state(), Job::QUEUED);
  EXPECT_TRUE(store->ListCheckpoints("job-1")->empty());
}

TEST_F(JobStoreTest, TerminalStatesNeverChange) {
  auto store = *JobStore::Open(path_);
  ASSERT_TRUE(store->CreateJob(NewJob("job-1"), "submitted").ok());
  ASSERT_TRUE(store->UpdateJob("job-1", [](Job& job, JobUpdate&) {
                     job.set_state(Job::CANCELLED);
                     return absl::OkStatus();
                   }).ok());
  EXPECT_TRUE(store->GetJob("job-1")->has_end_time());
  auto result = store->UpdateJob("job-1", [](Job& job, JobUpdate&) {
    job.set_state(Job::QUEUED);
    return absl::OkStatus();
  });
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(JobStoreTest, PaginationVisitsEveryJobOnceNewestFirst) {
  auto store = *JobStore::Open(path_);
  for (int i = 0; i < 23; ++i) {
    ASSERT_TRUE(store->CreateJob(NewJob("job-" + std::to_string(100 + i)), "submitted").ok());
  }
  ListJobsQuery query;
  query.page_size = 5;
  std::vector<std::string> seen;
  int pages = 0;
  do {
    auto page = store->ListJobs(query);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const Job& job : page->jobs()) seen.push_back(job.id());
    query.page_token = page->next_page_token();
    ++pages;
  } while (!query.page_token.empty());
  EXPECT_EQ(pages, 5);
  ASSERT_EQ(seen.size(), 23u);
  EXPECT_EQ(seen.front(), "job-122");
  EXPECT_EQ(seen.back(), "job-100");
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 23u);
}

TEST_F(JobStoreTest, StateFilterAndBadPageToken) {
  auto store = *JobStore::Open(path_);
  ASSERT_TRUE(store->CreateJob(NewJob("job-1"), "submitted").ok());
  ASSERT_TRUE(store->CreateJob(NewJob("job-2"), "submitted").ok());
  ASSERT_TRUE(store->UpdateJob("job-2", [](Job& job, JobUpdate&) {
                     job.set_state(Job::PAUSED);
                     return absl::OkStatus();
                   }).ok());
  ListJobsQuery query;
  query.state = Job::PAUSED;
  auto page = store->ListJobs(query);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->jobs_size(), 1);
  EXPECT_EQ(page->jobs(0).id(), "job-2");
  query.page_token = "garbage!";
  EXPECT_EQ(store->ListJobs(query).status().code(), absl::StatusCode::kInvalidArgument);
  auto counts = store->CountByState();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ((*counts)[Job::QUEUED], 1);
  EXPECT_EQ((*counts)[Job::PAUSED], 1);
}

TEST_F(JobStoreTest, SurvivesReopen) {
  {
    auto store = *JobStore::Open(path_);
    ASSERT_TRUE(store->CreateJob(NewJob("job-1", "k"), "submitted").ok());
  }
  auto store = *JobStore::Open(path_);
  auto job = store->GetJob("job-1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->idempotency_key(), "k");
  EXPECT_EQ(store->GetJob("nope").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace rigtune::server
