// interimap --dry-run: a run that reads both servers and the database,
// and changes none of them.
//
// How (doc/design.md "Dry run"): the connections are in dry-run mode
// (ConnectionOptions::dry_run): SELECT becomes EXAMINE, and no command
// that changes a server is sent (STORE, EXPUNGE, APPEND, CREATE, DELETE,
// RENAME, SUBSCRIBE, UNSUBSCRIBE: the connection refuses to send them);
// each is answered locally as the server would have accepted it (APPEND
// with the UIDs the server's UIDNEXT promises) and recorded in the
// connection's PlannedChanges.  The database is a private copy in memory
// (SyncSettings::dry_run, StateOptions::private_copy).  The engine runs
// unchanged on top, so its log lines are those of the real run.
#pragma once

#include <interimap/export.hpp>

#include <interimap/log.hpp>
#include <interimap/uidset.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace interimap {

class SyncSession;

// What a connection in dry-run mode was asked to change on its server and
// did not.  Mailbox names are as on the wire (modified UTF-7).
struct INTERIMAP_API PlannedChanges {
  struct MailboxChanges {
    uint64_t appended = 0;        // messages APPEND would have stored
    uint64_t appended_bytes = 0;  // their bodies' size in bytes
    UidSet expunged;              // existing messages UID EXPUNGE would have removed
    // Flag -> the existing messages (UIDs) that would have gained / lost
    // it, from their flags at the time of the STORE.
    std::map<std::string, UidSet> flags_added, flags_removed;
    bool empty() const;
  };
  std::vector<std::string> created, deleted, subscribed, unsubscribed;
  std::vector<std::pair<std::string, std::string>> renamed;  // (from, to)
  std::map<std::string, MailboxChanges> mailboxes;
  bool empty() const;
};

// After SyncSession::run() with SyncSettings::dry_run: logs, as notices
// (shown even with --quiet), what each side would have changed, per
// mailbox (messages appended with their count and bytes, flags added and
// removed, messages expunged; mailboxes created, subscribed, unsubscribed,
// deleted, renamed), whether the database would have changed, and a last
// line: "nothing to do" or the number of changes.  Returns whether
// anything would have changed (a server or the database).  Throws
// StateError when the database cannot be compared.
INTERIMAP_API bool report_dry_run(SyncSession& session, Logger& logger);

}  // namespace interimap
