// The store's schema, as an ordered list of migrations. The file's
// PRAGMA user_version is the number of migrations applied; each migration
// runs in its own transaction together with the version bump, so a crash
// mid-migration leaves the previous version intact.
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "rigtune/v1/job_service.pb.h"
#include "server/job_store.h"

namespace rigtune::server {

namespace {

struct Migration {
  int version;
  const char* sql;
  std::function<absl::Status(SqliteDb&)> backfill;  // may be empty
};

// v1: jobs (the Job message as a blob plus the columns queries need),
// events and checkpoints.
constexpr char kV1[] = R"sql(
CREATE TABLE jobs (
  row INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  idempotency_key TEXT UNIQUE,
  state INTEGER NOT NULL,
  priority INTEGER NOT NULL,
  job BLOB NOT NULL
);
CREATE TABLE events (
  job_id TEXT NOT NULL REFERENCES jobs(id),
  seq INTEGER NOT NULL,
  event BLOB NOT NULL,
  PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE checkpoints (
  job_id TEXT NOT NULL REFERENCES jobs(id),
  step INTEGER NOT NULL,
  checkpoint BLOB NOT NULL,
  PRIMARY KEY (job_id, step)
) WITHOUT ROWID;
)sql";

// v2: labels become queryable (ListJobs label filter) and the scheduler's
// state scan gets an index. Existing jobs' labels are copied out of their
// blobs.
constexpr char kV2[] = R"sql(
CREATE TABLE job_labels (
  job_id TEXT NOT NULL REFERENCES jobs(id),
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (job_id, key)
) WITHOUT ROWID;
CREATE INDEX job_labels_by_value ON job_labels(key, value);
CREATE INDEX jobs_by_state ON jobs(state, row);
)sql";

absl::Status BackfillLabels(SqliteDb& db) {
  auto select = db.Prepare("SELECT job FROM jobs");
  if (!select.ok()) return select.status();
  while (true) {
    absl::StatusOr<bool> row = (*select)->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    rigtune::v1::Job job;
    if (!job.ParseFromString((*select)->ColumnBlob(0))) {
      return absl::DataLossError("jobs: a row does not parse as rigtune.v1.Job");
    }
    for (const auto& [key, value] : job.spec().labels()) {
      auto insert = db.Prepare("INSERT INTO job_labels (job_id, key, value) VALUES (?, ?, ?)");
      if (!insert.ok()) return insert.status();
      (*insert)->BindText(1, job.id());
      (*insert)->BindText(2, key);
      (*insert)->BindText(3, value);
      if (absl::Status s = (*insert)->Run(); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

const std::vector<Migration>& Migrations() {
  static const auto* migrations = new std::vector<Migration>{
      {1, kV1, nullptr},
      {2, kV2, BackfillLabels},
  };
  return *migrations;
}

}  // namespace

absl::Status MigrateSchema(SqliteDb& db, int target) {
  int64_t current = db.UserVersion();
  if (current > kLatestSchemaVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("database schema version ", current, " is newer than this rigtuned (",
                     kLatestSchemaVersion, "); upgrade rigtuned"));
  }
  for (const Migration& migration : Migrations()) {
    if (migration.version <= current || migration.version > target) continue;
    if (absl::Status s = db.Begin(); !s.ok()) return s;
    absl::Status status = db.Exec(migration.sql);
    if (status.ok() && migration.backfill) status = migration.backfill(db);
    if (status.ok()) status = db.SetUserVersion(migration.version);
    if (status.ok()) status = db.Commit();
    if (!status.ok()) {
      db.Rollback();
      return absl::Status(status.code(), absl::StrCat("schema migration to v",
                                                      migration.version, ": ",
                                                      status.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace rigtune::server
