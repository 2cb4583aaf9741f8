// The synchronization engine of interimap(1): two Connections ([local] and
// [remote]), the StateDB, and the algorithm of interimap 0.5.7's man page
// (DESCRIPTION, steps 1 to 4), plus --repair, --delete and --rename.
//
// Life cycle:
//
//   SyncSession s(config, options, logger);
//   s.open();    // database (locked), both connections, delimiters, schema
//   s.run();     // one pass; may be called again (--watch)
//   s.close();   // LOGOUT both
//
// Performance (DESIGN.md "Data flow and performance"): both servers are
// driven at once (one thread per side for connecting, listing and
// selecting; new messages stream from one side's FETCH to the other side's
// APPEND through a bounded queue), commands are pipelined by the Mailbox
// layer, and a pass where nothing changed costs one LIST (with LIST-STATUS)
// per server and no SELECT.
//
// Reliability (DESIGN.md "Reliability invariants"): the database records a
// mapping only after the APPENDUID that gave it, forgets one only after the
// EXPUNGE on both sides, and records a mailbox's UIDNEXT/HIGHESTMODSEQ only
// once every change below them has been propagated.  A crash at any point
// is finished by the next run ("Resuming interrupted sync for NAME").
// Unlike the reference, a crash between a server's execution of an APPEND
// and the commit of its mappings creates no duplicate either: the target's
// UIDNEXT is committed first (StateDB::set_pending_append), and the next
// run pairs the unrecorded copies with their sources by body digest.
//
// Errors: a SyncError (or any interimap::Error) ends the run; the caller
// prints it with its component() as the log line's name, and exits 1.
// Threading: a SyncSession is used by one thread at a time; it starts and
// joins its own helper threads.
#pragma once

#include <interimap/config.hpp>
#include <interimap/connection.hpp>
#include <interimap/error.hpp>
#include <interimap/log.hpp>
#include <interimap/statedb.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace interimap {

// An error that ends the run, with the component the reference names in
// its "NAME: ERROR: MESSAGE" line: "local", "remote", "database", or ""
// (no name).  what() is "NAME: MESSAGE" (MESSAGE alone without a name).
class SyncError : public Error {
 public:
  using Error::Error;
};

enum class SyncMode {
  Sync,    // the default: synchronize the mailbox list, then the messages
  Repair,  // --repair: full comparison of every UID and flag list
  Delete,  // --delete MAILBOX...
  Rename,  // --rename SOURCE DEST
};

// Which of the three places --delete and --rename act on (--target).
struct SyncTargets {
  bool local = true;
  bool remote = true;
  bool database = true;
};

struct SyncOptions {
  SyncMode mode = SyncMode::Sync;
  // MAILBOX arguments, with the local hierarchy delimiter: the mailboxes to
  // synchronize or repair (empty: those the list-mailbox option selects),
  // the mailboxes to delete, or SOURCE and DEST for Rename.  "INBOX" in
  // any case means INBOX.
  std::vector<std::string> mailboxes;
  // --target; all three by default.  Only meaningful for Delete and Rename.
  SyncTargets targets;
  // --quiet: no informational lines.  Default false.
  bool quiet = false;
  // --debug: 0 none, 1 protocol traces, 2 with credentials.
  int debug = 0;
  // Long-lived mode (--watch): the database is not created when missing
  // (as the reference), and network sockets get SO_KEEPALIVE.  Default false.
  bool watch = false;
  // --notify: LIST-STATUS is not required (without it, Connection::list
  // pipelines one STATUS per mailbox; the watch loop learns about changes
  // through NOTIFY).  Default false.
  bool notify = false;
  // Checked between mailboxes: once it returns true, run() returns without
  // starting another one (the mailboxes done are committed; the others
  // wait for the next run).  For SIGTERM and friends.  Default: none.
  std::function<bool()> interrupted;
};

class SyncSession {
 public:
  // Reads and checks the configuration (the reference's refusals: unknown
  // options in the default, [local] and [remote] sections, bad values,
  // list-mailbox syntax), computes the database path, and configures the
  // logger (log-prefix, logfile, quiet, debug).  Nothing is opened.  Throws
  // ConfigError.  The config and the logger must outlive the session.
  SyncSession(const Config& config, SyncOptions options, Logger& logger);
  ~SyncSession();
  SyncSession(const SyncSession&) = delete;
  SyncSession& operator=(const SyncSession&) = delete;

  // Opens and locks the database (StateLockedError at once when another
  // process holds it), opens both connections concurrently, checks the
  // required capabilities (LIST-EXTENDED, UIDPLUS, LIST-STATUS unless
  // notify), ENABLEs QRESYNC, learns both hierarchy delimiters and creates
  // or upgrades the schema.  Throws SyncError, StateError, NetworkError,
  // ProtocolError, CommandError.
  void open();

  // One complete pass per the options' mode.  Callable again on the same
  // open session (the watch loop): a pass where nothing changed costs one
  // LIST per server and no SELECT.
  void run();

  // LOGOUT on both connections (the reference then logs each side's
  // "IMAP traffic" line); never throws.  The database stays locked until
  // destruction.
  void close() noexcept;

  Connection& connection(Side side);
  StateDB& database();
  // The database file.
  const std::string& database_path() const;
  // The mailboxes (database form: NUL as hierarchy delimiter, no
  // list-reference) the last run() synchronized, sorted.
  const std::vector<std::string>& mailboxes() const;
  // A database-form name as on one server (delimiter, list-reference), or
  // for log lines (Side omitted: the local delimiter, no reference).
  std::string wire_name(Side side, std::string_view name) const;
  std::string pretty_name(std::string_view name) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace interimap
