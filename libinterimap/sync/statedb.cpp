#include <interimap/statedb.hpp>

#include <interimap/config.hpp>

#include "sync/sqlite.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace interimap {

namespace {

// The schema version this code writes, kept in `PRAGMA user_version`.
constexpr int kDatabaseVersion = 1;

// The reference's CREATE TABLE statements, byte for byte: SQLite stores the
// text in sqlite_master, where a user (or a test) comparing the two files
// sees it.  Each is "CREATE TABLE NAME (" + the column definitions joined
// by ", " + ")", with the reference's alignment inside the definitions.
#define INTERIMAP_MAILBOXES_COLUMNS                                   \
  "idx        INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "           \
  "mailbox    BLOB COLLATE BINARY NOT NULL CHECK (mailbox != '') UNIQUE, " \
  "subscribed BOOLEAN NOT NULL"
#define INTERIMAP_SIDE_COLUMNS                                                       \
  "idx           INTEGER         NOT NULL PRIMARY KEY REFERENCES mailboxes(idx), " \
  "UIDVALIDITY   UNSIGNED INT    NOT NULL CHECK (UIDVALIDITY > 0), "               \
  "UIDNEXT       UNSIGNED INT    NOT NULL, "                                       \
  "HIGHESTMODSEQ UNSIGNED BIGINT NOT NULL"

constexpr const char* kCreateSchema[] = {
    "CREATE TABLE mailboxes (" INTERIMAP_MAILBOXES_COLUMNS ")",
    "CREATE TABLE local (" INTERIMAP_SIDE_COLUMNS ")",
    "CREATE TABLE remote (" INTERIMAP_SIDE_COLUMNS ")",
    "CREATE TABLE mapping ("
    "idx  INTEGER      NOT NULL REFERENCES mailboxes(idx), "
    "lUID UNSIGNED INT NOT NULL CHECK (lUID > 0), "
    "rUID UNSIGNED INT NOT NULL CHECK (rUID > 0), "
    "PRIMARY KEY (idx,lUID), "
    "UNIQUE      (idx,rUID))",
};

// Version 0 -> 1 (SQLite's 12-step ALTER TABLE procedure, as the
// reference): the new `mailboxes` is created under a temporary name, filled,
// and renamed, which SQLite records as CREATE TABLE "mailboxes" (quoted).
constexpr const char* kUpgradeCreate = "CREATE TABLE _tmp1_mailboxes (" INTERIMAP_MAILBOXES_COLUMNS ")";
// REPLACE reads its arguments as text whatever their type: the delimiter
// may be bound as a BLOB.  CAST: names must be BLOBs (see Query::bind_blob).
constexpr const char* kUpgradeCopyHierarchical =
    "INSERT INTO _tmp1_mailboxes SELECT idx, CAST(REPLACE(mailbox, ?, x'00') AS BLOB), subscribed FROM mailboxes";
// The reference copies names of a flat namespace as they are, leaving TEXT
// values in the BLOB column that no later lookup (bound as BLOB) matches;
// casting them fixes that and changes no byte.
constexpr const char* kUpgradeCopyFlat =
    "INSERT INTO _tmp1_mailboxes SELECT idx, CAST(mailbox AS BLOB), subscribed FROM mailboxes";

#undef INTERIMAP_MAILBOXES_COLUMNS
#undef INTERIMAP_SIDE_COLUMNS

// The cached statements.  Each has a name for error messages.
enum class Sql : std::size_t {
  FindMailbox,
  ListMailboxes,
  AddMailbox,
  SetSubscribed,
  DeleteMappings,
  DeleteLocal,
  DeleteRemote,
  DeleteMailbox,
  RenameMailbox,
  RenameChildren,
  ListChildren,
  InsertLocal,
  InsertRemote,
  GetState,
  SetStateLocal,
  SetStateRemote,
  SetUidnextLocal,
  SetUidnextRemote,
  SetModseqLocal,
  SetModseqRemote,
  AddMapping,
  RemoveByLocal,
  RemoveByRemote,
  LookupByLocal,
  LookupByRemote,
  CountMappings,
  MappingsByLocalAsc,
  MappingsByLocalDesc,
  MappingsByRemoteAsc,
  MappingsByRemoteDesc,
  InterruptedMailboxes,
  InterruptedMappings,
  SetPendingAppend,
  PendingAppends,
  PendingAppendMailboxes,
  ClearPendingAppends,
  SyncedFlags,
  SetSyncedFlags,
  ForgetSyncedFlags,
  DeleteSyncedFlags,
  ClearSyncedFlags,
  Count
};

struct SqlSpec {
  Sql id;
  std::string_view what;
  const char* sql;
};

// A mailbox row with both sides' state (NULLs without state); columns 0-8.
#define INTERIMAP_MAILBOX_COLUMNS                                  \
  "m.idx, m.mailbox, m.subscribed, "                              \
  "l.UIDVALIDITY, l.UIDNEXT, l.HIGHESTMODSEQ, "                   \
  "r.UIDVALIDITY, r.UIDNEXT, r.HIGHESTMODSEQ "                    \
  "FROM mailboxes m LEFT JOIN local l ON l.idx = m.idx LEFT JOIN remote r ON r.idx = m.idx "

constexpr SqlSpec kSql[] = {
    {Sql::FindMailbox, "find mailbox", "SELECT " INTERIMAP_MAILBOX_COLUMNS "WHERE m.mailbox = ?"},
    {Sql::ListMailboxes, "list mailboxes", "SELECT " INTERIMAP_MAILBOX_COLUMNS "ORDER BY m.idx"},
    {Sql::AddMailbox, "add mailbox", "INSERT INTO mailboxes (mailbox, subscribed) VALUES (?, ?)"},
    {Sql::SetSubscribed, "set subscribed", "UPDATE mailboxes SET subscribed = ? WHERE idx = ?"},
    // --delete: non-referenced tables first, for the foreign keys.
    {Sql::DeleteMappings, "delete mailbox", "DELETE FROM mapping WHERE idx = ?"},
    {Sql::DeleteLocal, "delete mailbox", "DELETE FROM local WHERE idx = ?"},
    {Sql::DeleteRemote, "delete mailbox", "DELETE FROM remote WHERE idx = ?"},
    {Sql::DeleteMailbox, "delete mailbox", "DELETE FROM mailboxes WHERE idx = ?"},
    {Sql::RenameMailbox, "rename mailbox", "UPDATE mailboxes SET mailbox = ? WHERE mailbox = ?"},
    // ?2 = length(FROM + NUL): SUBSTR from there keeps the NUL, so that
    // FROM\0REST becomes TO\0REST.  SUBSTR counts bytes on BLOBs, and ||
    // keeps NUL bytes (it concatenates by length); CAST restores the type.
    {Sql::RenameChildren, "rename mailbox",
     "UPDATE mailboxes SET mailbox = CAST(?1 || SUBSTR(mailbox, ?2) AS BLOB) WHERE SUBSTR(mailbox, 1, ?2) = ?3"},
    {Sql::ListChildren, "rename mailbox", "SELECT mailbox FROM mailboxes WHERE SUBSTR(mailbox, 1, ?1) = ?2"},
    {Sql::InsertLocal, "init state", "INSERT INTO local (idx, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ) VALUES (?, ?, 0, 0)"},
    {Sql::InsertRemote, "init state",
     "INSERT INTO remote (idx, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ) VALUES (?, ?, 0, 0)"},
    {Sql::GetState, "get state",
     "SELECT l.UIDVALIDITY, l.UIDNEXT, l.HIGHESTMODSEQ, r.UIDVALIDITY, r.UIDNEXT, r.HIGHESTMODSEQ "
     "FROM local l JOIN remote r ON l.idx = r.idx WHERE l.idx = ?"},
    {Sql::SetStateLocal, "set state", "UPDATE local SET UIDNEXT = ?, HIGHESTMODSEQ = ? WHERE idx = ?"},
    {Sql::SetStateRemote, "set state", "UPDATE remote SET UIDNEXT = ?, HIGHESTMODSEQ = ? WHERE idx = ?"},
    {Sql::SetUidnextLocal, "set UIDNEXT", "UPDATE local SET UIDNEXT = ? WHERE idx = ?"},
    {Sql::SetUidnextRemote, "set UIDNEXT", "UPDATE remote SET UIDNEXT = ? WHERE idx = ?"},
    {Sql::SetModseqLocal, "set HIGHESTMODSEQ", "UPDATE local SET HIGHESTMODSEQ = ? WHERE idx = ?"},
    {Sql::SetModseqRemote, "set HIGHESTMODSEQ", "UPDATE remote SET HIGHESTMODSEQ = ? WHERE idx = ?"},
    {Sql::AddMapping, "add mapping", "INSERT INTO mapping (idx, lUID, rUID) VALUES (?, ?, ?)"},
    {Sql::RemoveByLocal, "remove mapping", "DELETE FROM mapping WHERE idx = ? AND lUID = ?"},
    {Sql::RemoveByRemote, "remove mapping", "DELETE FROM mapping WHERE idx = ? AND rUID = ?"},
    {Sql::LookupByLocal, "look up mapping", "SELECT rUID FROM mapping WHERE idx = ? AND lUID = ?"},
    {Sql::LookupByRemote, "look up mapping", "SELECT lUID FROM mapping WHERE idx = ? AND rUID = ?"},
    {Sql::CountMappings, "count mappings", "SELECT COUNT(*) FROM mapping WHERE idx = ?"},
    // The PRIMARY KEY (idx,lUID) and UNIQUE (idx,rUID) indexes give the
    // order without sorting.
    {Sql::MappingsByLocalAsc, "list mappings", "SELECT lUID, rUID FROM mapping WHERE idx = ? ORDER BY lUID ASC"},
    {Sql::MappingsByLocalDesc, "list mappings", "SELECT lUID, rUID FROM mapping WHERE idx = ? ORDER BY lUID DESC"},
    {Sql::MappingsByRemoteAsc, "list mappings", "SELECT lUID, rUID FROM mapping WHERE idx = ? ORDER BY rUID ASC"},
    {Sql::MappingsByRemoteDesc, "list mappings", "SELECT lUID, rUID FROM mapping WHERE idx = ? ORDER BY rUID DESC"},
    // A mapping at or above UIDNEXT was recorded after an APPEND but before
    // the new UIDNEXT: the sync of that mailbox was interrupted.
    {Sql::InterruptedMailboxes, "list interrupted syncs",
     "SELECT " INTERIMAP_MAILBOX_COLUMNS
     "WHERE EXISTS (SELECT 1 FROM mapping x WHERE x.idx = m.idx AND (x.lUID >= l.UIDNEXT OR x.rUID >= r.UIDNEXT)) "
     "ORDER BY m.idx"},
    {Sql::InterruptedMappings, "list interrupted syncs",
     "SELECT x.lUID, x.rUID FROM mapping x JOIN local l ON x.idx = l.idx JOIN remote r ON x.idx = r.idx "
     "WHERE x.idx = ? AND (x.lUID >= l.UIDNEXT OR x.rUID >= r.UIDNEXT) ORDER BY x.lUID"},
    {Sql::SetPendingAppend, "record appends in flight",
     "INSERT OR IGNORE INTO interimap_pending_append (idx, side, UIDNEXT) VALUES (?, ?, ?)"},
    {Sql::PendingAppends, "list appends in flight",
     "SELECT side, UIDNEXT FROM interimap_pending_append WHERE idx = ? ORDER BY side"},
    {Sql::PendingAppendMailboxes, "list mailboxes with appends in flight",
     "SELECT DISTINCT idx FROM interimap_pending_append ORDER BY idx"},
    {Sql::ClearPendingAppends, "clear appends in flight", "DELETE FROM interimap_pending_append WHERE idx = ?"},
    {Sql::SyncedFlags, "read synchronized flags", "SELECT uid, flags FROM interimap_flags WHERE idx = ? AND side = ?"},
    {Sql::SetSyncedFlags, "record synchronized flags",
     "INSERT OR REPLACE INTO interimap_flags (idx, side, uid, flags) VALUES (?, ?, ?, ?)"},
    {Sql::ForgetSyncedFlags, "forget synchronized flags",
     "DELETE FROM interimap_flags WHERE idx = ? AND side = ? AND uid = ?"},
    {Sql::DeleteSyncedFlags, "delete mailbox", "DELETE FROM interimap_flags WHERE idx = ?"},
    {Sql::ClearSyncedFlags, "forget synchronized flags", "DELETE FROM interimap_flags WHERE idx = ? AND side = ?"},
};

#undef INTERIMAP_MAILBOX_COLUMNS

constexpr std::size_t kSqlCount = static_cast<std::size_t>(Sql::Count);
static_assert(std::size(kSql) == kSqlCount);
constexpr bool sql_table_in_order() {
  for (std::size_t i = 0; i < kSqlCount; ++i)
    if (static_cast<std::size_t>(kSql[i].id) != i) return false;
  return true;
}
static_assert(sql_table_in_order(), "kSql must list the statements in the order of enum Sql");

constexpr Sql by_side(Side side, Sql local, Sql remote) { return side == Side::Local ? local : remote; }

// HIGHESTMODSEQ is an unsigned 63-bit value (RFC 7162 section 7) in an
// SQLite signed 64-bit integer; the reference writes it with "%lld" and
// reads it with "%llu", i.e. bit for bit.
std::int64_t to_db(std::uint64_t modseq) { return std::bit_cast<std::int64_t>(modseq); }
std::uint64_t from_db(std::int64_t modseq) { return std::bit_cast<std::uint64_t>(modseq); }

// A name for error messages: the hierarchy delimiter (NUL) shown as "\0",
// the notation of list-mailbox.
std::string printable(std::string_view name) {
  std::string out;
  for (char c : name) {
    if (c == '\0')
      out += "\\0";
    else
      out += c;
  }
  return out;
}

// The reference's print_delimiter: "X" with \ and " escaped, or NIL.
std::string print_delimiter(std::optional<char> delimiter) {
  if (!delimiter) return "NIL";
  if (*delimiter == '\\' || *delimiter == '"') return fmt::format("\"\\{}\"", *delimiter);
  return fmt::format("\"{}\"", *delimiter);
}

// A MailboxRecord from columns 0-8 of INTERIMAP_MAILBOX_COLUMNS.
MailboxRecord read_mailbox(const detail::Query& q) {
  MailboxRecord record;
  record.idx = q.column_int64(0);
  record.name = q.column_blob(1);
  record.subscribed = q.column_int64(2) != 0;
  if (!q.column_is_null(3) && !q.column_is_null(6)) {
    MailboxState state;
    for (Side side : {Side::Local, Side::Remote}) {
      const int base = side == Side::Local ? 3 : 6;
      state[side] = SideState{q.column_u32(base), q.column_u32(base + 1), from_db(q.column_int64(base + 2))};
    }
    record.state = state;
  }
  return record;
}

}  // namespace

