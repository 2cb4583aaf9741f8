// What every unit of the sync engine shares: the settings, the logger,
// both connections, the database and its open transaction, the mailbox
// names, and the helper thread that drives both sides at once.
//
// The engine's units (doc/design.md "The sync engine's units"), each a
// pair of files in this folder, in dependency order:
//   flags, names        pure helpers (unit-tested)
//   both_sides          the two-sided step runner
//   context             this header
//   settings            SyncSettings::from_config: the reference's option checks
//   mailbox_list        LIST, subscriptions, CREATE; --delete, --rename
//   guard               mass deletions and self-sync refused before any change
//   box, change_tracker a mailbox being synchronized; how one side tells
//                       what changed since the last clean state (QRESYNC)
//   known               known messages: plan (expunges, flags) and apply
//   transfer            new messages: FETCH -> APPEND streaming, crossing
//   recovery            recover (unrecorded copies), resume, --repair
//   mailbox_sync        the per-mailbox driver and the pass over mailboxes
//   syncsession         the session: open, run, close
#pragma once

#include <interimap/connection.hpp>
#include <interimap/log.hpp>
#include <interimap/statedb.hpp>

#include "sync/append_journal.hpp"
#include <interimap/syncsession.hpp>

#include "sync/both_sides.hpp"
#include "sync/names.hpp"
#include "sync/shared_db.hpp"

#include <array>
#include <memory>
#include <string>
#include <string_view>

namespace interimap::detail::sync {

inline constexpr std::array<Side, 2> kSides = {Side::Local, Side::Remote};

// One value per side, indexed by index(Side).
template <class T>
using PerSide = std::array<T, 2>;

struct Context {
  Context(SyncSettings s, Logger& l) : settings(std::move(s)), log(l) {}

  SyncSettings settings;
  Logger& log;
  MailboxNames names;
  PerSide<std::unique_ptr<Connection>> connections;
  // The state database, shared with the other workers of a pass
  // (sync/shared_db.hpp): `db->method(...)` waits for them.
  DbHandle db;
  // The copies in flight, next to the database (recover()); shared too.
  std::shared_ptr<AppendJournal> journal = std::make_shared<AppendJournal>();
  BothSides both;  // both halves of each two-sided step
  // Each side's change tracking, resolved by open() (never Auto).
  PerSide<ChangeTracking> tracking = {ChangeTracking::Qresync, ChangeTracking::Qresync};

  Connection& connection(Side side) { return *connections[index(side)]; }
  // Uses this database (this Context's own handle on it).
  void attach_db(std::shared_ptr<SharedDb> shared) { db = DbHandle(std::move(shared), this); }
  bool debugging() const { return log.debug() > 0; }

  // ---- Log lines, shaped as the reference's.
  // "SIDE(MAILBOX): text", the mailbox in database form.
  void info(Side side, std::string_view mailbox, std::string_view text) {
    log.log(LogLevel::Info, to_string(side), names.wire(side, mailbox), text);
  }
  void warning(Side side, std::string_view mailbox, std::string_view text) {
    log.log(LogLevel::Warning, to_string(side), names.wire(side, mailbox), text);
  }
  // The reference's msg(): shown even with --quiet.
  void notice(std::string_view component, std::string_view text) { log.notice(component, {}, text); }
  void debug(std::string_view component, std::string_view text) { log.log(LogLevel::Debug, component, {}, text); }
  // Ends the run with "COMPONENT: ERROR: text".
  [[noreturn]] static void fail(std::string_view component, const std::string& text) {
    throw SyncError(std::string(component), text);
  }

  // ---- The database transaction: one open at a time, committed at the
  // reference's commit points, each after the servers confirmed what it
  // records (doc/design.md "Reliability invariants").
  // The transaction holds the shared database for this worker until it
  // ends (sync/shared_db.hpp).
  StateDB& write() {
    if (!transaction_) {
      StateDB& d = db.acquire();
      try {
        // new T(prvalue): guaranteed elision, Transaction is not movable.
        transaction_.reset(new StateDB::Transaction(d.begin()));
      } catch (...) {
        db.release();
        throw;
      }
    }
    return db.unshared();
  }
  void commit() {
    if (!transaction_) return;
    try {
      transaction_->commit();
    } catch (...) {
      rollback();
      throw;
    }
    transaction_.reset();
    db.release();
  }
  // Forgets what was not committed (what the servers did not confirm).
  void rollback() noexcept {
    if (!transaction_) return;
    transaction_.reset();
    db.release();
  }

 private:
  std::unique_ptr<StateDB::Transaction> transaction_;
};

}  // namespace interimap::detail::sync
