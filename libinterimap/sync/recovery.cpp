#include "sync/recovery.hpp"

#include "sync/append_journal.hpp"
#include "sync/box.hpp"
#include "sync/flags.hpp"
#include "sync/known.hpp"
#include "sync/transfer.hpp"
#include "util/ascii.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <map>

namespace interimap::detail::sync {

// After a crash between APPENDs and the commit of their mappings: the
// unmapped messages of the target at or above its recorded UIDNEXT that
// have the same body as an unmapped new message of the source are its
// copies; map them (by body digest, in UID order) instead of copying again.
// A copy whose source was expunged since (the append journal names the
// source, and the source no longer has it) is expunged, as an
// uninterrupted run would have: it is not copied back.
void recover(Context& ctx, const MailboxRecord& record, const std::vector<std::pair<Side, uint32_t>>& pending) {
  if (!record.state) {
    ctx.write().clear_pending_appends(record.idx);
    ctx.commit();
    ctx.journal->done(record.idx);
    return;
  }
  // Only the UIDVALIDITYs matter here (a plain SELECT, checked against
  // them); the clean UIDNEXTs are read from the record below.
  Box box = Box::from(record);
  box.select(ctx, /*resync=*/false);
  size_t recovered = 0;
  Plan plan;
  for (const auto& [target, target_next] : pending) {
    const Side source = other(target);
    const std::vector<AppendJournal::Entry> journal = ctx.journal->entries(box.idx, target, target_next);
    PerSide<UidSet> range;
    range[index(target)] = UidSet::range(std::max<uint32_t>(target_next, 1), kMaxUid);
    range[index(source)] = UidSet::range(std::max<uint32_t>((*record.state)[source].uidnext, 1), kMaxUid);
    for (Side s : kSides) {
      UidSet mapped;
      const uint32_t low = range[index(s)].ranges().front().first;
      ctx.db->for_each_mapping(box.idx, s, UidOrder::Descending, [&](const Mapping& m) {
        if (m.uid(s) < low) return false;
        mapped.insert(m.uid(s));
        return true;
      });
      range[index(s)].erase(mapped);
      const uint32_t next = box.m(s).uidnext().value_or(1);
      if (next <= low)
        range[index(s)].clear();
      else
        range[index(s)].erase(UidSet::range(next, kMaxUid));
    }
    if (range[index(target)].empty() || (range[index(source)].empty() && journal.empty())) continue;
    // The journal's sources the source still has (those in the range are
    // fetched below anyway).
    UidSet journaled;
    for (const auto& e : journal) journaled.insert(e.source_uid);
    journaled.erase(range[index(source)]);
    PerSide<std::vector<std::pair<Digest, uint32_t>>> digests;
    UidSet still_there;
    ctx.both.run([&](Side s) {
      box.m(s).fetch_messages(range[index(s)], [&](Message& msg) {
        digests[index(s)].emplace_back(digest_of(msg.body), msg.uid);
      });
      if (s == source && !journaled.empty())
        box.m(s).fetch_flags(journaled, [&](MessageFlags& f) { still_there.insert(f.uid); });
    });
    std::map<Digest, std::vector<uint32_t>> sources;
    auto& src = digests[index(source)];
    for (const auto& [d, uid] : src) still_there.insert(uid);
    std::sort(src.begin(), src.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    for (const auto& [d, uid] : src) sources[d].push_back(uid);  // descending: pop_back gives the lowest
    // Copies of messages the source no longer has, by digest.
    std::map<Digest, size_t> gone;
    for (const auto& e : journal)
      if (!still_there.contains(e.source_uid)) ++gone[e.digest];
    auto& dst = digests[index(target)];
    std::sort(dst.begin(), dst.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
    std::vector<Mapping> maps;
    for (const auto& [d, uid] : dst) {
      if (auto it = sources.find(d); it != sources.end() && !it->second.empty()) {
        const uint32_t suid = it->second.back();
        it->second.pop_back();
        maps.push_back(mapping_of(target, uid, suid));
      } else if (auto g = gone.find(d); g != gone.end() && g->second > 0) {
        --g->second;
        plan.expunge[index(target)].push_back(uid);
      }
    }
    if (!maps.empty()) ctx.write().add_mappings(box.idx, maps);
    recovered += maps.size();
  }
  for (Side s : kSides)
    if (!plan.expunge[index(s)].empty())
      ctx.warning(s, box.name,
                  fmt::format("Expunging {} message(s) copied by an interrupted run whose source was expunged since",
                              plan.expunge[index(s)].size()));
  apply(ctx, box, plan);
  ctx.write().clear_pending_appends(box.idx);
  ctx.commit();
  // The journal stays for resume() (the flags of the pairs recovered here
  // and of those the interrupted run recorded); sync_messages() removes it.
  box.finish(ctx);
  if (recovered > 0)
    ctx.log.warning("", fmt::format("Recovered {} message(s) copied to {} by an interrupted run", recovered,
                                    ctx.names.pretty(box.name)));
}

// An interrupted sync (mappings at or above the clean UIDNEXT).  The clean
// state is still true of the messages below the clean UIDNEXTs: what
// changed among them since (before or after the interruption) is taken
// up first, exactly as in a normal run.  Then the pairs the interrupted
// run copied are checked on both sides, their flags compared from scratch
// (their changes have no clean HIGHESTMODSEQ to be measured against), and
// the sync resumes past them.
void resume(Context& ctx, const MailboxRecord& record) {
  ctx.notice("", "Resuming interrupted sync for " + ctx.names.pretty(record.name));
  Box box = Box::from(record);
  box.resumed = true;
  // The flags each copy was appended with, per target side and source UID.
  PerSide<std::map<uint32_t, AppendJournal::Entry>> appended;
  for (Side t : kSides) appended[index(t)] = ctx.journal->latest(box.idx, t);
  const auto pairs = ctx.db->interrupted_mappings(record.idx);
  PerSide<UidSet> uids;
  for (const auto& p : pairs)
    for (Side s : kSides) uids[index(s)].insert(p.uid(s));
  box.select(ctx, /*resync=*/true);
  if (sync_known(ctx, box)) {
    auto& db = ctx.write();
    for (Side s : kSides) db.set_highestmodseq(box.idx, s, box.state(s).highestmodseq);
    ctx.commit();
  }
  PerSide<std::map<uint32_t, std::string>> present;
  ctx.both.run([&](Side s) {
    box.m(s).fetch_flags(uids[index(s)], [&](MessageFlags& f) {
      if (f.flags) present[index(s)][f.uid] = flag_string(*f.flags);
    });
  });
  Plan plan;
  PerSide<UidSet> ignore;
  for (const auto& p : pairs) {
    const auto l = present[0].find(p.local);
    const auto r = present[1].find(p.remote);
    if (l != present[0].end() && r != present[1].end()) {
      for (Side s : kSides) ignore[index(s)].insert(p.uid(s));
      if (l->second != r->second) {
        // No clean HIGHESTMODSEQ for these: the side whose flags are still
        // those the copy was appended with did not change them, so the
        // other side's change wins, as in an uninterrupted run.  Without a
        // journal line (or both changed), a difference is a conflict.
        const PerSide<const std::string*> now = {&l->second, &r->second};
        std::optional<std::string> wins;
        for (Side t : kSides) {
          const auto it = appended[index(t)].find(p.uid(other(t)));
          if (it == appended[index(t)].end()) continue;
          const std::string& was = it->second.flags;
          if (*now[index(t)] == was)
            wins = *now[index(other(t))];
          else if (*now[index(other(t))] == was)
            wins = *now[index(t)];
          break;
        }
        const std::string merged = wins ? *wins : resolve_conflict(ctx, box, p, l->second, r->second);
        if (merged != l->second) plan.flags[0][merged].push_back(p.local);
        if (merged != r->second) plan.flags[1][merged].push_back(p.remote);
      }
      continue;
    }
    // Copied on one side only: removed there, copied again below.
    if (l != present[0].end()) plan.expunge[0].push_back(p.local);
    if (r != present[1].end()) plan.expunge[1].push_back(p.remote);
    plan.forget.push_back(p.local);
  }
  apply(ctx, box, plan);
  if (!plan.forget.empty()) ctx.commit();  // after the EXPUNGEs
  sync_messages(ctx, box, ignore);
  box.finish(ctx);
}

// --repair: compare every UID and flag list with the database.  The
// SELECT resynchronizes from the clean state as a normal run does, so that
// a copy missing on one side is told apart: expunged since the last run
// (VANISHED: the expunge is propagated, as a normal run would) or lost
// otherwise (copied again).  The STOREs' UNCHANGEDSINCE is the server's
// HIGHESTMODSEQ as this pass saw it, not the database's older one.
void repair(Context& ctx, const MailboxRecord& record) {
  Box box = Box::from(record);
  const PerSide<uint64_t> clean = {box.state(Side::Local).highestmodseq, box.state(Side::Remote).highestmodseq};
  box.select(ctx, /*resync=*/true);
  // What vanished since the clean state; the flag changes are read below
  // from scratch.  Raises each clean HIGHESTMODSEQ to the server's.
  PerSide<UidSet> vanished;
  for (Side s : kSides) vanished[index(s)] = box.tracker[index(s)]->changes(box.m(s), box.state(s)).vanished;
  struct Seen {
    uint64_t modseq;
    std::string flags;
  };
  PerSide<std::map<uint32_t, Seen>> seen;
  ctx.both.run([&](Side s) {
    const uint32_t next = box.state(s).uidnext;
    if (next > 1)
      box.m(s).fetch_flags(UidSet::range(1, next - 1), [&](MessageFlags& f) {
        if (f.flags) seen[index(s)][f.uid] = Seen{f.modseq, flag_string(*f.flags)};
      });
    box.m(s).take_changes();
  });
  Plan plan;
  PerSide<std::vector<uint32_t>> missing;  // to copy again, per source side
  ctx.db->for_each_mapping(box.idx, Side::Local, UidOrder::Ascending, [&](const Mapping& p) {
    const PerSide<decltype(seen[0].begin())> it = {seen[0].find(p.local), seen[1].find(p.remote)};
    const PerSide<bool> has = {it[0] != seen[0].end(), it[1] != seen[1].end()};
    if (has[0] && has[1]) {
      const Seen& l = it[0]->second;
      const Seen& r = it[1]->second;
      const PerSide<bool> changed = {l.modseq > clean[0], r.modseq > clean[1]};
      if (l.flags == r.flags) {
      } else if (!changed[0] && changed[1]) {
        plan.flags[0][r.flags].push_back(p.local);
      } else if (changed[0] && !changed[1]) {
        plan.flags[1][l.flags].push_back(p.remote);
      } else {
        if (!changed[0] && !changed[1])
          ctx.log.warning("", fmt::format("Missed flag update in {} for (lUID,rUID) = ({},{}). Repairing.",
                                          ctx.names.pretty(box.name), p.local, p.remote));
        const std::string merged = resolve_conflict(ctx, box, p, l.flags, r.flags);
        plan.flags[0][merged].push_back(p.local);
        plan.flags[1][merged].push_back(p.remote);
      }
    } else if (!has[0] && !has[1]) {
      plan.forget.push_back(p.local);
      ctx.log.warning("", fmt::format("Pair (lUID,rUID) = ({},{}) vanished from {}. Repairing.", p.local, p.remote,
                                      ctx.names.pretty(box.name)));
    } else {
      const Side gone = has[0] ? Side::Remote : Side::Local, source = other(gone);
      plan.forget.push_back(p.local);
      if (vanished[index(gone)].contains(p.uid(gone))) {
        // Expunged since the last run: so is its copy, as in a normal run.
        plan.expunge[index(source)].push_back(p.uid(source));
      } else {
        // Lost some other way: copied again from the other side.
        ctx.warning(gone, box.name, fmt::format("UID {} disappeared. Redownloading {} UID {}.", p.uid(gone),
                                                to_string(source), p.uid(source)));
        missing[index(source)].push_back(p.uid(source));
      }
    }
    for (Side s : kSides)
      if (has[index(s)]) seen[index(s)].erase(it[index(s)]);
    return true;
  });
  apply(ctx, box, plan);
  if (!plan.forget.empty()) ctx.commit();  // after the EXPUNGEs
  for (Side s : kSides)
    for (const auto& [uid, unused] : seen[index(s)]) {
      ctx.warning(other(s), box.name, fmt::format("No match for modified {} UID {}. Redownloading.", to_string(s), uid));
      missing[index(s)].push_back(uid);
    }
  PerSide<UidSet> ignore;
  for (Side source : kSides)
    if (!missing[index(source)].empty())
      ignore[index(other(source))].insert(transfer(ctx, box, source, to_set(missing[index(source)]), true));
  // Pending changes stay: a STORE refused by UNCHANGEDSINCE (a change made
  // meanwhile) is taken up by sync_known() like in a normal run.
  sync_messages(ctx, box, ignore);
  box.finish(ctx);
}

}  // namespace interimap::detail::sync
