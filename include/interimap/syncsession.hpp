// The synchronization engine of interimap(1): two Connections ([local] and
// [remote]), the StateDB, and the algorithm of interimap 0.5.7's man page
// (DESCRIPTION, steps 1 to 4), plus --repair, --delete and --rename.
//
// Life cycle:
//
//   SyncSettings settings = SyncSettings::from_config(config);
//   settings.configure_logger(logger);   // log-prefix, logfile
//   SyncSession s(std::move(settings), logger);
//   s.open();    // database (locked), both connections, delimiters, schema
//   s.run();     // one pass; may be called again (--watch)
//   s.close();   // LOGOUT both
//
// Performance (doc/design.md "Data flow and performance"): both servers are
// driven at once (one thread per side for connecting, listing and
// selecting; new messages stream from one side's FETCH to the other side's
// APPEND through a bounded queue), commands are pipelined by the Mailbox
// layer, and a pass where nothing changed costs one LIST (with LIST-STATUS)
// per server and no SELECT.
//
// Reliability (doc/design.md "Reliability invariants"): the database records a
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

#include <interimap/export.hpp>

#include <interimap/config.hpp>
#include <interimap/connection.hpp>
#include <interimap/error.hpp>
#include <interimap/log.hpp>
#include <interimap/statedb.hpp>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace interimap {

// An error that ends the run, with the component the reference names in
// its "NAME: ERROR: MESSAGE" line: "local", "remote", "database", or ""
// (no name).  what() is "NAME: MESSAGE" (MESSAGE alone without a name).
class INTERIMAP_API SyncError : public Error {
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

// How one side tells what changed among the messages already synchronized
// (`change-tracking` in [local] / [remote]):
//  - Qresync: RFC 7162 QRESYNC, the reference's algorithm (a SELECT brings
//    the expunges and flag changes since the last run);
//  - Condstore: RFC 7162 CONDSTORE without QRESYNC (Gmail): flag changes
//    from UID FETCH (CHANGEDSINCE), expunges from the message count and,
//    when it does not add up, the UID list (UID SEARCH);
//  - Plain: neither (Microsoft 365): the flags of every known message are
//    read each run and compared with those recorded at the end of the last
//    one; a missing UID was expunged;
//  - Auto (the default): the best the server advertises.
enum class ChangeTracking { Auto, Qresync, Condstore, Plain };

// The mass-deletion guard (README "Safety: mass deletions and self-sync",
// doc/design.md "The guard").  Before a pass changes anything, each side's
// listing (LIST-STATUS with MESSAGES) is compared with the database: the
// messages a side lost count mailbox by mailbox (all of a mailbox's mapped
// messages when it was replaced (UIDVALIDITY changed), deleted or emptied,
// else at least mapped - MESSAGES).  The pass is refused when a side lost
// at least `minimum` messages and more than `share` percent of the
// synchronized ones.  Per mailbox, after its SELECT and before its EXPUNGEs,
// the same test with mailbox_share and mailbox_minimum (off by default).
struct MassDeletionLimits {
  // --allow-mass-deletion: no limit applies to this run.  Default false.
  bool allow = false;
  // mass-deletion-share: a side that lost more than this percent (1-100)
  // of the synchronized messages at once stops the pass; 0 (`off`): no
  // side-wide check (and no MESSAGES in the listing).  Default 50.
  unsigned share = 50;
  // mass-deletion-minimum: fewer messages gone never stop a pass (small
  // accounts).  Default 10; at least 1.
  std::uint64_t minimum = 10;
  // mailbox-deletion-share: expunging more than this percent (1-100) of
  // one mailbox's synchronized messages at once stops the run before that
  // mailbox changes; 0 (`off`, the default: emptying a Trash never trips it).
  unsigned mailbox_share = 0;
  // mailbox-deletion-minimum: default 10; at least 1.
  std::uint64_t mailbox_minimum = 10;
};

// Everything a SyncSession needs: what the configuration file says
// (from_config()) and what the command line asks.  Defaults are those of
// interimap(1) 0.5.7.  Logging (log-prefix, logfile, --quiet, --debug) is
// the Logger's business: configure it before the session (configure_logger()).
struct INTERIMAP_API SyncSettings {
  // ---- From the command line.
  SyncMode mode = SyncMode::Sync;
  // MAILBOX arguments, with the local hierarchy delimiter: the mailboxes to
  // synchronize or repair (empty: those list_mailbox selects), the
  // mailboxes to delete, or SOURCE and DEST for Rename.  "INBOX" in any
  // case means INBOX.
  std::vector<std::string> mailboxes;
  // --target; all three by default.  Only meaningful for Delete and Rename.
  SyncTargets targets;
  // Long-lived mode (--watch): the database is not created when missing
  // (as the reference), network sockets get SO_KEEPALIVE, and each mailbox
  // is unselected after its sync.  Default false.
  bool watch = false;
  // --notify: LIST-STATUS is not required (without it, Connection::list
  // pipelines one STATUS per mailbox; the watch loop learns about changes
  // through NOTIFY).  Default false.
  bool notify = false;
  // --dry-run (include/interimap/dry_run.hpp): both connections in
  // dry-run mode (ConnectionOptions::dry_run: EXAMINE, no write sent), the
  // database a private copy in memory (StateOptions::private_copy), the
  // append journal read, never written; nothing on either server or on
  // disk changes.  report_dry_run() tells what would have.  Not with
  // watch.  Default false.
  bool dry_run = false;
  // Checked between mailboxes: once it returns true, run() returns without
  // starting another one (the mailboxes done are committed; the others
  // wait for the next run).  For SIGTERM and friends.  Default: none.
  std::function<bool()> interrupted;

