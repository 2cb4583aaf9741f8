#include "sync/known.hpp"

#include "sync/flags.hpp"
#include "sync/guard.hpp"

#include <fmt/format.h>

#include <optional>
#include <set>
#include <utility>

namespace interimap::detail::sync {

namespace {

// RFC 7162 3.1.3: a UID in [MODIFIED] failed the UNCHANGEDSINCE test, so
// its MODSEQ is above it.  A server that refuses a STORE for a message it
// did not change would have the change dropped silently (the flags
// fetched again show nothing new): that is a protocol error, and the run
// ends before the clean state moves past the change (the reference stops
// on any [MODIFIED] too).
void check_refusals(Context& ctx, Box& box, Side side, const Mailbox::UpdateResult& r, uint64_t since) {
  UidSet refused;
  for (const UidSet& set : r.refused) refused.insert(set);
  if (refused.empty()) return;
  std::optional<std::pair<uint32_t, uint64_t>> bad;
  box.m(side).fetch_flags(refused, [&](MessageFlags& f) {
    if (!bad && f.modseq > 0 && f.modseq <= since) bad = std::pair(f.uid, f.modseq);
  });
  if (bad)
    throw ProtocolError(std::string(to_string(side)),
                        fmt::format("{}: the server refused to store the flags of UID {} ([MODIFIED]) although its "
                                    "MODSEQ {} is not above UNCHANGEDSINCE {} (RFC 7162 3.1.3)",
                                    ctx.names.wire(side, box.name), bad->first, bad->second, since));
}

// UID EXPUNGEs `expunge` and replaces the flags of each list of UIDs, all
// in one pipelined round trip, and logs what the server did.
void update_side(Context& ctx, Box& box, Side side, const std::vector<uint32_t>& expunge, const FlagUpdates& updates) {
  if (expunge.empty() && updates.empty()) return;
  const UidSet set = to_set(expunge);
  std::vector<Mailbox::FlagStore> stores;
  stores.reserve(updates.size());
  for (const auto& [flags, uids] : updates) stores.push_back({to_set(uids), StoreMode::Replace, split_flags(flags)});
  // RFC 7162 3.1.3: a change made meanwhile is not overwritten; refused
  // UIDs come back as changes.
  const auto since = box.tracker[index(side)]->unchanged_since(box.state(side));
  const Mailbox::UpdateResult r = box.m(side).update(set, stores, since);
  if (since) check_refusals(ctx, box, side, r, *since);
  if (!expunge.empty()) {
    UidSet done = set;
    done.erase(r.not_expunged);
    box.tracker[index(side)]->expunged(done);
    if (!done.empty()) ctx.info(side, box.name, fmt::format("Removed {} UID(s) {}", done.size(), done.to_string()));
    if (!r.not_expunged.empty()) ctx.warning(side, box.name, "Couldn't UID EXPUNGE " + r.not_expunged.to_string());
  }
  size_t k = 0;
  for (const auto& [flags, uids] : updates) {
    UidSet ok = stores[k].uids;
    ok.erase(r.refused[k]);
    box.tracker[index(side)]->stored(ok, flags);
    if (!ok.empty()) ctx.info(side, box.name, fmt::format("Updated flags ({}) for UID {}", flags, ok.to_string()));
    if (!r.refused[k].empty())
      ctx.info(side, box.name,
               fmt::format("Couldn't update flags ({}) for UID {}, will try again later", flags, r.refused[k].to_string()));
    ++k;
  }
}

// A server's VANISHED set may name more UIDs than the database maps (a
// hostile "VANISHED 1:4294967295" below a large clean UIDNEXT): the
// planner expands the set to look each UID up, so past the number of
// mappings it is first clipped to the mapped UIDs (ranges, nothing
// expanded); the rest is one note, as unmatched UIDs are.
void clip_vanished(Context& ctx, const Box& box, PerSide<KnownChanges>& changes, std::vector<PlanNote>& notes) {
  std::optional<uint64_t> count;
  for (Side side : kSides) {
    UidSet& vanished = changes[index(side)].vanished;
    if (vanished.empty()) continue;
    if (!count) count = ctx.db->mapping_count(box.idx);
    if (vanished.size() <= *count) continue;
    UidSet unmatched = clip_to_known(vanished, mapped_uids(*ctx.db.lock(), box.idx, side));
    notes.push_back({PlanNote::Kind::VanishedUnmatched, side, std::move(unmatched), {}, {}, {}, {}});
  }
}

}  // namespace

UidSet clip_to_known(UidSet& set, const UidSet& known) {
  UidSet kept = set.intersection(known);
  UidSet rest = std::move(set);
  rest.erase(kept);
  set = std::move(kept);
  return rest;
}

bool Plan::empty() const {
  return expunge[0].empty() && expunge[1].empty() && flags[0].empty() && flags[1].empty() && forget.empty();
}

Plan plan_known_changes(const PerSide<KnownChanges>& changes, const PeerLookup& peers, std::vector<PlanNote>& notes) {
  Plan plan;
  PerSide<std::set<uint32_t>> forgotten;  // both halves of plan.forget's mappings

  // Vanished messages.
  PerSide<std::vector<uint32_t>> unmatched;
  for (Side side : kSides) {
    const UidSet& vanished = changes[index(side)].vanished;
    if (vanished.empty()) continue;
    const UidSet& vanished_there = changes[index(other(side))].vanished;
    const std::vector<uint32_t> uids = vanished.to_vector();
    const auto mapped = peers(side, uids);
    for (size_t k = 0; k < uids.size(); ++k) {
      if (!mapped[k]) {
        unmatched[index(side)].push_back(uids[k]);
        continue;
      }
      const uint32_t peer = *mapped[k];
      // A pair vanished on both sides was forgotten with the local side.
      if (side == Side::Remote && vanished_there.contains(peer)) continue;
      if (!vanished_there.contains(peer)) plan.expunge[index(other(side))].push_back(peer);
      const Mapping pair = mapping_of(side, uids[k], peer);
      plan.forget.push_back(pair.local);
      forgotten[0].insert(pair.local);
      forgotten[1].insert(pair.remote);
    }
  }
  for (Side side : kSides)
    if (!unmatched[index(side)].empty())
      notes.push_back({PlanNote::Kind::VanishedUnmatched, side, to_set(unmatched[index(side)]), {}, {}, {}, {}});

  // Flag changes.
  PerSide<std::map<uint32_t, std::optional<uint32_t>>> peer_of;
  for (Side side : kSides) {
    std::vector<uint32_t> uids;
    for (const auto& [uid, flags] : changes[index(side)].flags)
      if (forgotten[index(side)].count(uid) == 0) uids.push_back(uid);
    if (uids.empty()) continue;
    const auto mapped = peers(side, uids);
    for (size_t k = 0; k < uids.size(); ++k) peer_of[index(side)][uids[k]] = mapped[k];
  }
  auto peer = [&](Side side, uint32_t uid) -> std::optional<uint32_t> {
    const auto& m = peer_of[index(side)];
    const auto it = m.find(uid);
    return it == m.end() ? std::nullopt : it->second;
  };
  const auto& local = changes[0].flags;
  const auto& remote = changes[1].flags;
  for (const auto& [luid, lflags] : local) {
    const auto ruid = peer(Side::Local, luid);
    if (!ruid) {
      notes.push_back({PlanNote::Kind::ModifiedUnmatched, Side::Local, UidSet::range(luid, luid), {}, {}, {}, {}});
      continue;
    }
    if (const auto it = remote.find(*ruid); it != remote.end()) {
      if (lflags != it->second) {
        std::string merged = flag_union(lflags, it->second);
        plan.flags[0][merged].push_back(luid);
        plan.flags[1][merged].push_back(*ruid);
        notes.push_back({PlanNote::Kind::Conflict, Side::Local, {}, Mapping{luid, *ruid}, lflags, it->second, merged});
      }
    } else {
      plan.flags[1][lflags].push_back(*ruid);
    }
  }
  for (const auto& [ruid, rflags] : remote) {
    const auto luid = peer(Side::Remote, ruid);
    if (!luid) {
      notes.push_back({PlanNote::Kind::ModifiedUnmatched, Side::Remote, UidSet::range(ruid, ruid), {}, {}, {}, {}});
      continue;
    }
    if (local.count(*luid) == 0) plan.flags[0][rflags].push_back(*luid);
  }
  return plan;
}

void log_note(Context& ctx, const Box& box, const PlanNote& note) {
  const Side side = note.side;
  switch (note.kind) {
    case PlanNote::Kind::VanishedUnmatched:
      // Logged for the side that would have expunged it.
      ctx.warning(other(side), box.name,
                  fmt::format("No match for {} vanished {} UID(s) {}. Ignoring.", note.uids.size(), to_string(side),
                              note.uids.to_string()));
      break;
    case PlanNote::Kind::ModifiedUnmatched:
      ctx.warning(other(side), box.name,
                  fmt::format("No match for modified {} UID {}. Try '--repair'.", to_string(side), note.uids.to_string()));
      break;
    case PlanNote::Kind::Conflict:
      ctx.log.warning("", fmt::format("Conflicting flag update in {} for local UID {} ({}) and remote UID {} ({}). "
                                      "Setting both to the union ({}).",
                                      ctx.names.pretty(box.name), note.pair.local, note.local_flags, note.pair.remote,
                                      note.remote_flags, note.merged));
      break;
  }
}

std::string resolve_conflict(Context& ctx, const Box& box, Mapping pair, const std::string& local_flags,
                             const std::string& remote_flags) {
  PlanNote note{PlanNote::Kind::Conflict, Side::Local, {}, pair, local_flags, remote_flags,
                flag_union(local_flags, remote_flags)};
  log_note(ctx, box, note);
  return note.merged;
}

void apply(Context& ctx, Box& box, const Plan& plan, const std::function<void(Side)>& then) {
  check_mailbox_expunges(ctx, box.idx, box.name, {plan.expunge[0].size(), plan.expunge[1].size()}, !plan.forget.empty());
  ctx.both.run([&](Side s) {
    update_side(ctx, box, s, plan.expunge[index(s)], plan.flags[index(s)]);
    if (then) then(s);
  });
  // Forgotten only now that both sides confirmed the EXPUNGE (doc/design.md
  // "Reliability invariants"); committed by the caller.
  if (!plan.forget.empty())
    for (uint32_t u : ctx.write().remove_mappings(box.idx, Side::Local, plan.forget))
      ctx.log.warning("database", fmt::format("Can't delete (idx,lUID) = ({},{})", box.idx, u));
}

// Messages whose side cannot tell whether their flags changed (a plain side
// without a record, see KnownChanges::unsure), once, after a run in
// another mode.  Where the other side changed them, its change stands
// (the common case; a change made on both sides since the last run is
// then not merged, the one limit of a switch to plain).  Where it did not
// (it would have said so) and the flags differ, this side changed them.
// Both sides unsure and different: a conflict, settled by the union.
void settle_unsure(Box& box, PerSide<KnownChanges>& changes, const PeerLookup& peers) {
  PerSide<std::map<uint32_t, std::string>> unsure = {std::move(changes[0].unsure), std::move(changes[1].unsure)};
  for (Side s : kSides) {
    const Side o = other(s);
    auto& mine = unsure[index(s)];
    if (mine.empty()) continue;
    std::vector<uint32_t> uids;
    for (const auto& [uid, flags] : mine) uids.push_back(uid);
    const auto mapped = peers(s, uids);
    std::map<uint32_t, std::pair<uint32_t, const std::string*>> ask;  // peer -> (uid, flags)
    for (size_t k = 0; k < uids.size(); ++k) {
      if (!mapped[k]) continue;
      const uint32_t peer = *mapped[k];
      const std::string& flags = mine[uids[k]];
      // Changed (or expunged) there: that change stands.
      if (changes[index(o)].vanished.contains(peer) || changes[index(o)].flags.count(peer) != 0) continue;
      if (auto theirs = unsure[index(o)].find(peer); theirs != unsure[index(o)].end()) {
        if (s == Side::Local && theirs->second != flags) {  // once per pair
          changes[index(s)].flags[uids[k]] = flags;
          changes[index(o)].flags[peer] = theirs->second;
        }
        continue;
      }
      ask.emplace(peer, std::pair(uids[k], &flags));
    }
    if (ask.empty()) continue;
    UidSet set;
    for (const auto& [peer, unused] : ask) set.insert(peer);
    box.m(o).fetch_flags(set, [&](MessageFlags& f) {
      const auto it = ask.find(f.uid);
      if (it == ask.end() || !f.flags) return;
      if (flag_string(*f.flags) != *it->second.second) changes[index(s)].flags[it->second.first] = *it->second.second;
    });
  }
}

bool sync_known(Context& ctx, Box& box, const std::function<void(Side)>& then) {
  const PeerLookup peers = [&](Side side, std::span<const uint32_t> uids) { return ctx.db->lookup(box.idx, side, uids); };
  bool changed = false;
  bool first = true;
  for (;;) {
    PerSide<KnownChanges> changes;
    for (Side s : kSides) {
      auto& early = box.early[index(s)];
      changes[index(s)] = early ? std::move(*early) : box.tracker[index(s)]->changes(box.m(s), box.state(s));
      early.reset();
    }
    if (changes[0].empty() && changes[1].empty()) {
      if (first && then) ctx.both.run(then);
      return changed;
    }
    changed = true;
    settle_unsure(box, changes, peers);
    std::vector<PlanNote> notes;
    clip_vanished(ctx, box, changes, notes);
    const Plan plan = plan_known_changes(changes, peers, notes);
    for (const auto& note : notes) log_note(ctx, box, note);
    apply(ctx, box, plan, first ? then : std::function<void(Side)>{});
    first = false;
  }
}

}  // namespace interimap::detail::sync
