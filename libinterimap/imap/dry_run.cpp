#include "imap/dry_run.hpp"

#include "util/ascii.hpp"

#include <algorithm>
#include <array>

namespace interimap {

bool PlannedChanges::MailboxChanges::empty() const {
  return appended == 0 && expunged.empty() && flags_added.empty() && flags_removed.empty();
}

bool PlannedChanges::empty() const {
  return created.empty() && deleted.empty() && subscribed.empty() && unsubscribed.empty() && renamed.empty() &&
         std::all_of(mailboxes.begin(), mailboxes.end(), [](const auto& m) { return m.second.empty(); });
}

namespace detail::imap {

bool changes_server(std::string_view command) {
  // RFC 3501 6.3-6.4 and the extensions that write: SELECT (it may reset
  // \Recent; EXAMINE is the read-only twin), STORE, EXPUNGE, APPEND, the
  // mailbox commands, COPY/MOVE (RFC 6851), ACL (RFC 4314), quota
  // (RFC 9208) and metadata (RFC 5464).
  static constexpr std::array<std::string_view, 20> kWrites = {
      "SELECT", "STORE",   "UID STORE", "EXPUNGE",   "UID EXPUNGE", "APPEND",    "CREATE",
      "DELETE", "RENAME",  "SUBSCRIBE", "UNSUBSCRIBE", "COPY",      "UID COPY",  "MOVE",
      "UID MOVE", "SETACL", "DELETEACL", "SETQUOTA", "SETMETADATA", "SETANNOTATION"};
  return std::any_of(kWrites.begin(), kWrites.end(), [&](std::string_view w) { return iequals(w, command); });
}

}  // namespace detail::imap
}  // namespace interimap
