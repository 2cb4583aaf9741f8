#include "sync/adopt.hpp"

#include "sync/adopt_match.hpp"
#include "sync/flags.hpp"
#include "sync/known.hpp"
#include "sync/transfer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace interimap::detail::sync {

namespace {

// What the matching found in a selected box.
struct Matched {
  std::vector<Mapping> pairs;                             // ascending by local UID
  PerSide<std::map<uint32_t, std::string>> flags;         // of the paired messages, flag_string form
  PerSide<UidSet> paired;                                 // the pairs' UIDs per side
  PerSide<uint64_t> seen{};                               // messages each side reported below its UIDNEXT
};

// Reads both sides' keys (one pipelined UID FETCH per side, no body),
// confirms the shared keys by digest, pairs (adopt_match.hpp).  Memory:
// one summary per message the server announced (EXISTS) below the UIDNEXT
// of the SELECT, whatever else it sends; the digests and flags of the
// candidates only.
Matched match(Context& ctx, Box& box) {
  PerSide<std::vector<Summary>> summaries;
  Matched out;
  ctx.both.run([&](Side s) {
    Mailbox& m = box.m(s);
    const uint32_t next = m.uidnext().value_or(1);
    if (next <= 1 || m.exists() == 0) return;
    // Never more entries than the server announced messages, nor UIDs
    // (doc/design.md "Bounding what a server sends").
    const uint64_t limit = std::min<uint64_t>(m.exists(), next - 1);
    auto& v = summaries[index(s)];
    v.reserve(static_cast<size_t>(std::min<uint64_t>(limit, 1u << 16)));
    HeaderFetch what;
    what.fields = {"MESSAGE-ID"};
    uint64_t& n = out.seen[index(s)];
    m.fetch_headers(UidSet::range(1, next - 1), what, [&](MessageHeader& h) {
      if (n >= limit) return;
      ++n;
      if (auto sum = summarize(h.uid, h.size, h.internaldate, h.header)) v.push_back(*sum);
    });
  });
  const DigestPlan plan = plan_digests(summaries);
  PerSide<std::map<uint32_t, Digest>> digests;
  PerSide<std::map<uint32_t, std::string>> flags;
  ctx.both.run([&](Side s) {
    Mailbox& m = box.m(s);
    auto& d = digests[index(s)];
    auto& f = flags[index(s)];
    if (!plan.header[index(s)].empty()) {
      HeaderFetch what;
      what.size_and_date = false;
      what.flags = true;
      m.fetch_headers(plan.header[index(s)], what, [&](MessageHeader& h) {
        if (!h.flags) return;  // not confirmed: copied
        d[h.uid] = digest_of(h.header);
        f[h.uid] = flag_string(*h.flags);
      });
    }
    if (!plan.body[index(s)].empty())
      m.fetch_messages(plan.body[index(s)], [&](Message& msg) {
        if (msg.body.empty()) return;
        d[msg.uid] = digest_of(msg.body);
        f[msg.uid] = flag_string(msg.flags);
      });
  });
  out.pairs = pair_messages(summaries, digests);
  for (const Mapping& p : out.pairs)
    for (Side s : kSides) {
      out.paired[index(s)].insert(p.uid(s));
      out.flags[index(s)][p.uid(s)] = std::move(flags[index(s)][p.uid(s)]);
    }
  return out;
}

// Stores `merged(pair)` on the side(s) whose flags differ and tells the
// trackers; the caller then records the pairs.  The STOREs go first:
// should the run die before that commit, the next one pairs again and
// merges to the same flags.
template <class Merge>
void keep_pairs(Context& ctx, Box& box, const Matched& mt, Merge&& merged) {
  Plan plan;
  for (const Mapping& p : mt.pairs) {
    const PerSide<const std::string*> now = {&mt.flags[0].at(p.local), &mt.flags[1].at(p.remote)};
    const std::string flags = merged(p, *now[0], *now[1]);
    for (Side s : kSides) {
      if (flags != *now[index(s)]) plan.flags[index(s)][flags].push_back(p.uid(s));
      box.tracker[index(s)]->known_flags(p.uid(s), flags);
    }
  }
  for (Side s : kSides) {
    // Like our copies: their flags are known, not changes (a CONDSTORE
    // side would otherwise report them on the next run).
    std::vector<uint32_t> uids;
    for (const auto& [first, last] : mt.paired[index(s)].ranges())
      for (uint64_t u = first; u <= last; ++u) uids.push_back(static_cast<uint32_t>(u));
    box.tracker[index(s)]->appended(uids);
  }
  apply(ctx, box, plan);
}

}  // namespace

