#include "server/job_store.h"

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/util/time_util.h"
#include "server/job_state.h"

namespace rigtune::server {

using rigtune::v1::Checkpoint;
using rigtune::v1::Job;
using rigtune::v1::JobEvent;

namespace {

// A transaction that rolls back unless committed.
class Transaction {
 public:
  explicit Transaction(SqliteDb& db) : db_(db) { status_ = db_.Begin(); }
  ~Transaction() {
    if (status_.ok() && !done_) db_.Rollback();
  }
  const absl::Status& status() const { return status_; }
  absl::Status Commit() {
    done_ = true;
    return db_.Commit();
  }

 private:
  SqliteDb& db_;
  absl::Status status_;
  bool done_ = false;
};

std::string EncodePageToken(int64_t row) {
  return absl::WebSafeBase64Escape(absl::StrCat("row:", row));
}

absl::StatusOr<int64_t> DecodePageToken(const std::string& token) {
  std::string raw;
  int64_t row = 0;
  if (!absl::WebSafeBase64Unescape(token, &raw) || raw.rfind("row:", 0) != 0 ||
      !absl::SimpleAtoi(raw.substr(4), &row)) {
    return absl::InvalidArgumentError("page_token: malformed; pass back next_page_token as given");
  }
  return row;
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& path,
                                                         int schema_version) {
  absl::StatusOr<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(path);
  if (!db.ok()) return db.status();
  if (absl::Status s = MigrateSchema(**db, schema_version); !s.ok()) return s;
  return std::unique_ptr<JobStore>(new JobStore(std::move(*db)));
}

int64_t JobStore::SchemaVersion() {
  absl::MutexLock lock(&mu_);
  return db_->UserVersion();
}

absl::StatusOr<Job> JobStore::ReadJob(const std::string& id) {
  auto stmt = db_->Prepare("SELECT job FROM jobs WHERE id = ?");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, id);
  absl::StatusOr<bool> row = (*stmt)->Step();
  if (!row.ok()) return row.status();
  if (!*row) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  Job job;
  if (!job.ParseFromString((*stmt)->ColumnBlob(0))) {
    return absl::DataLossError(absl::StrCat("job ", id, ": stored row does not parse"));
  }
  return job;
}

absl::Status JobStore::WriteJob(const Job& job, bool insert) {
  auto stmt = db_->Prepare(
      insert ? "INSERT INTO jobs (id, idempotency_key, state, priority, job) VALUES (?, ?, ?, ?, ?)"
             : "UPDATE jobs SET idempotency_key = ?2, state = ?3, priority = ?4, job = ?5 "
               "WHERE id = ?1");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, job.id());
  if (job.idempotency_key().empty()) {
    (*stmt)->BindNull(2);
  } else {
    (*stmt)->BindText(2, job.idempotency_key());
  }
  (*stmt)->BindInt64(3, job.state());
  (*stmt)->BindInt64(4, job.spec().priority());
  (*stmt)->BindBlob(5, job.SerializeAsString());
  if (absl::Status s = (*stmt)->Run(); !s.ok()) return s;
  if (!insert || db_->UserVersion() < 2) return absl::OkStatus();
  for (const auto& [key, value] : job.spec().labels()) {
    auto label = db_->Prepare("INSERT INTO job_labels (job_id, key, value) VALUES (?, ?, ?)");
    if (!label.ok()) return label.status();
    (*label)->BindText(1, job.id());
    (*label)->BindText(2, key);
    (*label)->BindText(3, value);
    if (absl::Status s = (*label)->Run(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status JobStore::AppendEvents(Job& job, std::vector<JobEvent> events) {
  for (JobEvent& event : events) {
    event.set_job_id(job.id());
    event.set_seq(job.last_event_seq() + 1);
    if (!event.has_time()) {
      *event.mutable_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
    }
    auto stmt = db_->Prepare("INSERT INTO events (job_id, seq, event) VALUES (?, ?, ?)");
    if (!stmt.ok()) return stmt.status();
    (*stmt)->BindText(1, job.id());
    (*stmt)->BindInt64(2, event.seq());
    (*stmt)->BindBlob(3, event.SerializeAsString());
    if (absl::Status s = (*stmt)->Run(); !s.ok()) return s;
    job.set_last_event_seq(event.seq());
  }
  return absl::OkStatus();
}

absl::StatusOr<JobStore::CreateResult> JobStore::CreateJob(Job job, const std::string& reason) {
  absl::MutexLock lock(&mu_);
  Transaction tx(*db_);
  if (!tx.status().ok()) return tx.status();
  if (!job.idempotency_key().empty()) {
    auto stmt = db_->Prepare("SELECT id FROM jobs WHERE idempotency_key = ?");
    if (!stmt.ok()) return stmt.status();
    (*stmt)->BindText(1, job.idempotency_key());
    absl::StatusOr<bool> row = (*stmt)->Step();
    if (!row.ok()) return row.status();
    if (*row) {
      absl::StatusOr<Job> existing = ReadJob((*stmt)->ColumnText(0));
      if (!existing.ok()) return existing.status();
      if (!google::protobuf::util::MessageDifferencer::Equals(existing->spec(), job.spec())) {
        return absl::AlreadyExistsError(absl::StrCat(
            "idempotency_key: already used by job ", existing->id(), " with a different spec"));
      }
      return CreateResult{*std::move(existing), false};
    }
  }
  JobEvent created;
  created.mutable_state_change()->set_to(job.state());
  created.mutable_state_change()->set_reason(reason);
  *created.mutable_time() = job.create_time();
  job.set_last_event_seq(0);
  if (absl::Status s = WriteJob(job, /*insert=*/true); !s.ok()) return s;
  if (absl::Status s = AppendEvents(job, {created}); !s.ok()) return s;
  if (absl::Status s = WriteJob(job, /*insert=*/false); !s.ok()) return s;
  if (absl::Status s = tx.Commit(); !s.ok()) return s;
  return CreateResult{std::move(job), true};
}

absl::StatusOr<Job> JobStore::GetJob(const std::string& id) {
  absl::MutexLock lock(&mu_);
  return ReadJob(id);
}

absl::StatusOr<rigtune::v1::ListJobsResponse> JobStore::ListJobs(const ListJobsQuery& query) {
  int64_t before_row = INT64_MAX;
  if (!query.page_token.empty()) {
    absl::StatusOr<int64_t> row = DecodePageToken(query.page_token);
    if (!row.ok()) return row.status();
    before_row = *row;
  }
  std::string sql = "SELECT jobs.row, jobs.job FROM jobs";
  if (!query.label_key.empty()) {
    sql += " JOIN job_labels ON job_labels.job_id = jobs.id AND job_labels.key = ?3 "
           "AND job_labels.value = ?4";
  }
  sql += " WHERE jobs.row < ?1";
  if (query.state != Job::STATE_UNSPECIFIED) sql += " AND jobs.state = ?2";
  sql += " ORDER BY jobs.row DESC LIMIT ?5";

  absl::MutexLock lock(&mu_);
  auto stmt = db_->Prepare(sql);
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindInt64(1, before_row);
  if (query.state != Job::STATE_UNSPECIFIED) (*stmt)->BindInt64(2, query.state);
  if (!query.label_key.empty()) {
    (*stmt)->BindText(3, query.label_key);
    (*stmt)->BindText(4, query.label_value);
  }
  (*stmt)->BindInt64(5, query.page_size + 1);
  rigtune::v1::ListJobsResponse response;
  int64_t last_row = 0;
  while (true) {
    absl::StatusOr<bool> row = (*stmt)->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    if (response.jobs_size() == query.page_size) {
      response.set_next_page_token(EncodePageToken(last_row));
      break;
    }
    last_row = (*stmt)->ColumnInt64(0);
    if (!response.add_jobs()->ParseFromString((*stmt)->ColumnBlob(1))) {
      return absl::DataLossError("jobs: a stored row does not parse");
    }
  }
  return response;
}

absl::StatusOr<std::vector<Job>> JobStore::JobsInStates(const std::vector<Job::State>& states) {
  std::vector<std::string> numbers;
  for (Job::State state : states) numbers.push_back(absl::StrCat(static_cast<int>(state)));
  absl::MutexLock lock(&mu_);
  auto stmt = db_->Prepare(absl::StrCat("SELECT job FROM jobs WHERE state IN (",
                                        absl::StrJoin(numbers, ","), ") ORDER BY row"));
  if (!stmt.ok()) return stmt.status();
  std::vector<Job> jobs;
  while (true) {
    absl::StatusOr<bool> row = (*stmt)->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    jobs.emplace_back();
    if (!jobs.back().ParseFromString((*stmt)->ColumnBlob(0))) {
      return absl::DataLossError("jobs: a stored row does not parse");
    }
  }
  return jobs;
}

absl::StatusOr<Job> JobStore::UpdateJob(const std::string& id, const Mutator& mutate) {
  absl::MutexLock lock(&mu_);
  Transaction tx(*db_);
  if (!tx.status().ok()) return tx.status();
  absl::StatusOr<Job> read = ReadJob(id);
  if (!read.ok()) return read.status();
  Job job = *std::move(read);
  const Job::State before = job.state();
  JobUpdate update;
  if (absl::Status s = mutate(job, update); !s.ok()) return s;
  const auto now = google::protobuf::util::TimeUtil::GetCurrentTime();
  std::vector<JobEvent> events;
  if (job.state() != before) {
    if (absl::Status s = CheckTransition(before, job.state()); !s.ok()) return s;
    JobEvent change;
    change.mutable_state_change()->set_from(before);
    change.mutable_state_change()->set_to(job.state());
    change.mutable_state_change()->set_reason(update.reason);
    events.push_back(std::move(change));
    if (IsTerminal(job.state())) *job.mutable_end_time() = now;
  }
  for (JobEvent& event : update.events) events.push_back(std::move(event));
  for (const Checkpoint& checkpoint : update.checkpoints) {
    auto stmt = db_->Prepare(
        "INSERT OR REPLACE INTO checkpoints (job_id, step, checkpoint) VALUES (?, ?, ?)");
    if (!stmt.ok()) return stmt.status();
    (*stmt)->BindText(1, id);
    (*stmt)->BindInt64(2, checkpoint.step());
    (*stmt)->BindBlob(3, checkpoint.SerializeAsString());
    if (absl::Status s = (*stmt)->Run(); !s.ok()) return s;
    JobEvent event;
    *event.mutable_checkpoint() = checkpoint;
    events.push_back(std::move(event));
  }
  *job.mutable_update_time() = now;
  if (absl::Status s = AppendEvents(job, std::move(events)); !s.ok()) return s;
  if (absl::Status s = WriteJob(job, /*insert=*/false); !s.ok()) return s;
  if (absl::Status s = tx.Commit(); !s.ok()) return s;
  return job;
}

absl::StatusOr<std::vector<JobEvent>> JobStore::ListEvents(const std::string& id,
                                                           int64_t after_seq, int limit) {
  absl::MutexLock lock(&mu_);
  if (absl::StatusOr<Job> job = ReadJob(id); !job.ok()) return job.status();
  auto stmt =
      db_->Prepare("SELECT event FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, id);
  (*stmt)->BindInt64(2, after_seq);
  (*stmt)->BindInt64(3, limit);
  std::vector<JobEvent> events;
  while (true) {
    absl::StatusOr<bool> row = (*stmt)->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    events.emplace_back();
    if (!events.back().ParseFromString((*stmt)->ColumnBlob(0))) {
      return absl::DataLossError(absl::StrCat("job ", id, ": a stored event does not parse"));
    }
  }
  return events;
}

absl::StatusOr<std::vector<Checkpoint>> JobStore::ListCheckpoints(const std::string& id) {
  absl::MutexLock lock(&mu_);
  if (absl::StatusOr<Job> job = ReadJob(id); !job.ok()) return job.status();
  auto stmt = db_->Prepare("SELECT checkpoint FROM checkpoints WHERE job_id = ? ORDER BY step");
  if (!stmt.ok()) return stmt.status();
  (*stmt)->BindText(1, id);
  std::vector<Checkpoint> checkpoints;
  while (true) {
    absl::StatusOr<bool> row = (*stmt)->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    checkpoints.emplace_back();
    if (!checkpoints.back().ParseFromString((*stmt)->ColumnBlob(0))) {
      return absl::DataLossError(absl::StrCat("job ", id, ": a stored checkpoint does not parse"));
    }
  }
  return checkpoints;
}

absl::StatusOr<std::map<Job::State, int>> JobStore::CountByState() {
  absl::MutexLock lock(&mu_);
  auto stmt = db_->Prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state");
  if (!stmt.ok()) return stmt.status();
  std::map<Job::State, int> counts;
  while (true) {
    absl::StatusOr<bool> row = (*stmt)->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    counts[static_cast<Job::State>((*stmt)->ColumnInt64(0))] =
        static_cast<int>((*stmt)->ColumnInt64(1));
  }
  return counts;
}

}  // namespace rigtune::server
