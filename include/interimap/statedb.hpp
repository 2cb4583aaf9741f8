// The SQLite state database of interimap(1): which local UID is which remote
// UID, and what each server's mailbox looked like after the last sync.
//
// The file is the reference's, byte for byte in schema (interimap 0.5.7,
// `PRAGMA user_version = 1`): a database written by the reference continues
// under this class and the other way round.
//
//   mailboxes(idx, mailbox, subscribed)   one row per known mailbox; the name
//                                         is a BLOB whose hierarchy delimiter
//                                         is stored as a NUL byte
//   local(idx, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ)    what was synced, per
//   remote(idx, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ)   side; 0/0 initially
//   mapping(idx, lUID, rUID)              one row per replicated message
//
// Invariant (doc/design.md "Reliability invariants"): the sync engine commits
// a Transaction only after the servers confirmed what it records: a mapping
// after the APPEND's APPENDUID, a removed mapping after the EXPUNGE on both
// sides, a new UIDNEXT/HIGHESTMODSEQ after every change below it has been
// propagated.  A crash before the commit then loses nothing: the next run
// sees the old state and redoes (or, for interrupted syncs, finishes) the work.
//
// Not thread-safe: one StateDB per thread, one process per file (the file is
// locked exclusively for the lifetime of the object).
#pragma once

#include <interimap/export.hpp>

#include <interimap/error.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <map>
#include <utility>
#include <vector>

namespace interimap {

// The two servers.  Per-side data lives in std::array<T, 2> indexed by
// index(side), so that the two-sided algorithm is written once.
enum class Side : std::uint8_t { Local = 0, Remote = 1 };

constexpr Side other(Side side) noexcept { return side == Side::Local ? Side::Remote : Side::Local; }
constexpr std::size_t index(Side side) noexcept { return static_cast<std::size_t>(side); }
// "local" or "remote": the reference's component names in log lines.
constexpr std::string_view to_string(Side side) noexcept { return side == Side::Local ? "local" : "remote"; }

// A database failure.  what() names the database file and, for SQLite
// errors, the operation and SQLite's own message:
// "/home/u/.local/share/interimap/host.db: add mapping: UNIQUE constraint failed: mapping.idx, mapping.rUID".
class INTERIMAP_API StateError : public Error {
 public:
  explicit StateError(const std::string& message, int sqlite_code = 0) : Error(message), sqlite_code_(sqlite_code) {}
  // SQLite's extended result code, or 0 when the error did not come from SQLite.
  int sqlite_code() const noexcept { return sqlite_code_; }

 private:
  int sqlite_code_;
};

// Another process holds the database (an interimap already running on it).
// Raised by the constructor within StateOptions::busy_timeout, before any
// network traffic, so that the second process fails at once.
class INTERIMAP_API StateLockedError : public StateError {
 public:
  using StateError::StateError;
};

// rename_mailbox() would overwrite an existing mailbox.  mailbox() is the
// conflicting name in the database's form (NUL as hierarchy delimiter), for
// the caller to print with the server's delimiter.
class INTERIMAP_API MailboxExistsError : public StateError {
 public:
  MailboxExistsError(const std::string& message, std::string mailbox)
      : StateError(message), mailbox_(std::move(mailbox)) {}
  const std::string& mailbox() const noexcept { return mailbox_; }

