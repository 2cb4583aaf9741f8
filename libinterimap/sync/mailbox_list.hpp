// The mailbox list (interimap(1) DESCRIPTION step 1): the hierarchy
// delimiters, both servers' LIST-STATUS answers, the mailboxes to
// synchronize with their subscriptions and their creation on the side
// that lacks them; and --delete and --rename, which act on the same list.
#pragma once

#include <interimap/connection.hpp>
#include <interimap/statedb.hpp>

#include "sync/context.hpp"
#include "sync/regex.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace interimap::detail::sync {

class MailboxList {
 public:
  // The patterns come from the settings: MAILBOX arguments, else
  // list-mailbox (split), else every mailbox; ignore-mailbox is compiled
  // (ConfigError) for Sync and Repair.
  explicit MailboxList(Context& ctx);

  // Learns both hierarchy delimiters (into ctx.names) and turns the
  // patterns into database form.  Fails when one namespace is flat and
  // the other is not.
  void learn_delimiters();
  // Both LIST-STATUS answers; true when they equal the last call's (then
  // nothing else changed either).
  bool list();
  // Step 1: the database-form names to synchronize, sorted; creates,
  // subscribes and records what one side lacks, committing each.
  std::vector<std::string> synchronize();
  // --delete the patterns (MAILBOX arguments) on the targets.
  void remove();
  // --rename the first pattern to the second on the targets.
  void rename();

  // What the last list() said of a wire name (INBOX in any case); null if nothing.
  const MailboxInfo* info(Side side, std::string_view wire_name) const;
  // Everything the last list() said of a side, by wire name (the guard).
  const std::map<std::string, MailboxInfo, std::less<>>& listed(Side side) const { return listed_[index(side)]; }
  // The database's records by name: one query, none while the database
  // stays as it was (a poll that changed nothing reads no record again).
  const std::map<std::string, MailboxRecord, std::less<>>& records();

 private:
  Connection::PendingList list_begin(Side side);
  bool exists(Side side, std::string_view wire_name) const;
  void create(Side side, const std::string& wire_name);
  // The log line of a CREATE's answer (a warning when refused).
  void report_create(Side side, const std::string& wire_name, const CommandStatus& status);
  void subscribe(Side side, const std::string& wire_name, bool subscribe);

  Context& ctx_;
  std::vector<std::string> patterns_;  // database form once the delimiters are known
  std::unique_ptr<Regex> ignore_;      // ignore-mailbox
  // The LIST that learn_delimiters() made, for the first list().
  PerSide<std::optional<std::vector<MailboxInfo>>> prelisted_;
  PerSide<std::vector<MailboxInfo>> last_answers_;
  PerSide<std::map<std::string, MailboxInfo, std::less<>>> listed_;  // wire name -> LIST data
  std::map<std::string, MailboxRecord, std::less<>> records_;
  std::uint64_t records_generation_ = UINT64_MAX;
};

}  // namespace interimap::detail::sync
