#include "sync/mailbox_list.hpp"

#include "sync/guard.hpp"
#include "util/ascii.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <set>

namespace interimap::detail::sync {

namespace {

// Whether --target names a side.
bool targeted(const SyncTargets& targets, Side side) { return side == Side::Local ? targets.local : targets.remote; }

}  // namespace

MailboxList::MailboxList(Context& ctx) : ctx_(ctx) {
  const SyncSettings& s = ctx.settings;
  const bool listing = s.mode == SyncMode::Sync || s.mode == SyncMode::Repair;
  if (listing && s.mailboxes.empty()) {
    if (!s.list_mailbox.empty()) patterns_ = split_list_mailbox(s.list_mailbox);
  } else {
    patterns_ = s.mailboxes;
  }
  if (listing && !s.ignore_mailbox.empty()) ignore_ = std::make_unique<Regex>(s.ignore_mailbox);
}

void MailboxList::learn_delimiters() {
  const SyncSettings& s = ctx_.settings;
  // A synchronization lists the mailboxes anyway, and the hierarchy
  // delimiter comes with each LIST response: the reference takes it from
  // there, which saves a command per side and per session.  That LIST
  // needs no delimiter when the patterns hold none (no MAILBOX argument,
  // no NUL in list-mailbox); its answer serves the first list().
  const bool from_list = (s.mode == SyncMode::Sync || s.mode == SyncMode::Repair) && s.mailboxes.empty() &&
                         std::none_of(patterns_.begin(), patterns_.end(),
                                      [](const std::string& p) { return p.find('\0') != std::string::npos; });
  ctx_.both.run([&](Side side) {
    if (from_list) {
      auto pending = list_begin(side);
      auto answer = ctx_.connection(side).list_end(pending);
      // INBOX may live in a namespace of its own (RFC 3501 7.2.2): only
      // another mailbox tells the delimiter.
      const auto it = std::find_if(answer.begin(), answer.end(),
                                   [](const MailboxInfo& m) { return !iequals(m.name, "INBOX"); });
      if (it != answer.end()) {
        ctx_.names.set_delimiter(side, it->delimiter);
        prelisted_[index(side)] = std::move(answer);
        return;
      }
    }
    // LIST reference "" tells the delimiter of the reference (or of the root).
    ctx_.names.set_delimiter(side, ctx_.connection(side).hierarchy_delimiter(ctx_.names.reference(side)));
  });
  for (Side side : kSides)
    ctx_.debug(to_string(side),
               fmt::format("Using {} as hierarchy delimiter", print_delimiter(ctx_.names.delimiter(side))));
  const auto local = ctx_.names.delimiter(Side::Local), remote = ctx_.names.delimiter(Side::Remote);
  if (local.has_value() != remote.has_value())
    Context::fail("", fmt::format("Local and remote namespaces are neither both flat nor both hierarchical (local {}, remote {}).",
                                  print_delimiter(local), print_delimiter(remote)));
  // MAILBOX arguments come with the local delimiter: to database form.
  for (auto& p : patterns_) p = ctx_.names.from_local(std::move(p));
}

// The arguments of a LIST-STATUS of one side.  Also with --notify: each
// pass lists again, and without STATUS every mailbox would look dirty (a
// SELECT each); Connection::list pipelines one STATUS per mailbox on a
// server without LIST-STATUS.
Connection::PendingList MailboxList::list_begin(Side side) {
  const SyncMode mode = ctx_.settings.mode;
  const bool listing = mode == SyncMode::Sync || mode == SyncMode::Repair;
  const std::string& reference = ctx_.names.reference(side);
  std::vector<std::string> wire_patterns;
  for (const auto& p : patterns_) {
    if (p.find('\0') != std::string::npos && !ctx_.names.delimiter(side))
      Context::fail(to_string(side), "Mailbox name contains null characters but the namespace is flat!");
    wire_patterns.push_back(ctx_.names.wire(side, p).substr(reference.size()));
  }
  // MESSAGES where expunges may leave UIDNEXT and HIGHESTMODSEQ as they
  // were (CONDSTORE without QRESYNC: sync_mailboxes()), and for the
  // mass-deletion guard's counts (doc/design.md "The guard").
  const bool messages =
      listing && (ctx_.tracking[index(side)] == ChangeTracking::Condstore || guard_wants_messages(ctx_.settings));
  return ctx_.connection(side).list_begin(wire_patterns, listing ? ctx_.settings.list_select_opts : std::vector<std::string>{},
                                          reference, /*with_status=*/listing, /*with_messages=*/messages);
}

bool MailboxList::list() {
  // Both LISTs go out first, then both answers are read, from this thread:
  // the servers work at once and a poll needs no thread handoff.
  PerSide<Connection::PendingList> pending;
  for (Side side : kSides)
    if (!prelisted_[index(side)]) pending[index(side)] = list_begin(side);
  PerSide<std::vector<MailboxInfo>> answers;
  for (Side side : kSides) {
    if (auto& pre = prelisted_[index(side)]) {
      answers[index(side)] = std::move(*pre);
      pre.reset();
    } else {
      answers[index(side)] = ctx_.connection(side).list_end(pending[index(side)]);
    }
  }
  if (answers == last_answers_) return true;  // `listed_` stands
  last_answers_ = {};  // until `listed_` is made of `answers`
  for (Side side : kSides) {
    std::vector<MailboxInfo> answer = answers[index(side)];
    auto& out = listed_[index(side)];
    out.clear();
    const auto delimiter = ctx_.names.delimiter(side);
    for (auto& m : answer) {
      m.name = normalize_inbox(std::move(m.name));
      // INBOX lives in a namespace of its own; every other name must use
      // the delimiter of the reference (RFC 3501 7.2.2).
      if (m.name != "INBOX" && m.delimiter != delimiter)
        Context::fail(to_string(side), fmt::format("Mailbox {} has hierarchy delimiter {}, while {} was expected.", m.name,
                                                   print_delimiter(m.delimiter), print_delimiter(delimiter)));
      std::string name = m.name;
      out.insert_or_assign(std::move(name), std::move(m));
    }
  }
  last_answers_ = std::move(answers);
  return false;
}

const MailboxInfo* MailboxList::info(Side side, std::string_view wire_name) const {
  const auto& m = listed_[index(side)];
  auto it = m.find(iequals(wire_name, "INBOX") ? std::string_view("INBOX") : wire_name);
  return it == m.end() ? nullptr : &it->second;
}

bool MailboxList::exists(Side side, std::string_view wire_name) const {
  const auto* i = info(side, wire_name);
  return i != nullptr && i->selectable();
}

const std::map<std::string, MailboxRecord, std::less<>>& MailboxList::records() {
  if (records_generation_ != ctx_.db->generation()) {
    records_.clear();
    for (auto& r : ctx_.db->mailboxes()) {
      std::string name = r.name;
      records_.emplace(std::move(name), std::move(r));
    }
    records_generation_ = ctx_.db->generation();
  }
  return records_;
}

void MailboxList::create(Side side, const std::string& wire_name) {
  report_create(side, wire_name, ctx_.connection(side).create(wire_name));
}

void MailboxList::report_create(Side side, const std::string& wire_name, const CommandStatus& status) {
  if (status.ok())
    ctx_.log.info(to_string(side), "Created mailbox " + wire_name);
  else
    ctx_.log.warning(to_string(side), fmt::format("Couldn't create mailbox {}: {}", wire_name, status.describe()));
}

void MailboxList::subscribe(Side side, const std::string& wire_name, bool subscribe) {
  Connection& c = ctx_.connection(side);
  const auto status = subscribe ? c.subscribe(wire_name) : c.unsubscribe(wire_name);
  if (!status.ok())
    Context::fail(to_string(side), fmt::format("Couldn't {} to {}: {}", subscribe ? "subscribe" : "unsubscribe",
                                               wire_name, status.describe()));
  ctx_.log.info(to_string(side), fmt::format("{} to {}", subscribe ? "Subscribe" : "Unsubscribe", wire_name));
}

std::vector<std::string> MailboxList::synchronize() {
  const MailboxNames& names = ctx_.names;
  std::set<std::string> candidates;
  for (Side side : kSides)
    for (const auto& [wire_name, m] : listed_[index(side)]) {
      auto name = names.database(side, wire_name);
      if (!name || name->empty()) continue;
      // ignore-mailbox applies to the database form, unless MAILBOX
      // arguments were given.
      if (ctx_.settings.mailboxes.empty() && ignore_ && ignore_->search(*name)) continue;
      candidates.insert(std::move(*name));
    }

  // One query for all the records (each step below changes only its own).
  const auto& known = records();
  // The mailboxes one side lacks are created in one pipelined round trip
  // per server, both at once, unless the loop below stops at a mailbox
  // the database knows but one side lacks (then each goes in turn, so
  // that nothing after it is created).
  PerSide<std::vector<std::string>> to_create;
  bool batch = true;
  for (const auto& name : candidates) {
    PerSide<bool> present;
    for (Side side : kSides) {
      const auto* i = info(side, names.wire(side, name));
      present[index(side)] = i != nullptr && i->selectable();
    }
    if (present[0] == present[1]) continue;
    if (known.count(name) != 0) {
      batch = false;
      break;
    }
    const Side to = present[0] ? Side::Remote : Side::Local;
    to_create[index(to)].push_back(names.wire(to, name));
  }
  PerSide<std::vector<CommandStatus>> created;
  PerSide<size_t> next_created{};
  if (batch && !(to_create[0].empty() && to_create[1].empty()))
    ctx_.both.run([&](Side side) {
      if (!to_create[index(side)].empty()) created[index(side)] = ctx_.connection(side).create(to_create[index(side)]);
    });
  std::vector<std::string> result;
  for (const auto& name : candidates) {
    const PerSide<std::string> wire = {names.wire(Side::Local, name), names.wire(Side::Remote, name)};
    PerSide<const MailboxInfo*> listed;
    PerSide<bool> present;
    for (Side side : kSides) {
      listed[index(side)] = info(side, wire[index(side)]);
      present[index(side)] = listed[index(side)] != nullptr && listed[index(side)]->selectable();
    }
    if (!present[0] && !present[1]) continue;
    result.push_back(name);
    const auto it = known.find(name);
    const MailboxRecord* record = it == known.end() ? nullptr : &it->second;
    if (present[0] && present[1]) {
      const PerSide<bool> subscribed = {listed[0]->subscribed(), listed[1]->subscribed()};
      if (record) {
        if (subscribed[0] != subscribed[1]) {
          // Subscribed on one side only: the change wins over the database,
          // and the side that did not change follows.
          const Side changed = subscribed[0] != record->subscribed ? Side::Local : Side::Remote;
          const Side follower = other(changed);
          subscribe(follower, wire[index(follower)], !record->subscribed);
          ctx_.write().set_subscribed(record->idx, !record->subscribed);
          ctx_.commit();
        } else if (subscribed[0] != record->subscribed) {
          ctx_.write().set_subscribed(record->idx, subscribed[0]);
          ctx_.commit();
        }
      } else {
        const bool subscribe_both = subscribed[0] || subscribed[1];
        ctx_.write().add_mailbox(name, subscribe_both);
        ctx_.notice("database", "Created mailbox " + names.pretty(name));
        for (Side side : kSides)
          if (subscribe_both && !subscribed[index(side)]) subscribe(side, wire[index(side)], true);
        ctx_.commit();
      }
    } else {
      const std::string pretty = names.pretty(name);
      if (record)
        Context::fail("database", fmt::format("Mailbox {} exists. Run `interimap --target=database --delete {}` to delete.",
                                              pretty, pretty));
      const Side from = present[0] ? Side::Local : Side::Remote, to = other(from);
      const bool subscribed = listed[index(from)]->subscribed();
      ctx_.write().add_mailbox(name, subscribed);
      ctx_.notice("database", "Created mailbox " + pretty);
      if (batch)
        report_create(to, wire[index(to)], created[index(to)].at(next_created[index(to)]++));
      else
        create(to, wire[index(to)]);
      if (subscribed) subscribe(to, wire[index(to)], true);
      // With the batch, committed at the end: a mailbox created and not
      // recorded is found on both sides by the next run, and recorded.
      if (!batch) ctx_.commit();
    }
  }
  ctx_.commit();
  return result;
}

void MailboxList::remove() {
  const SyncTargets& targets = ctx_.settings.targets;
  for (const auto& name : patterns_) {
    if (iequals(name, "INBOX")) Context::fail("", "INBOX can't be deleted");
    const auto record = ctx_.db->find_mailbox(name);
    for (Side side : kSides) {
      const bool target = targeted(targets, side);
      const std::string wire = ctx_.names.wire(side, name);
      if (!target || !exists(side, wire)) continue;
      const auto status = ctx_.connection(side).delete_mailbox(wire);
      if (!status.ok())
        Context::fail(to_string(side), fmt::format("Couldn't delete mailbox {}: {}", wire, status.describe()));
      ctx_.log.info(to_string(side), "Deleted mailbox " + wire);
    }
    if (record && targets.database) {
      ctx_.write().delete_mailbox(record->idx);
      ctx_.commit();
      ctx_.notice("database", "Removed mailbox " + ctx_.names.pretty(name));
    }
  }
}

void MailboxList::rename() {
  const SyncTargets& targets = ctx_.settings.targets;
  const MailboxNames& names = ctx_.names;
  const std::string& from = patterns_.at(0);
  const std::string& to = patterns_.at(1);
  for (Side side : kSides) {
    const bool target = targeted(targets, side);
    const std::string wire = names.wire(side, to);
    if (target && exists(side, wire))
      Context::fail(to_string(side), fmt::format("Mailbox {} exists. Run `interimap --target={} --delete {}` to delete.",
                                                 wire, to_string(side), names.pretty(to)));
  }
  if (targets.database) {
    if (const auto conflict = ctx_.db->rename_conflict(from, to))
      Context::fail("database", fmt::format("Mailbox {} exists. Run `interimap --target=database --delete {}` to delete.",
                                            names.pretty(*conflict), names.pretty(*conflict)));
  }
  for (Side side : kSides) {
    const bool target = targeted(targets, side);
    const std::string wire_from = names.wire(side, from), wire_to = names.wire(side, to);
    // \NonExistent names can be renamed too (their children move).
    if (!target || info(side, wire_from) == nullptr) continue;
    const auto status = ctx_.connection(side).rename(wire_from, wire_to);
    if (!status.ok())
      Context::fail(to_string(side), fmt::format("Couldn't rename mailbox {}: {}", wire_from, status.describe()));
    ctx_.log.info(to_string(side), fmt::format("Renamed mailbox {} to {}", wire_from, wire_to));
  }
  if (targets.database) {
    std::size_t n = 0;
    if (from != to) n = ctx_.write().rename_mailbox(from, to);
    ctx_.commit();
    if (n > 0) ctx_.notice("database", fmt::format("Renamed mailbox {} to {}", names.pretty(from), names.pretty(to)));
  }
}

}  // namespace interimap::detail::sync