 private:
  std::string mailbox_;
};

struct StateOptions {
  // Create the file (mode 0600, O_EXCL) when it does not exist.  Default
  // true.  The reference never creates it in long-lived mode (--watch): the
  // caller passes false then, and a missing file is a StateError.
  bool create_if_missing = true;
  // How long to wait for another process's lock before StateLockedError.
  // Default 250 ms, as the reference.
  std::chrono::milliseconds busy_timeout{250};
  // Work on a private copy in memory (interimap --dry-run): the file is
  // opened read-only just long enough to copy it (SQLite's backup API;
  // StateLockedError when another process holds it), never locked for
  // writing, created or written; every write goes to the copy and is
  // gone with the object.  A missing file is an empty database (unless
  // !create_if_missing).  Default false.
  bool private_copy = false;
};

// mailboxes.idx: the key of a mailbox in every table.
using MailboxId = std::int64_t;

// One side's row in `local` or `remote`.
struct SideState {
  std::uint32_t uidvalidity = 0;   // > 0; never changes for a mailbox
  std::uint32_t uidnext = 0;       // 0 until the first sync completes
  std::uint64_t highestmodseq = 0; // 0 until the first sync completes
  friend bool operator==(const SideState&, const SideState&) = default;
};

// Both sides' rows of a mailbox.
struct MailboxState {
  std::array<SideState, 2> sides;
  SideState& operator[](Side side) { return sides[index(side)]; }
  const SideState& operator[](Side side) const { return sides[index(side)]; }
  friend bool operator==(const MailboxState&, const MailboxState&) = default;
};

// A row of `mailboxes`, with its state when both `local` and `remote` hold
// one (a mailbox is known before its first SELECT, without state).
struct MailboxRecord {
  MailboxId idx = 0;
  std::string name;  // NUL as hierarchy delimiter, no list-reference
  bool subscribed = false;
  std::optional<MailboxState> state;
};

// A row of `mapping`: the same message on both servers.
struct Mapping {
  std::uint32_t local = 0;   // lUID, > 0
  std::uint32_t remote = 0;  // rUID, > 0
  std::uint32_t uid(Side side) const noexcept { return side == Side::Local ? local : remote; }
  friend bool operator==(const Mapping&, const Mapping&) = default;
};

enum class UidOrder { Ascending, Descending };

class INTERIMAP_API StateDB {
 public:
  class Transaction;

  // The reference's database path: the `database` option (default section)
  // when given, else HOST.db where HOST is the [remote] section's host
  // option ("localhost" by default, hence localhost.db for type=tunnel).  A
  // relative path is taken under DATA_HOME/interimap, where DATA_HOME is
  // $XDG_DATA_HOME or ~/.local/share (config.hpp's xdg_data_home()); that
  // directory must exist, and DATA_HOME/interimap is created with mode 0700
  // when missing.  An absolute path is returned as is, creating nothing.
  // Throws StateError ("No such directory: DIR", "Couldn't create DIR: ...").
  static std::string default_path(const std::optional<std::string>& database, std::string_view remote_host,
                                  const std::string& data_home);

  // Opens the database at `path` (creating an empty file with mode 0600 when
  // missing, per options), read-write, and locks it at once: SQLite's
  // exclusive locking mode, held until destruction.  The schema is not
  // touched: call ensure_schema() next, once the hierarchy delimiters are
  // known.  Throws StateLockedError when another process holds the file,
  // StateError otherwise ("Can't create PATH: ERRNO" as the reference).
  explicit StateDB(std::string path, const StateOptions& options = {});
  ~StateDB();
  StateDB(const StateDB&) = delete;
  StateDB& operator=(const StateDB&) = delete;

  const std::string& path() const noexcept;
  // With StateOptions::private_copy: whether the copy now differs from
  // the file (schema, user_version or any row of any table), i.e. whether
  // a real run would have written the file; a missing file differs.  The
  // file is read again, read-only.  std::logic_error without a private
  // copy or inside a Transaction; StateError when it cannot be read.
  bool differs_from_file();

  // Creates the schema in an empty database, or upgrades a version-0 one
  // (interimap < 0.5, mailbox names as TEXT with the real delimiter) by
  // replacing the local delimiter with NUL, then turns foreign keys on.
  // A no-op at version 1.  `notice`, when set, receives the line the
  // reference logs (with no component name) before the step:
  //   "Creating new schema in database file PATH"
  //   "Upgrading database version from 0"
  // Both delimiters are nullopt for flat namespaces; one alone is a
  // std::invalid_argument (the caller refuses that mix before).  Throws
  // StateError, the database untouched, when the upgrade needs the
  // delimiters and they differ ("Local and remote hierachy delimiters differ
  // (local "/", remote "."), refusing to update table `mailboxes`.", the
  // reference's wording, typo included), when the result breaks referential
  // integrity ("Broken referential integrity! Refusing to commit changes.",
  // logged by the reference under the name "database"), or when the file's
  // user_version is newer than 1.  Must be called outside a Transaction and
  // before any other method below.
  void ensure_schema(std::optional<char> local_delimiter, std::optional<char> remote_delimiter,
                     const std::function<void(std::string_view)>& notice = {});

