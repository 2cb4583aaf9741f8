#include "sync/mailbox_sync.hpp"

#include "sync/adopt.hpp"
#include "sync/box.hpp"
#include "sync/known.hpp"
#include "sync/recovery.hpp"
#include "sync/transfer.hpp"
#include "sync/workers.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <set>

namespace interimap::detail::sync {

namespace {

// What the listing says of one side of a synchronized mailbox: nothing
// happened there since the clean state (step 2 of the man page).  A plain
// side cannot say so (no HIGHESTMODSEQ): it is never unchanged.
bool unchanged(Context& ctx, const MailboxInfo* info, const SideState& clean, Side s, MailboxId idx) {
  if (info == nullptr || !info->uidnext || !info->highestmodseq || clean.uidnext == 0 || clean.highestmodseq == 0 ||
      *info->uidnext != clean.uidnext || *info->highestmodseq != clean.highestmodseq)
    return false;
  // Without QRESYNC an expunge need not move HIGHESTMODSEQ (RFC 7162 asks
  // that of QRESYNC servers only): MESSAGES must match the mapped
  // messages too.
  if (ctx.tracking[index(s)] == ChangeTracking::Condstore)
    return info->messages && *info->messages == ctx.db->mapping_count(idx);
  return true;
}

// The rest of a synchronized mailbox's pass, both sides selected.
void finish_sync(Context& ctx, Box& box) {
  const PerSide<UidSet> pick = cross_pick(box);
  PerSide<std::vector<Message>> fetched;
  auto prefetch = [&](Side s) {
    if (!pick[index(s)].empty())
      box.m(s).fetch_messages(pick[index(s)], [&](Message& m) { fetched[index(s)].push_back(std::move(m)); });
  };
  if (sync_known(ctx, box, prefetch)) {
    auto& db = ctx.write();
    for (Side s : kSides) db.set_highestmodseq(box.idx, s, box.state(s).highestmodseq);
    ctx.commit();
  }
  PerSide<UidSet> ignore;
  cross_append(ctx, box, pick, fetched, ignore);
  sync_messages(ctx, box, ignore);
  box.finish(ctx);
}

}  // namespace

void sync_mailbox(Context& ctx, MailboxList& list, const MailboxRecord& record) {
  Box box = Box::from(record);
  if (!record.state) {
    // A new mailbox: everything is new on both sides.
    box.select(ctx, /*resync=*/false);
    for (Side s : kSides) box.state(s).uidvalidity = box.m(s).uidvalidity();
    // Committed with the first mappings or the final state.
    ctx.write().init_state(box.idx, box.state(Side::Local).uidvalidity, box.state(Side::Remote).uidvalidity);
    // Messages already on both sides are paired, not copied (adopt.hpp).
    sync_messages(ctx, box, adopt(ctx, box));
    box.finish(ctx);
    return;
  }
  // A side whose UIDVALIDITY changed: its messages are paired again (adopt.hpp).
  if (recover_uidvalidity(ctx, list, record)) return;
  PerSide<const MailboxInfo*> infos{};
  for (Side s : kSides) infos[index(s)] = list.info(s, ctx.names.wire(s, box.name));
  // A mixed pair where only the plain side must be read (it cannot tell
  // it did not change): it is read first, and the other side, unchanged
  // by its listing, is selected only if there is something to do, so a
  // no-op costs it nothing (issue 12: QRESYNC's savings kept where they are).
  for (Side p : kSides) {
    const Side o = other(p);
    if (ctx.tracking[index(p)] != ChangeTracking::Plain || ctx.tracking[index(o)] == ChangeTracking::Plain) continue;
    const auto* pinfo = infos[index(p)];
    if (!unchanged(ctx, infos[index(o)], box.state(o), o, box.idx) || pinfo == nullptr || !pinfo->uidnext ||
        *pinfo->uidnext != box.state(p).uidnext)
      continue;
    PerSide<bool> only{};
    only[index(p)] = true;
    box.select(ctx, /*resync=*/true, only);
    KnownChanges early = box.tracker[index(p)]->changes(box.m(p), box.state(p));
    if (early.empty() && box.m(p).uidnext() == box.state(p).uidnext) {
      box.finish(ctx);
      return;
    }
    box.early[index(p)] = std::move(early);
    PerSide<bool> rest{};
    rest[index(o)] = true;
    box.select(ctx, /*resync=*/true, rest);
    return finish_sync(ctx, box);
  }
  // Both sides have new messages (LIST-STATUS says): their sizes come with
  // the SELECT, for cross_pick().
  box.want_sizes = true;
  for (Side s : kSides) {
    const auto* info = infos[index(s)];
    box.want_sizes = box.want_sizes && info != nullptr && info->uidnext && *info->uidnext > box.state(s).uidnext;
  }
  box.select(ctx, /*resync=*/true);
  finish_sync(ctx, box);
}

void sync_mailboxes(Context& ctx, Workers& workers, MailboxList& list, const std::vector<std::string>& mailboxes,
                    bool repair_mode) {
  const std::set<std::string> wanted(mailboxes.begin(), mailboxes.end());

  // The records in one query (a no-op poll of many mailboxes is mostly
  // this); read again if recovering or resuming changed them.
  const auto& records = list.records();
  bool changed = false;

  // Copies an interrupted run made but did not record (our addition).
  const auto pending = ctx.db->mailboxes_with_pending_appends();
  // The append journal's lines of every mailbox an interrupted run left
  // are kept until that mailbox is done with (with several mailboxes in
  // flight, several may be): the file goes only then.
  std::set<MailboxId> held(pending.begin(), pending.end());
  if (!held.empty() || ctx.journal->exists())
    for (const auto& record : ctx.db->interrupted_mailboxes()) held.insert(record.idx);
  for (MailboxId idx : held) ctx.journal->hold(idx);
  for (const auto& name : mailboxes) {
    const auto it = records.find(name);
    if (it == records.end() || !std::binary_search(pending.begin(), pending.end(), it->second.idx)) continue;
    if (any_side(uidvalidity_changed(ctx, list, it->second))) continue;  // recover_uidvalidity() starts again
    if (const auto rows = ctx.db->pending_appends(it->second.idx); !rows.empty()) {
      recover(ctx, it->second, rows);
      changed = true;
    }
  }

  // Interrupted syncs first (the reference's order).
  for (const auto& record : ctx.db->interrupted_mailboxes())
    if (wanted.count(record.name) != 0 && !any_side(uidvalidity_changed(ctx, list, record))) {
      resume(ctx, record);
      changed = true;
    }
  if (!held.empty()) {
    // Those recovered and not interrupted (and those resumed) are done.
    std::set<MailboxId> still;
    for (MailboxId idx : ctx.db->mailboxes_with_pending_appends()) still.insert(idx);
    for (const auto& record : ctx.db->interrupted_mailboxes()) still.insert(record.idx);
    for (MailboxId idx : held)
      if (still.count(idx) == 0) ctx.journal->done(idx);
  }
  if (changed) list.records();  // refreshes `records`

  std::vector<MailboxRecord> todo;
  for (const auto& name : mailboxes) {
    const auto found = records.find(name);
    if (found == records.end()) continue;  // cannot happen: MailboxList::synchronize() added it
    const MailboxRecord& record = found->second;
    const PerSide<const MailboxInfo*> infos = {list.info(Side::Local, ctx.names.wire(Side::Local, name)),
                                               list.info(Side::Remote, ctx.names.wire(Side::Remote, name))};
    // Detect UIDVALIDITY changes before starting (the reference's set_cache,
    // which stops there): sync_mailbox() pairs such a mailbox again.
    if (any_side(uidvalidity_changed(ctx, list, record))) {
      todo.push_back(record);
      continue;
    }
    if (repair_mode) {
      // A mailbox new since the last run has nothing to repair: its first
      // sync copies it whole, as a normal run would.
      todo.push_back(record);
      continue;
    }
    // Step 2: only mailboxes whose UIDNEXT or HIGHESTMODSEQ (or, without
    // QRESYNC, MESSAGES) moved; a plain side is always read.
    bool dirty = !record.state;
    for (Side s : kSides)
      dirty = dirty || !unchanged(ctx, infos[index(s)], (*record.state)[s], s, record.idx);
    if (dirty) todo.push_back(record);
  }
  if (ctx.debugging()) {
    for (Side s : kSides) {
      std::vector<std::string> dirty;
      for (const auto& r : todo) dirty.push_back(ctx.names.wire(s, r.name));
      ctx.debug(to_string(s), dirty.empty() ? "Clean state!" : fmt::format("Dirty mailboxes: {}", fmt::join(dirty, ", ")));
    }
  }
  // Several at once where there are several (sync/workers.hpp).
  workers.run(todo, [&](Context& wctx, const MailboxRecord& record) {
    if (repair_mode && record.state && !any_side(uidvalidity_changed(wctx, list, record)))
      repair(wctx, record);
    else
      sync_mailbox(wctx, list, record);
  });
}

}  // namespace interimap::detail::sync