struct INTERIMAP_LOCAL StateDB::Impl {
  std::string path;
  detail::SqlitePtr db;
  // Declared after `db`: statements are finalized before the connection closes.
  std::array<detail::CachedStatement, kSqlCount> cache;
  bool schema_ready = false;
  bool private_copy = false;  // StateOptions::private_copy

  // Bumped by every statement that may change the file.  The lists a
  // watch loop reads on each poll are kept while it stays put: nobody
  // else writes (exclusive locking mode), so a poll that changes nothing
  // runs no query.
  std::uint64_t generation = 0;
  template <class T>
  struct Cached {
    std::uint64_t generation = UINT64_MAX;
    T value;
  };
  Cached<std::vector<MailboxRecord>> mailboxes, interrupted;
  Cached<std::vector<MailboxId>> pending_appends;
  // Returns the cached value, filling it with fill() when stale.
  template <class T, class F>
  const T& cached(Cached<T>& c, F&& fill) {
    if (c.generation != generation) {
      c.value = fill();
      c.generation = generation;
    }
    return c.value;
  }

  sqlite3* handle() const { return db.get(); }

  // Runs SQL without parameters or result rows.
  void exec(const char* sql, std::string_view what) {
    ++generation;
    const int rc = sqlite3_exec(handle(), sql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) detail::throw_sqlite_error(handle(), path, what, rc);
  }

