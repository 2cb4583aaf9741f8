// report_dry_run(): the summary a dry run ends with, from what each
// connection recorded instead of sending (Connection::planned_changes())
// and the database's private copy.  Uses only the public SyncSession.
#include <interimap/dry_run.hpp>

#include <interimap/connection.hpp>
#include <interimap/statedb.hpp>
#include <interimap/syncsession.hpp>

#include <fmt/format.h>

#include <sys/stat.h>

namespace interimap {

bool report_dry_run(SyncSession& session, Logger& logger) {
  bool pending = false;
  for (Side side : {Side::Local, Side::Remote}) {
    const std::string name(to_string(side));
    const PlannedChanges& p = session.connection(side).planned_changes();
    auto say = [&](std::string_view mailbox, const std::string& text) {
      logger.notice(name, mailbox, text);
      pending = true;
    };
    for (const auto& m : p.created) say({}, "would create mailbox " + m);
    for (const auto& m : p.subscribed) say({}, "would subscribe to " + m);
    for (const auto& m : p.unsubscribed) say({}, "would unsubscribe from " + m);
    for (const auto& m : p.deleted) say({}, "would delete mailbox " + m);
    for (const auto& [from, to] : p.renamed) say({}, fmt::format("would rename mailbox {} to {}", from, to));
    for (const auto& [mailbox, c] : p.mailboxes) {
      if (c.appended > 0)
        say(mailbox, fmt::format("would append {} message(s) ({} bytes)", c.appended, c.appended_bytes));
      for (const auto& [flag, uids] : c.flags_added)
        say(mailbox, fmt::format("would add flag {} to {} message(s): UID {}", flag, uids.size(), uids.to_string()));
      for (const auto& [flag, uids] : c.flags_removed)
        say(mailbox,
            fmt::format("would remove flag {} from {} message(s): UID {}", flag, uids.size(), uids.to_string()));
      if (!c.expunged.empty())
        say(mailbox, fmt::format("would expunge {} message(s): UID {}", c.expunged.size(), c.expunged.to_string()));
    }
  }
  struct stat st {};
  if (::stat(session.database_path().c_str(), &st) != 0) {
    logger.notice("database", {}, "would be created: " + session.database_path());
    pending = true;
  } else if (session.database().differs_from_file()) {
    logger.notice("database", {}, "would be updated: " + session.database_path());
    pending = true;
  }
  logger.notice("", {}, pending ? "dry run: changes pending, none made" : "dry run: nothing to do");
  return pending;
}

}  // namespace interimap
