// SqliteDb: a thin RAII layer over one sqlite3 connection, returning
// absl::Status instead of result codes. Not thread-safe: JobStore serializes
// every use under its own mutex.
//
//   ASSIGN_OR_RETURN(auto db, SqliteDb::Open("/var/lib/rigtune/rigtune.db"));
//   auto stmt = db->Prepare("SELECT job FROM jobs WHERE id = ?");
//   stmt->BindText(1, id);
//   while (*stmt->Step()) { ... stmt->ColumnBlob(0) ... }
#ifndef RIGTUNE_SERVER_SQLITE_DB_H_
#define RIGTUNE_SERVER_SQLITE_DB_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct sqlite3;
struct sqlite3_stmt;

namespace rigtune::server {

class Statement {
 public:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  // Parameters are 1-based, as in SQLite.
  void BindInt64(int index, int64_t value);
  void BindText(int index, const std::string& value);
  void BindBlob(int index, const std::string& value);
  void BindNull(int index);

  // true: a row is available; false: done. Errors carry SQLite's message.
  absl::StatusOr<bool> Step();
  // Step() expecting no row (INSERT/UPDATE/DELETE).
  absl::Status Run();

  int64_t ColumnInt64(int column) const;
  std::string ColumnText(int column) const;
  std::string ColumnBlob(int column) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
};

class SqliteDb {
 public:
  // Opens (creating if needed) the database file; WAL journal, NORMAL sync,
  // foreign keys on, 5 s busy timeout.
  static absl::StatusOr<std::unique_ptr<SqliteDb>> Open(const std::string& path);
  ~SqliteDb();
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  // Runs one or more statements without results.
  absl::Status Exec(const std::string& sql);
  absl::StatusOr<std::unique_ptr<Statement>> Prepare(const std::string& sql);

  // BEGIN IMMEDIATE / COMMIT / ROLLBACK.
  absl::Status Begin() { return Exec("BEGIN IMMEDIATE"); }
  absl::Status Commit() { return Exec("COMMIT"); }
  void Rollback();

  int64_t UserVersion();
  absl::Status SetUserVersion(int64_t version);

 private:
  explicit SqliteDb(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_SQLITE_DB_H_
