// Thin RAII owners over the sqlite3 C API, for StateDB only: the connection,
// prepared statements, and one use of a cached statement.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace interimap::detail {

struct SqliteCloser {
  // close_v2: finalizes lazily if a statement is still alive (never here:
  // statements are members destroyed before the connection).
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
using SqlitePtr = std::unique_ptr<sqlite3, SqliteCloser>;

struct StatementFinalizer {
  void operator()(sqlite3_stmt* stmt) const noexcept { sqlite3_finalize(stmt); }
};
using StatementPtr = std::unique_ptr<sqlite3_stmt, StatementFinalizer>;

// Throws StateError "PATH: WHAT: SQLITE MESSAGE" with the connection's last
// error (StateLockedError for SQLITE_BUSY and SQLITE_LOCKED).
[[noreturn]] void throw_sqlite_error(sqlite3* db, const std::string& path, std::string_view what, int rc);

// A prepared statement kept for the connection's lifetime, prepared on
// first use.  `in_use` guards against reusing it while a Query holds it.
struct CachedStatement {
  StatementPtr stmt;
  bool in_use = false;
};

// One execution of a cached statement: bind, step, read columns.  The
// destructor resets the statement and clears its bindings, so that an
// exception mid-way leaves it ready for the next use and holds no cursor.
// Bindings of strings are SQLITE_STATIC: the bound bytes must outlive the
// Query (they do, being the caller's arguments).  `what` names the
// operation in error messages and must outlive the Query.
class Query {
 public:
  // Prepares `sql` into `cached` unless it is already; std::logic_error if
  // another Query holds it.
  Query(sqlite3* db, const std::string& path, std::string_view what, const char* sql, CachedStatement& cached);
  ~Query();
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;

  // Rewinds the statement for another execution (bindings are kept until
  // rebound): batches reuse one Query.
  void reset();

  Query& bind(int i, std::int64_t value);
  // Binds as a BLOB: mailbox names are BLOBs and must be compared as such
  // (SQLite never finds a TEXT value equal to a BLOB one).
  Query& bind_blob(int i, std::string_view bytes);

  // True for a row, false when done; throws StateError on error.
  bool step();
  // Steps a statement that returns no row (INSERT, UPDATE, DELETE) and
  // returns the number of rows it changed.
  std::int64_t execute();

  std::int64_t column_int64(int i) const;
  // A column that must hold a 32-bit unsigned value; StateError otherwise.
  std::uint32_t column_u32(int i) const;
  std::string column_blob(int i) const;
  bool column_is_null(int i) const;

 private:
  [[noreturn]] void fail(int rc) const;

  sqlite3* db_;
  const std::string& path_;
  std::string_view what_;
  CachedStatement& cached_;
};

}  // namespace interimap::detail
