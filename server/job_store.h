// JobStore: the durable truth about jobs, their events and checkpoints, in
// one SQLite file (WAL). Every change is one transaction: a job's state, the
// event announcing it and any checkpoint it records commit together or not
// at all, so the daemon may be killed at any instant.
//
// Each job's events are numbered 1, 2, 3, ... with no gaps (the job row
// carries the last number). Thread-safe: one connection, guarded by mu_.
//
//   ASSIGN_OR_RETURN(auto store, JobStore::Open("/var/lib/rigtune/rigtune.db"));
//   ASSIGN_OR_RETURN(Job job, store->UpdateJob(id, [](Job& job, JobUpdate& update) {
//     job.set_state(Job::RUNNING);
//     update.reason = "all 2 ranks registered";
//     return absl::OkStatus();
//   }));
#ifndef RIGTUNE_SERVER_JOB_STORE_H_
#define RIGTUNE_SERVER_JOB_STORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "rigtune/v1/job_service.pb.h"
#include "server/sqlite_db.h"

namespace rigtune::server {

// The schema version this build writes; Open() migrates older files to it.
inline constexpr int kLatestSchemaVersion = 2;

// What a mutation adds besides the job itself.
struct JobUpdate {
  std::string reason;                          // recorded with a state change
  std::vector<rigtune::v1::JobEvent> events;   // appended after the state change
  std::vector<rigtune::v1::Checkpoint> checkpoints;
};

struct ListJobsQuery {
  int page_size = 50;
  std::string page_token;  // from a previous ListJobsResponse
  rigtune::v1::Job::State state = rigtune::v1::Job::STATE_UNSPECIFIED;
  std::string label_key;  // with label_value: only jobs carrying that label
  std::string label_value;
};

class JobStore {
 public:
  // Opens or creates the database and migrates it to `schema_version`
  // (tests pass an older version to exercise migrations). Fails when the
  // file is newer than this build understands.
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(
      const std::string& path, int schema_version = kLatestSchemaVersion);

  int64_t SchemaVersion();

  // Inserts `job` (id, spec, state QUEUED, create_time set by the caller)
  // with its first event. With a non-empty idempotency_key already in the
  // store, returns that job instead (created = false), or ALREADY_EXISTS
  // when its spec differs.
  struct CreateResult {
    rigtune::v1::Job job;
    bool created = false;
  };
  absl::StatusOr<CreateResult> CreateJob(rigtune::v1::Job job, const std::string& reason);

  // NOT_FOUND names the id.
  absl::StatusOr<rigtune::v1::Job> GetJob(const std::string& id);

  // Newest first. INVALID_ARGUMENT for a malformed page_token.
  absl::StatusOr<rigtune::v1::ListJobsResponse> ListJobs(const ListJobsQuery& query);

  // Jobs in any of `states`, oldest first.
  absl::StatusOr<std::vector<rigtune::v1::Job>> JobsInStates(
      const std::vector<rigtune::v1::Job::State>& states);

  // Reads the job, lets `mutate` change it and fill `update`, checks any
  // state change against the state machine, numbers the events and commits
  // it all in one transaction. A non-OK status from `mutate` (or an illegal
  // transition) changes nothing and is returned.
  using Mutator = std::function<absl::Status(rigtune::v1::Job& job, JobUpdate& update)>;
  absl::StatusOr<rigtune::v1::Job> UpdateJob(const std::string& id, const Mutator& mutate);

  // Events with seq > after_seq, at most `limit`, oldest first.
  absl::StatusOr<std::vector<rigtune::v1::JobEvent>> ListEvents(const std::string& id,
                                                                int64_t after_seq, int limit);

  // Oldest first.
  absl::StatusOr<std::vector<rigtune::v1::Checkpoint>> ListCheckpoints(const std::string& id);

  // How many jobs are in each state (states without jobs are absent).
  absl::StatusOr<std::map<rigtune::v1::Job::State, int>> CountByState();

 private:
  explicit JobStore(std::unique_ptr<SqliteDb> db) : db_(std::move(db)) {}

  absl::StatusOr<rigtune::v1::Job> ReadJob(const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status WriteJob(const rigtune::v1::Job& job, bool insert)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AppendEvents(rigtune::v1::Job& job, std::vector<rigtune::v1::JobEvent> events)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::unique_ptr<SqliteDb> db_ ABSL_GUARDED_BY(mu_);
};

// Applies the numbered migrations up to `target` in one transaction each.
// Defined in job_store_schema.cc.
absl::Status MigrateSchema(SqliteDb& db, int target);

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_JOB_STORE_H_