  void require_schema() const {
    if (!schema_ready) throw std::logic_error("StateDB: ensure_schema() has not been called");
  }

  // Writes happen only inside a Transaction, so that nothing is committed
  // behind the sync engine's back: outside one, SQLite would commit each
  // statement at once, before the servers confirmed what it records.
  void require_transaction(std::string_view what) const {
    require_schema();
    if (sqlite3_get_autocommit(handle()) != 0)
      throw std::logic_error(fmt::format("StateDB: {}: outside a transaction", what));
  }

  // A use of a cached statement; the schema must be in place.
  detail::Query query(Sql id) {
    require_schema();
    const SqlSpec& spec = kSql[static_cast<std::size_t>(id)];
    return detail::Query(handle(), path, spec.what, spec.sql, cache[static_cast<std::size_t>(id)]);
  }

  // A use of a cached statement that writes.
  detail::Query write(Sql id) {
    require_transaction(kSql[static_cast<std::size_t>(id)].what);
    ++generation;
    return query(id);
  }

  [[noreturn]] void fail(const std::string& message) const { throw StateError(fmt::format("{}: {}", path, message)); }

  void require_state_row(std::int64_t changed, MailboxId idx) const {
    if (changed == 0) fail(fmt::format("mailbox {} has no state (init_state() first)", idx));
  }
};