PerSide<UidSet> adopt(Context& ctx, Box& box) {
  if (box.m(Side::Local).exists() == 0 || box.m(Side::Remote).exists() == 0) return {};
  const Matched mt = match(ctx, box);
  if (mt.pairs.empty()) return {};
  for (Side s : kSides)
    ctx.info(s, box.name,
             fmt::format("Adopted {} of {} message(s), already present on both sides", mt.pairs.size(),
                         mt.seen[index(s)]));
  // Both copies are the same message seen by two clients: each side's flags
  // count as a change, merged as a conflict is (the union).
  keep_pairs(ctx, box, mt, [](const Mapping&, const std::string& l, const std::string& r) {
    return l == r ? l : flag_union(l, r);
  });
  // Recorded before anything is copied, with the new state (committed
  // here): a crash from now on resumes these pairs ("Resuming interrupted
  // sync", their flags compared again) and copies only the rest.
  ctx.write().add_mappings(box.idx, mt.pairs);
  ctx.commit();
  return mt.paired;
}

PerSide<bool> uidvalidity_changed(Context& ctx, const MailboxList& list, const MailboxRecord& record) {
  PerSide<bool> changed{};
  if (!record.state) return changed;
  for (Side s : kSides) {
    const MailboxInfo* info = list.info(s, ctx.names.wire(s, record.name));
    changed[index(s)] = info != nullptr && info->uidvalidity && *info->uidvalidity != (*record.state)[s].uidvalidity;
  }
  return changed;
}

bool recover_uidvalidity(Context& ctx, const MailboxList& list, const MailboxRecord& record) {
  const PerSide<bool> changed = uidvalidity_changed(ctx, list, record);
  if (!any_side(changed)) return false;
  Box box = Box::from(record);
  const MailboxState old = *record.state;
  // The changed side's UIDs are void: it is selected as a new mailbox, and
  // the flags recorded for it (change-tracking plain) are forgotten in the
  // transaction that records the new state.  The other side keeps its
  // clean state, so that what changed there since the last run is known.
  for (Side s : kSides)
    if (changed[index(s)]) {
      box.state(s) = SideState{};
      ctx.write().clear_synced_flags(box.idx, s);
    }
  box.select(ctx, /*resync=*/true);
  PerSide<KnownChanges> since;
  PerSide<UidSet> was_mapped;  // the unchanged side's messages mapped before the change
  for (Side s : kSides)
    if (!changed[index(s)]) {
      since[index(s)] = box.tracker[index(s)]->changes(box.m(s), box.state(s));
      was_mapped[index(s)] = mapped_uids(*ctx.db.lock(), box.idx, s, old[s].uidnext);
    }
  const Matched mt = match(ctx, box);
  for (Side s : kSides) {
    if (!changed[index(s)]) continue;
    const Side o = other(s);
    // What the other side had mapped and this side no longer has: copied back.
    UidSet lost = was_mapped[index(o)];
    lost.erase(mt.paired[index(o)]);
    lost.erase(since[index(o)].vanished);
    const uint64_t to_here = mt.seen[index(o)] - mt.paired[index(o)].size();
    const uint64_t to_there = mt.seen[index(s)] - mt.paired[index(s)].size();
    ctx.warning(s, box.name,
                fmt::format("UIDVALIDITY changed ({} -> {}): re-paired {} message(s) by content; copying {} message(s) "
                            "to {} ({} of them lost with the change) and {} to {}",
                            old[s].uidvalidity, box.m(s).uidvalidity(), mt.pairs.size(), to_here, to_string(s),
                            lost.size(), to_there, to_string(o)));
  }
  // Flags: the unchanged side's change since the last run wins (the
  // changed side lost its history: its flags may be a recreation's); any
  // other difference is merged as a conflict, the union.
  keep_pairs(ctx, box, mt, [&](const Mapping& p, const std::string& l, const std::string& r) {
    if (l == r) return l;
    for (Side s : kSides)
      if (!changed[index(s)] && since[index(s)].flags.count(p.uid(s)) != 0) return s == Side::Local ? l : r;
    return flag_union(l, r);
  });
  PerSide<uint32_t> uidvalidity{};
  for (Side s : kSides) uidvalidity[index(s)] = box.m(s).uidvalidity();
  // One transaction: the old pairs and pending appends go, the new pairs
  // and UIDVALIDITY come, the state starts again from UIDNEXT 0 (so that
  // every unpaired message is copied, and a crash from here resumes the
  // pairs as an interrupted first sync would).
  const bool had_pending = !ctx.db->pending_appends(box.idx).empty();
  auto& db = ctx.write();
  db.reset_state(box.idx, uidvalidity[0], uidvalidity[1]);
  db.add_mappings(box.idx, mt.pairs);
  ctx.commit();
  // The journal's lines of those pending appends name void UIDs (recover()
  // was not run for this mailbox): done with them (the file goes once no
  // other mailbox needs it).
  if (had_pending) ctx.journal->done(box.idx);
  for (Side s : kSides) box.state(s) = SideState{uidvalidity[index(s)], 0, 0};

  sync_messages(ctx, box, mt.paired);
  box.finish(ctx);
  return true;
}

}  // namespace interimap::detail::sync
