// A connection's dry-run state (ConnectionOptions::dry_run,
// include/interimap/dry_run.hpp): what was asked of the server and not
// sent, and what the local answers must stay consistent with.  A member
// of the Client, used by Connection (mailbox commands) and Mailbox
// (EXAMINE, STORE, EXPUNGE, APPEND).
#pragma once

#include <interimap/dry_run.hpp>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>

namespace interimap::detail::imap {

struct DryRunState {
  PlannedChanges planned;
  // Mailboxes "created" (wire names): they do not exist on the server, so
  // Mailbox emulates them (empty, UIDVALIDITY 1, UIDNEXT 1).
  std::set<std::string, std::less<>> created;
  // Per mailbox, the UID the next fake APPEND starts at: after the UIDs
  // earlier fake APPENDs handed out.
  std::map<std::string, uint32_t, std::less<>> next_uid;
};

// Whether a command (by its name, e.g. "UID STORE") may change the
// server's state, so that a dry-run connection must never send it.
// CLOSE is not among them: a dry-run connection only EXAMINEs, and CLOSE
// of a read-only mailbox expunges nothing (RFC 3501 6.4.2).
bool changes_server(std::string_view command);

}  // namespace interimap::detail::imap