  // ---- From the configuration file.
  // [local] and [remote] (ConnectionOptions::name "local" and "remote";
  // compress defaults to NO locally, YES remotely).
  std::array<ConnectionOptions, 2> connections;
  // database: the state database's path, resolved (default: the remote
  // host's name under $XDG_DATA_HOME/interimap).
  std::string database;
  // list-reference of [local] and [remote]; empty: none.
  std::array<std::string, 2> list_reference;
  // change-tracking of [local] and [remote] (auto, qresync, condstore, plain).
  std::array<ChangeTracking, 2> change_tracking{};
  // max-connections of [local] and [remote] (or of the default section):
  // how many connections a pass may open to that server, each
  // synchronizing one mailbox at a time (sync/workers.hpp).  The pass
  // uses the smaller of the two; 1 is the reference's one mailbox after
  // the other.  Default 2.
  std::array<unsigned, 2> max_connections = {2, 2};
  // list-mailbox as written (split by the session with split_list_mailbox,
  // as the reference does, only when no MAILBOX argument is given).
  // Empty: every mailbox.
  std::string list_mailbox;
  // list-select-opts, upper-cased words (e.g. SUBSCRIBED).  Default none.
  std::vector<std::string> list_select_opts;
  // ignore-mailbox: a PCRE2 (Perl) pattern on database-form names,
  // compiled by the session (Sync and Repair only); empty: none.
  std::string ignore_mailbox;
  // mass-deletion-share, mass-deletion-minimum, mailbox-deletion-share,
  // mailbox-deletion-minimum (default section); `allow` is the command
  // line's --allow-mass-deletion.
  MassDeletionLimits mass_deletion;
  // log-prefix (compiled) and logfile (absolute; empty: stderr).
  LogPrefix log_prefix;
  std::string logfile;

  // Reads an interimap configuration file as the reference's read_config:
  // every option of the default, [local] and [remote] sections must be
  // known, and each value valid; both sections must exist.  Throws
  // ConfigError naming the option and the value.  The command-line fields
  // keep their defaults.
  static SyncSettings from_config(const Config& config);

  // Applies log_prefix and logfile to a logger (opening the file: Error
  // when it cannot be opened).
  void configure_logger(Logger& logger) const;
};

class INTERIMAP_API SyncSession {
 public:
  // Checks the settings (std::invalid_argument: Delete without mailboxes,
  // Rename without exactly two; ConfigError: a bad ignore-mailbox).
  // Nothing is opened.  The logger must outlive the session; its quiet and
  // debug levels are --quiet and --debug.
  SyncSession(SyncSettings settings, Logger& logger);
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
