#include "sync/sqlite.hpp"

#include <interimap/statedb.hpp>

#include <fmt/format.h>

#include <limits>
#include <stdexcept>

namespace interimap::detail {

void throw_sqlite_error(sqlite3* db, const std::string& path, std::string_view what, int rc) {
  // errmsg describes the last failed call on this connection, which is the
  // one that returned rc; without a connection (out of memory on open) only
  // the generic text for the code is left.
  const char* text = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  int code = db != nullptr ? sqlite3_extended_errcode(db) : rc;
  if (code == SQLITE_OK) code = rc;
  std::string message = fmt::format("{}: {}: {}", path, what, text);
  const int primary = code & 0xff;
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) throw StateLockedError(message, code);
  throw StateError(message, code);
}

Query::Query(sqlite3* db, const std::string& path, std::string_view what, const char* sql, CachedStatement& cached)
    : db_(db), path_(path), what_(what), cached_(cached) {
  // Reusing a statement that is being stepped would reset the caller's
  // cursor under its feet (a callback calling back into StateDB).
  if (cached.in_use) throw std::logic_error(fmt::format("StateDB: {}: statement already in use", what));
  if (!cached.stmt) {
    sqlite3_stmt* stmt = nullptr;
    // PERSISTENT: the statement lives as long as the connection.
    const int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(stmt);
      throw_sqlite_error(db, path, what, rc);
    }
    cached.stmt.reset(stmt);
  }
  cached.in_use = true;
}

Query::~Query() {
  // reset() repeats the last step's error code, already reported by step().
  sqlite3_reset(cached_.stmt.get());
  sqlite3_clear_bindings(cached_.stmt.get());
  cached_.in_use = false;
}

void Query::reset() { sqlite3_reset(cached_.stmt.get()); }

void Query::fail(int rc) const { throw_sqlite_error(db_, path_, what_, rc); }

Query& Query::bind(int i, std::int64_t value) {
  const int rc = sqlite3_bind_int64(cached_.stmt.get(), i, value);
  if (rc != SQLITE_OK) fail(rc);
  return *this;
}

Query& Query::bind_blob(int i, std::string_view bytes) {
  // A null pointer would bind NULL, not an empty BLOB.
  static const char kEmpty = 0;
  const char* data = bytes.empty() ? &kEmpty : bytes.data();
  const int rc = sqlite3_bind_blob64(cached_.stmt.get(), i, data, bytes.size(), SQLITE_STATIC);
  if (rc != SQLITE_OK) fail(rc);
  return *this;
}

bool Query::step() {
  const int rc = sqlite3_step(cached_.stmt.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  fail(rc);
}

std::int64_t Query::execute() {
  if (step()) throw std::logic_error(fmt::format("StateDB: {}: statement returned a row", what_));
  return sqlite3_changes(db_);
}

std::int64_t Query::column_int64(int i) const { return sqlite3_column_int64(cached_.stmt.get(), i); }

std::uint32_t Query::column_u32(int i) const {
  sqlite3_stmt* stmt = cached_.stmt.get();
  const std::int64_t value = sqlite3_column_int64(stmt, i);
  if (sqlite3_column_type(stmt, i) != SQLITE_INTEGER || value < 0 ||
      value > std::numeric_limits<std::uint32_t>::max()) {
    const unsigned char* text = sqlite3_column_text(stmt, i);
    throw StateError(fmt::format("{}: {}: column {} holds {}, not a 32-bit unsigned integer", path_, what_,
                                 sqlite3_column_name(stmt, i),
                                 text != nullptr ? reinterpret_cast<const char*>(text) : "NULL"));
  }
  return static_cast<std::uint32_t>(value);
}

std::string Query::column_blob(int i) const {
  sqlite3_stmt* stmt = cached_.stmt.get();
  // blob() before bytes(), as SQLite documents; a TEXT value (written by a
  // version-0 flat-namespace upgrade) yields its bytes all the same.
  const void* data = sqlite3_column_blob(stmt, i);
  const int size = sqlite3_column_bytes(stmt, i);
  if (data == nullptr || size <= 0) return {};
  return std::string(static_cast<const char*>(data), static_cast<std::size_t>(size));
}

bool Query::column_is_null(int i) const { return sqlite3_column_type(cached_.stmt.get(), i) == SQLITE_NULL; }

}  // namespace interimap::detail