  // Starts a write transaction (BEGIN IMMEDIATE).  Every mutating method
  // below requires one (std::logic_error otherwise), so that nothing reaches
  // the file before the caller decides the servers confirmed it.  One at a
  // time (std::logic_error when one is open).
  [[nodiscard]] Transaction begin();
  bool in_transaction() const;
  // Changes whenever the file may have changed through this object (any
  // write, commit or rollback): a key for caches of what it returned.
  std::uint64_t generation() const noexcept;

  // ---- Mailboxes.  Names are raw bytes: NUL for the hierarchy delimiter.

  // The mailbox called `name`, or nullopt.  (The reference's db_get_mailbox_idx.)
  std::optional<MailboxRecord> find_mailbox(std::string_view name) const;
  // Every mailbox, by idx.
  std::vector<MailboxRecord> mailboxes() const;
  // Adds a mailbox without state and returns its idx.  StateError if the
  // name exists or is empty.  The reference then logs
  // "database: Created mailbox NAME" (NAME with the local delimiter).
  MailboxId add_mailbox(std::string_view name, bool subscribed);
  void set_subscribed(MailboxId idx, bool subscribed);
  // Deletes the mailbox's rows from mapping, local, remote and mailboxes (in
  // that order, for the foreign keys).  Not recursive: children stay, as
  // IMAP DELETE leaves them.  Returns false when there was no such mailbox.
  // The reference then commits and logs "database: Removed mailbox NAME".
  bool delete_mailbox(MailboxId idx);
  // Renames `from` to `to` and, recursively, every mailbox whose name starts
  // with `from` + NUL (their children, which IMAP RENAME moves too); the
  // children are renamed even when `from` itself is not in the database.
  // Returns the number of rows renamed; the reference logs
  // "database: Renamed mailbox FROM to TO" only when it is > 0.  Throws
  // MailboxExistsError when `to` (or a child's new name) exists, and
  // StateError when from == to, either is empty, or `to` is a descendant of
  // `from`; the database is then unchanged.
  std::size_t rename_mailbox(std::string_view from, std::string_view to);
  // The name that rename_mailbox(from, to) would overwrite, if any: `to`, or
  // a child's new name.  Lets the caller refuse before renaming on the
  // servers, as the reference does ("Mailbox TO exists. Run `interimap
  // --target=database --delete TO` to delete.", under the name "database").
  std::optional<std::string> rename_conflict(std::string_view from, std::string_view to) const;

  // ---- Per-side state.

  // Inserts the mailbox's `local` and `remote` rows: UIDVALIDITY as given
  // (> 0), UIDNEXT 0, HIGHESTMODSEQ 0, as the reference does on the first
  // SELECT of a new mailbox.  StateError if they exist.
  void init_state(MailboxId idx, std::uint32_t local_uidvalidity, std::uint32_t remote_uidvalidity);
  // After a UIDVALIDITY change (our addition, the reference stops there):
  // forgets the mailbox's mappings and appends in flight, and starts its
  // state again as init_state() does.  The flags recorded per side
  // (interimap_flags) stay.  Needs a Transaction.
  void reset_state(MailboxId idx, std::uint32_t local_uidvalidity, std::uint32_t remote_uidvalidity);
  // Both rows, or nullopt when the mailbox has no state yet.
  std::optional<MailboxState> state(MailboxId idx) const;
  // Record that every change below `uidnext` and `highestmodseq` on `side`
  // has been propagated.  StateError when the mailbox has no state.
  // HIGHESTMODSEQ is stored as SQLite's signed 64-bit integer (values above
  // 2^63 - 1 wrap and read back unchanged, as in the reference).
  void set_state(MailboxId idx, Side side, std::uint32_t uidnext, std::uint64_t highestmodseq);
  void set_uidnext(MailboxId idx, Side side, std::uint32_t uidnext);
  void set_highestmodseq(MailboxId idx, Side side, std::uint64_t highestmodseq);

  // ---- Mappings.