namespace {

// Creates the file as the reference does: O_EXCL with mode 0600 (minus the
// umask), so that the database is never readable by others.  A file
// created meanwhile by someone else is fine: SQLite opens it next.
void create_database_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return;
    throw StateError(fmt::format("Can't create {}: {}", path, std::strerror(errno)));
  }
  ::close(fd);
}

}  // namespace

std::string StateDB::default_path(const std::optional<std::string>& database, std::string_view remote_host,
                                  const std::string& data_home) {
  const std::string name = database ? *database : fmt::format("{}.db", remote_host);
  try {
    return xdg_basedir("interimap", data_home, name);
  } catch (const Error& e) {
    throw StateError(e.what());
  }
}

StateDB::StateDB(std::string path, const StateOptions& options) : impl_(std::make_unique<Impl>()) {
  impl_->path = std::move(path);
  const std::string& file = impl_->path;
  if (options.private_copy) {
    open_private_copy(options);
    return;
  }

  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) {
    // The reference creates the file unless in long-lived mode (--watch),
    // where a missing database is an error rather than a fresh start.
    if (!options.create_if_missing)
      throw StateError(fmt::format("{}: No such database file (it is not created in --watch mode: "
                                   "run interimap once without --watch)",
                                   file));
    create_database_file(file);
  }

  sqlite3* raw = nullptr;
  // READWRITE without CREATE: the file exists now, or must.
  const int rc = sqlite3_open_v2(file.c_str(), &raw, SQLITE_OPEN_READWRITE, nullptr);
  impl_->db.reset(raw);  // owned even when open failed
  if (rc != SQLITE_OK) detail::throw_sqlite_error(raw, file, "cannot open database", rc);
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, static_cast<int>(options.busy_timeout.count()));

  // Lock before any network traffic so that a second interimap on the same
  // file fails at once.  In exclusive locking mode SQLite never releases a
  // lock it took: an empty exclusive transaction takes the EXCLUSIVE lock
  // now and keeps it until the connection closes.  (The reference gets a
  // RESERVED lock the same way, which it upgrades on its first write; ours
  // and its lock each other out either way.)
  impl_->exec("PRAGMA locking_mode = EXCLUSIVE", "set locking mode");
  // Off until the schema step: the version-0 upgrade drops and recreates
  // the table that the others reference.  ensure_schema() turns them on.
  impl_->exec("PRAGMA foreign_keys = OFF", "disable foreign keys");
  const int lock_rc = sqlite3_exec(raw, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr);
  if ((lock_rc & 0xff) == SQLITE_BUSY || (lock_rc & 0xff) == SQLITE_LOCKED)
    throw StateLockedError(
        fmt::format("{}: database is locked by another process (is another interimap running on it?)", file),
        lock_rc);
  if (lock_rc != SQLITE_OK) detail::throw_sqlite_error(raw, file, "lock database", lock_rc);
  // Reading the header validates the file now ("file is not a database")
  // rather than at the schema step.
  try {
    impl_->exec("SELECT COUNT(*) FROM sqlite_master", "read database");
    impl_->exec("COMMIT", "lock database");
  } catch (...) {
    sqlite3_exec(raw, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

void StateDB::open_private_copy(const StateOptions& options) {
  Impl& impl = *impl_;
  const std::string& file = impl.path;
  impl.private_copy = true;
  sqlite3* raw = nullptr;
  // URI filenames: differs_from_file() ATTACHes the file read-only.
  int rc = sqlite3_open_v2(":memory:", &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, nullptr);
  impl.db.reset(raw);
  if (rc != SQLITE_OK) detail::throw_sqlite_error(raw, file, "cannot open a private copy", rc);
  sqlite3_extended_result_codes(raw, 1);
  struct stat st {};
  if (::stat(file.c_str(), &st) == 0) {
    // Read-only: no lock is kept, no journal written, the file's bytes
    // and times stay as they are.  A writer's lock (another interimap)
    // makes the copy fail with SQLITE_BUSY: StateLockedError.
    sqlite3* src_raw = nullptr;
    rc = sqlite3_open_v2(file.c_str(), &src_raw, SQLITE_OPEN_READONLY, nullptr);
    detail::SqlitePtr src(src_raw);
    if (rc != SQLITE_OK) detail::throw_sqlite_error(src_raw, file, "cannot open database", rc);
    sqlite3_busy_timeout(src_raw, static_cast<int>(options.busy_timeout.count()));
    sqlite3_backup* backup = sqlite3_backup_init(raw, "main", src_raw, "main");
    if (backup == nullptr) detail::throw_sqlite_error(raw, file, "copy database", sqlite3_errcode(raw));
    rc = sqlite3_backup_step(backup, -1);
    sqlite3_backup_finish(backup);
    if (rc != SQLITE_DONE) {
      if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
        throw StateLockedError(
            fmt::format("{}: database is locked by another process (is another interimap running on it?)", file), rc);
      detail::throw_sqlite_error(src_raw, file, "copy database", rc);
    }
  } else if (!options.create_if_missing) {
    throw StateError(fmt::format("{}: No such database file (it is not created in --watch mode: "
                                 "run interimap once without --watch)",
                                 file));
  }
  impl.exec("PRAGMA foreign_keys = OFF", "disable foreign keys");
  impl.exec("SELECT COUNT(*) FROM sqlite_master", "read database");
}

bool StateDB::differs_from_file() {
  Impl& impl = *impl_;
  if (!impl.private_copy) throw std::logic_error("StateDB::differs_from_file: not a private copy");
  if (in_transaction()) throw std::logic_error("StateDB::differs_from_file: inside a transaction");
  struct stat st {};
  if (::stat(impl.path.c_str(), &st) != 0) return true;
  // file: URI, every byte but the unreserved ones and '/' percent-encoded
  // (RFC 3986; SQLite decodes them), read-only.
  std::string uri = "file:";
  for (unsigned char c : impl.path) {
    if (std::isalnum(c) != 0 || std::strchr("-._~/", c) != nullptr)
      uri += static_cast<char>(c);
    else
      uri += fmt::format("%{:02X}", c);
  }
  uri += "?mode=ro";
  {
    detail::CachedStatement stmt;
    detail::Query attach(impl.handle(), impl.path, "read database", "ATTACH DATABASE ? AS original", stmt);
    attach.bind_blob(1, uri);
    attach.execute();
  }
  struct Detach {
    Impl& impl;
    ~Detach() { sqlite3_exec(impl.handle(), "DETACH DATABASE original", nullptr, nullptr, nullptr); }
  } detach{impl};
  auto count = [&](const std::string& sql) {
    detail::CachedStatement stmt;
    detail::Query q(impl.handle(), impl.path, "compare database", sql.c_str(), stmt);
    return q.step() ? q.column_int64(0) : 0;
  };
  if (count("SELECT (SELECT user_version FROM main.pragma_user_version) != "
            "(SELECT user_version FROM original.pragma_user_version)") != 0)
    return true;
  auto schema = [](std::string_view db) {
    return fmt::format("SELECT type, name, tbl_name, sql FROM {}.sqlite_master", db);
  };
  if (count(fmt::format("SELECT COUNT(*) FROM ({} EXCEPT {})", schema("main"), schema("original"))) != 0 ||
      count(fmt::format("SELECT COUNT(*) FROM ({} EXCEPT {})", schema("original"), schema("main"))) != 0)
    return true;
  // The same tables on both sides: compare their rows both ways.
  std::vector<std::string> tables;
  {
    detail::CachedStatement stmt;
    detail::Query q(impl.handle(), impl.path, "compare database",
                    "SELECT name FROM main.sqlite_master WHERE type = 'table'", stmt);
    while (q.step()) tables.push_back(q.column_blob(0));
  }
  for (const auto& t : tables) {
    std::string quoted = "\"";
    for (char c : t) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
    quoted += '"';
    for (const auto& [a, b] : {std::pair("main", "original"), std::pair("original", "main")})
      if (count(fmt::format("SELECT COUNT(*) FROM (SELECT * FROM {0}.{2} EXCEPT SELECT * FROM {1}.{2})", a, b,
                            quoted)) != 0)
        return true;
  }
  return false;
}

StateDB::~StateDB() = default;

const std::string& StateDB::path() const noexcept { return impl_->path; }

bool StateDB::in_transaction() const { return sqlite3_get_autocommit(impl_->handle()) == 0; }

void StateDB::ensure_schema(std::optional<char> local_delimiter, std::optional<char> remote_delimiter,
                            const std::function<void(std::string_view)>& notice) {
  if (in_transaction()) throw std::logic_error("StateDB::ensure_schema: inside a transaction");
  if (local_delimiter.has_value() != remote_delimiter.has_value())
    throw std::invalid_argument("StateDB::ensure_schema: one namespace flat, the other hierarchical");
  Impl& impl = *impl_;

  // One-off statements: the schema is not ready for the cache yet.
  auto scalar = [&impl](const char* sql, std::string_view what) {
    detail::CachedStatement stmt;
    detail::Query q(impl.handle(), impl.path, what, sql, stmt);
    return q.step() ? std::optional<std::int64_t>(q.column_int64(0)) : std::nullopt;
  };

  // user_version: 0 when unset, i.e. a new file or a pre-0.5 database.
  const std::int64_t version = scalar("PRAGMA user_version", "read schema version").value_or(0);
  if (version > kDatabaseVersion)
    impl.fail(fmt::format("database version {} is newer than this interimap's ({})", version, kDatabaseVersion));

  if (version < kDatabaseVersion) {
    // All or nothing: a failed upgrade leaves the version-0 file as it was.
    impl.exec("BEGIN IMMEDIATE", "begin schema update");
    try {
      const bool has_tables = scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' LIMIT 1", "read schema").has_value();
      if (version == 0 && !has_tables) {
        if (notice) notice(fmt::format("Creating new schema in database file {}", impl.path));
        for (const char* sql : kCreateSchema) impl.exec(sql, "create schema");
      } else {
        if (notice) notice(fmt::format("Upgrading database version from {}", version));
        // Version 0 stored names with the server's delimiter: since 0.5
        // they hold NUL instead, which needs both sides to agree on it.
        if (local_delimiter && remote_delimiter && *local_delimiter != *remote_delimiter)
          impl.fail(fmt::format("Local and remote hierachy delimiters differ (local {}, remote {}), "
                                "refusing to update table `mailboxes`.",
                                print_delimiter(local_delimiter), print_delimiter(remote_delimiter)));
        impl.exec(kUpgradeCreate, "upgrade schema");
        {
          detail::CachedStatement stmt;
          detail::Query copy(impl.handle(), impl.path, "upgrade schema",
                             local_delimiter ? kUpgradeCopyHierarchical : kUpgradeCopyFlat, stmt);
          const char delimiter = local_delimiter.value_or('\0');
          if (local_delimiter) copy.bind_blob(1, std::string_view(&delimiter, 1));
          copy.execute();
        }
        impl.exec("DROP TABLE mailboxes", "upgrade schema");
        impl.exec("ALTER TABLE _tmp1_mailboxes RENAME TO mailboxes", "upgrade schema");
        if (scalar("PRAGMA foreign_key_check", "check foreign keys").has_value())
          impl.fail("Broken referential integrity! Refusing to commit changes.");
      }
      impl.exec("PRAGMA user_version = 1", "set schema version");
      impl.exec("COMMIT", "commit schema update");
    } catch (...) {
      ++impl.generation;
      sqlite3_exec(impl.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
  }
  // Our own addition (the reference ignores tables it does not know):
  // where each side's UIDNEXT stood before APPENDs whose APPENDUID may not
  // have been recorded (see set_pending_append).
  impl.exec("CREATE TABLE IF NOT EXISTS interimap_pending_append ("
            "idx INTEGER NOT NULL, side INTEGER NOT NULL CHECK (side IN (0, 1)), "
            "UIDNEXT UNSIGNED INT NOT NULL, PRIMARY KEY (idx, side))",
            "create table interimap_pending_append");
  // Also ours: the flags last synchronized of each mapped message of a side
  // without mod-sequences (change-tracking plain), to tell which side
  // changed them.  Empty for a pair that has mod-sequences on both sides.
  impl.exec("CREATE TABLE IF NOT EXISTS interimap_flags ("
            "idx INTEGER NOT NULL, side INTEGER NOT NULL CHECK (side IN (0, 1)), "
            "uid UNSIGNED INT NOT NULL, flags BLOB NOT NULL, PRIMARY KEY (idx, side, uid)) WITHOUT ROWID",
            "create table interimap_flags");
  // A no-op inside a transaction, hence after the COMMIT.
  impl.exec("PRAGMA foreign_keys = ON", "enable foreign keys");
  impl.schema_ready = true;
}

// ---- Transactions

StateDB::Transaction StateDB::begin() {
  impl_->require_schema();
  if (in_transaction()) throw std::logic_error("StateDB::begin: a transaction is already open");
  return Transaction(*this);
}

StateDB::Transaction::Transaction(StateDB& db) : db_(&db) {
  // IMMEDIATE takes the write lock now (we hold it anyway in exclusive
  // mode), as the reference's sqlite_use_immediate_transaction.
  db.impl_->exec("BEGIN IMMEDIATE", "begin transaction");
}

StateDB::Transaction::~Transaction() {
  // Not committed: an exception (or an early return) came between the
  // writes and the servers' confirmation, so they must not reach the file.
  // SQLite may already have rolled back on some errors (SQLITE_FULL...).
  if (open_ && db_->in_transaction()) {
    ++db_->impl_->generation;
    sqlite3_exec(db_->impl_->handle(), "ROLLBACK", nullptr, nullptr, nullptr);
  }
}

void StateDB::Transaction::commit() {
  if (!open_) throw std::logic_error("StateDB::Transaction::commit: transaction already ended");
  // On failure open_ stays true and the destructor rolls back.
  db_->impl_->exec("COMMIT", "commit");
  open_ = false;
}

void StateDB::Transaction::rollback() {
  if (!open_) throw std::logic_error("StateDB::Transaction::rollback: transaction already ended");
  open_ = false;
  if (db_->in_transaction()) db_->impl_->exec("ROLLBACK", "rollback");
}

// ---- Mailboxes

std::optional<MailboxRecord> StateDB::find_mailbox(std::string_view name) const {
  auto q = impl_->query(Sql::FindMailbox);
  q.bind_blob(1, name);
  if (!q.step()) return std::nullopt;
  return read_mailbox(q);  // at most one row: mailbox is UNIQUE
}

std::uint64_t StateDB::generation() const noexcept { return impl_->generation; }

std::vector<MailboxRecord> StateDB::mailboxes() const {
  return impl_->cached(impl_->mailboxes, [&] {
    std::vector<MailboxRecord> out;
    auto q = impl_->query(Sql::ListMailboxes);
    while (q.step()) out.push_back(read_mailbox(q));
    return out;
  });
}

MailboxId StateDB::add_mailbox(std::string_view name, bool subscribed) {
  // The CHECK (mailbox != '') compares with TEXT and lets an empty BLOB in.
  if (name.empty()) impl_->fail("add mailbox: empty mailbox name");
  auto q = impl_->write(Sql::AddMailbox);
  q.bind_blob(1, name).bind(2, subscribed ? 1 : 0).execute();
  return sqlite3_last_insert_rowid(impl_->handle());
}

void StateDB::set_subscribed(MailboxId idx, bool subscribed) {
  auto q = impl_->write(Sql::SetSubscribed);
  if (q.bind(1, subscribed ? 1 : 0).bind(2, idx).execute() == 0)
    impl_->fail(fmt::format("set subscribed: no mailbox {}", idx));
}

bool StateDB::delete_mailbox(MailboxId idx) {
  std::int64_t deleted = 0;
  for (Sql id : {Sql::DeleteSyncedFlags, Sql::DeleteMappings, Sql::DeleteLocal, Sql::DeleteRemote, Sql::DeleteMailbox}) {
    auto q = impl_->write(id);
    deleted = q.bind(1, idx).execute();
  }
  return deleted > 0;  // the last one: the mailboxes row
}

std::optional<std::string> StateDB::rename_conflict(std::string_view from, std::string_view to) const {
  if (find_mailbox(to)) return std::string(to);
  const std::string prefix = std::string(from) + '\0';
  std::vector<std::string> children;
  {
    auto q = impl_->query(Sql::ListChildren);
    q.bind(1, static_cast<std::int64_t>(prefix.size())).bind_blob(2, prefix);
    while (q.step()) children.push_back(q.column_blob(0));
  }
  for (const std::string& child : children) {
    // FROM\0REST -> TO\0REST
    std::string target = std::string(to) + child.substr(from.size());
    if (target != child && find_mailbox(target)) return target;
  }
  return std::nullopt;
}

std::size_t StateDB::rename_mailbox(std::string_view from, std::string_view to) {
  if (from.empty() || to.empty()) impl_->fail("rename mailbox: empty mailbox name");
  if (from == to) impl_->fail(fmt::format("rename mailbox: {} to itself", printable(from)));
  const std::string prefix = std::string(from) + '\0';
  // IMAP servers refuse it too; the children query would also catch the
  // renamed parent and rename it twice.
  if (to.starts_with(prefix))
    impl_->fail(fmt::format("rename mailbox: {} into its own child {}", printable(from), printable(to)));
  impl_->require_transaction("rename mailbox");
  if (auto existing = rename_conflict(from, to))
    throw MailboxExistsError(fmt::format("{}: Mailbox {} exists", impl_->path, printable(*existing)), *existing);

  std::int64_t renamed = 0;
  {
    auto q = impl_->write(Sql::RenameMailbox);
    renamed += q.bind_blob(1, to).bind_blob(2, from).execute();
  }
  {
    auto q = impl_->write(Sql::RenameChildren);
    renamed += q.bind_blob(1, to).bind(2, static_cast<std::int64_t>(prefix.size())).bind_blob(3, prefix).execute();
  }
  return static_cast<std::size_t>(renamed);
}

// ---- Per-side state

void StateDB::init_state(MailboxId idx, std::uint32_t local_uidvalidity, std::uint32_t remote_uidvalidity) {
  {
    auto q = impl_->write(Sql::InsertLocal);
    q.bind(1, idx).bind(2, local_uidvalidity).execute();
  }
  auto q = impl_->write(Sql::InsertRemote);
  q.bind(1, idx).bind(2, remote_uidvalidity).execute();
}

void StateDB::reset_state(MailboxId idx, std::uint32_t local_uidvalidity, std::uint32_t remote_uidvalidity) {
  for (Sql id : {Sql::DeleteMappings, Sql::ClearPendingAppends, Sql::DeleteLocal, Sql::DeleteRemote}) {
    auto q = impl_->write(id);
    q.bind(1, idx).execute();
  }
  init_state(idx, local_uidvalidity, remote_uidvalidity);
}

std::optional<MailboxState> StateDB::state(MailboxId idx) const {
  auto q = impl_->query(Sql::GetState);
  q.bind(1, idx);
  if (!q.step()) return std::nullopt;
  MailboxState state;
  state[Side::Local] = SideState{q.column_u32(0), q.column_u32(1), from_db(q.column_int64(2))};
  state[Side::Remote] = SideState{q.column_u32(3), q.column_u32(4), from_db(q.column_int64(5))};
  return state;
}

void StateDB::set_state(MailboxId idx, Side side, std::uint32_t uidnext, std::uint64_t highestmodseq) {
  auto q = impl_->write(by_side(side, Sql::SetStateLocal, Sql::SetStateRemote));
  impl_->require_state_row(q.bind(1, uidnext).bind(2, to_db(highestmodseq)).bind(3, idx).execute(), idx);
}

void StateDB::set_uidnext(MailboxId idx, Side side, std::uint32_t uidnext) {
  auto q = impl_->write(by_side(side, Sql::SetUidnextLocal, Sql::SetUidnextRemote));
  impl_->require_state_row(q.bind(1, uidnext).bind(2, idx).execute(), idx);
}

void StateDB::set_highestmodseq(MailboxId idx, Side side, std::uint64_t highestmodseq) {
  auto q = impl_->write(by_side(side, Sql::SetModseqLocal, Sql::SetModseqRemote));
  impl_->require_state_row(q.bind(1, to_db(highestmodseq)).bind(2, idx).execute(), idx);
}

// ---- Mappings

void StateDB::add_mapping(MailboxId idx, Mapping mapping) { add_mappings(idx, std::span<const Mapping>(&mapping, 1)); }

void StateDB::add_mappings(MailboxId idx, std::span<const Mapping> mappings) {
  auto q = impl_->write(Sql::AddMapping);
  for (const Mapping& m : mappings) {
    q.bind(1, idx).bind(2, m.local).bind(3, m.remote).execute();
    q.reset();
  }
}

bool StateDB::remove_mapping(MailboxId idx, Side side, std::uint32_t uid) {
  return remove_mappings(idx, side, std::span<const std::uint32_t>(&uid, 1)).empty();
}

std::vector<std::uint32_t> StateDB::remove_mappings(MailboxId idx, Side side, std::span<const std::uint32_t> uids) {
  std::vector<std::uint32_t> missing;
  auto q = impl_->write(by_side(side, Sql::RemoveByLocal, Sql::RemoveByRemote));
  for (std::uint32_t uid : uids) {
    if (q.bind(1, idx).bind(2, uid).execute() == 0) missing.push_back(uid);
    q.reset();
  }
  return missing;
}

std::optional<std::uint32_t> StateDB::lookup(MailboxId idx, Side side, std::uint32_t uid) const {
  auto q = impl_->query(by_side(side, Sql::LookupByLocal, Sql::LookupByRemote));
  q.bind(1, idx).bind(2, uid);
  if (!q.step()) return std::nullopt;
  return q.column_u32(0);  // at most one row: (idx,lUID) and (idx,rUID) are unique
}

std::vector<std::optional<std::uint32_t>> StateDB::lookup(MailboxId idx, Side side,
                                                          std::span<const std::uint32_t> uids) const {
  std::vector<std::optional<std::uint32_t>> out;
  out.reserve(uids.size());
  auto q = impl_->query(by_side(side, Sql::LookupByLocal, Sql::LookupByRemote));
  for (std::uint32_t uid : uids) {
    q.bind(1, idx).bind(2, uid);
    out.push_back(q.step() ? std::optional<std::uint32_t>(q.column_u32(0)) : std::nullopt);
    q.reset();
  }
  return out;
}

std::uint64_t StateDB::mapping_count(MailboxId idx) const {
  auto q = impl_->query(Sql::CountMappings);
  q.bind(1, idx);
  q.step();  // COUNT(*) always returns one row
  return static_cast<std::uint64_t>(q.column_int64(0));
}

void StateDB::for_each_mapping(MailboxId idx, Side by, UidOrder order,
                               const std::function<bool(const Mapping&)>& fn) const {
  const bool ascending = order == UidOrder::Ascending;
  const Sql id = by == Side::Local ? (ascending ? Sql::MappingsByLocalAsc : Sql::MappingsByLocalDesc)
                                   : (ascending ? Sql::MappingsByRemoteAsc : Sql::MappingsByRemoteDesc);
  auto q = impl_->query(id);
  q.bind(1, idx);
  while (q.step())
    if (!fn(Mapping{q.column_u32(0), q.column_u32(1)})) break;
}

std::vector<MailboxRecord> StateDB::interrupted_mailboxes() const {
  return impl_->cached(impl_->interrupted, [&] {
    std::vector<MailboxRecord> out;
    auto q = impl_->query(Sql::InterruptedMailboxes);
    while (q.step()) out.push_back(read_mailbox(q));
    return out;
  });
}

std::vector<Mapping> StateDB::interrupted_mappings(MailboxId idx) const {
  std::vector<Mapping> out;
  auto q = impl_->query(Sql::InterruptedMappings);
  q.bind(1, idx);
  while (q.step()) out.push_back(Mapping{q.column_u32(0), q.column_u32(1)});
  return out;
}

// ---- Appends in flight

void StateDB::set_pending_append(MailboxId idx, Side target, std::uint32_t uidnext) {
  auto q = impl_->write(Sql::SetPendingAppend);
  q.bind(1, idx).bind(2, static_cast<std::int64_t>(index(target))).bind(3, uidnext).execute();
}

std::vector<std::pair<Side, std::uint32_t>> StateDB::pending_appends(MailboxId idx) const {
  std::vector<std::pair<Side, std::uint32_t>> out;
  auto q = impl_->query(Sql::PendingAppends);
  q.bind(1, idx);
  while (q.step()) out.emplace_back(q.column_int64(0) == 0 ? Side::Local : Side::Remote, q.column_u32(1));
  return out;
}

std::vector<MailboxId> StateDB::mailboxes_with_pending_appends() const {
  return impl_->cached(impl_->pending_appends, [&] {
    std::vector<MailboxId> out;
    auto q = impl_->query(Sql::PendingAppendMailboxes);
    while (q.step()) out.push_back(q.column_int64(0));
    return out;
  });
}

void StateDB::clear_pending_appends(MailboxId idx) {
  auto q = impl_->write(Sql::ClearPendingAppends);
  q.bind(1, idx).execute();
}

// ---- Flags last synchronized

std::map<std::uint32_t, std::string> StateDB::synced_flags(MailboxId idx, Side side) const {
  std::map<std::uint32_t, std::string> out;
  auto q = impl_->query(Sql::SyncedFlags);
  q.bind(1, idx).bind(2, static_cast<std::int64_t>(index(side)));
  while (q.step()) out.emplace(q.column_u32(0), q.column_blob(1));
  return out;
}

void StateDB::set_synced_flags(MailboxId idx, Side side, std::uint32_t uid, std::string_view flags) {
  auto q = impl_->write(Sql::SetSyncedFlags);
  q.bind(1, idx).bind(2, static_cast<std::int64_t>(index(side))).bind(3, uid).bind_blob(4, flags).execute();
}

void StateDB::clear_synced_flags(MailboxId idx, Side side) {
  auto q = impl_->write(Sql::ClearSyncedFlags);
  q.bind(1, idx).bind(2, static_cast<std::int64_t>(index(side))).execute();
}

void StateDB::forget_synced_flags(MailboxId idx, Side side, std::uint32_t uid) {
  auto q = impl_->write(Sql::ForgetSyncedFlags);
  q.bind(1, idx).bind(2, static_cast<std::int64_t>(index(side))).bind(3, uid).execute();
}

}  // namespace interimap