  // StateError when either UID is 0 or already mapped in that mailbox, or
  // when the mailbox does not exist.
  void add_mapping(MailboxId idx, Mapping mapping);
  void add_mappings(MailboxId idx, std::span<const Mapping> mappings);
  // Removes the mapping whose UID on `side` is `uid`; false if none.  (The
  // reference logs "database: WARNING: Can't delete (idx,lUID) = (IDX,UID)"
  // when it finds none.)
  bool remove_mapping(MailboxId idx, Side side, std::uint32_t uid);
  // Removes several; returns the UIDs that had no mapping, in input order.
  std::vector<std::uint32_t> remove_mappings(MailboxId idx, Side side, std::span<const std::uint32_t> uids);
  // The UID on other(side) of the message whose UID on `side` is `uid`.
  std::optional<std::uint32_t> lookup(MailboxId idx, Side side, std::uint32_t uid) const;
  // lookup() for each UID, in input order.
  std::vector<std::optional<std::uint32_t>> lookup(MailboxId idx, Side side,
                                                   std::span<const std::uint32_t> uids) const;
  std::uint64_t mapping_count(MailboxId idx) const;
  // Calls fn on each mapping of the mailbox ordered by the UID on `by`,
  // streaming from SQLite (nothing is loaded at once), until fn returns
  // false.  fn must not modify `mapping` and must not call for_each_mapping
  // with the same `by` and `order` (std::logic_error); other calls are fine.
  void for_each_mapping(MailboxId idx, Side by, UidOrder order, const std::function<bool(const Mapping&)>& fn) const;

  // ---- Interrupted syncs: mappings at or above the recorded UIDNEXT on
  // either side (messages appended, then a crash before set_state()).

  // The mailboxes (with their state) that have such mappings, by idx.  The
  // reference logs "Resuming interrupted sync for NAME" for each it resumes.
  std::vector<MailboxRecord> interrupted_mailboxes() const;
  // Such mappings of one mailbox, by lUID.
  std::vector<Mapping> interrupted_mappings(MailboxId idx) const;

  // ---- Appends in flight (our addition: table interimap_pending_append,
  // which the reference ignores).  A crash after the server executed an
  // APPEND but before its APPENDUID was recorded leaves copies the mapping
  // does not know; the sync engine records here, committed before the
  // APPEND, where the target's UIDNEXT stood, so that the next run can pair
  // the unmapped messages at or above it with their sources instead of
  // copying them again.

  // Records `uidnext` for (idx, target) unless a row exists (the oldest
  // one is the one that bounds the unrecorded copies).  Needs a Transaction.
  void set_pending_append(MailboxId idx, Side target, std::uint32_t uidnext);
  // The rows of a mailbox, local first.
  std::vector<std::pair<Side, std::uint32_t>> pending_appends(MailboxId idx) const;
  // The mailboxes that have such rows, by idx (one query for a whole pass).
  std::vector<MailboxId> mailboxes_with_pending_appends() const;
  // Forgets them (once every APPEND's mapping is recorded).  Needs a Transaction.
  void clear_pending_appends(MailboxId idx);

  // ---- Flags last synchronized (our addition: table interimap_flags, which
  // the reference ignores).  For a side without mod-sequences (interimap's
  // change-tracking plain): the flags each mapped message had when the
  // last run ended, in flag_string form, so that a difference tells that
  // side changed them.
  std::map<std::uint32_t, std::string> synced_flags(MailboxId idx, Side side) const;
  // Needs a Transaction.
  void set_synced_flags(MailboxId idx, Side side, std::uint32_t uid, std::string_view flags);
  void forget_synced_flags(MailboxId idx, Side side, std::uint32_t uid);
  void clear_synced_flags(MailboxId idx, Side side);

 private:
  void open_private_copy(const StateOptions& options);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A write transaction: BEGIN IMMEDIATE on construction, ROLLBACK on
// destruction unless commit() succeeded.  Commit only after the servers
// confirmed what the transaction records (see the invariant above): an
// exception between the IMAP command and the commit then rolls it back.
class INTERIMAP_API StateDB::Transaction {
 public:
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  // COMMIT.  Throws StateError (the destructor then rolls back) or
  // std::logic_error when already committed or rolled back.
  void commit();
  // ROLLBACK now.  std::logic_error when already committed or rolled back.
  void rollback();

 private:
  friend class StateDB;
  explicit Transaction(StateDB& db);
  StateDB* db_;
  bool open_ = true;
};

}  // namespace interimap
