// Known messages (the reference's sync_known_messages): what vanished or
// changed flags on one side is planned for the other, then applied to
// both servers in one pipelined round trip each.  The planner is pure
// (unit-tested); apply() is the one way the normal pass, resume() and
// --repair change known messages on the servers.
#pragma once

#include "sync/box.hpp"
#include "sync/change_tracker.hpp"
#include "sync/context.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace interimap::detail::sync {

// Flag string (flag_string() form) -> the UIDs whose flags become exactly that.
using FlagUpdates = std::map<std::string, std::vector<uint32_t>>;

// Changes to make on both servers and in the database.
struct Plan {
  PerSide<std::vector<uint32_t>> expunge;  // UIDs to UID EXPUNGE, per side
  PerSide<FlagUpdates> flags;              // flags to replace, per side
  std::vector<uint32_t> forget;            // local UIDs whose mappings go once both sides confirmed
  bool empty() const;
};

// What the planner met that the user should hear of, in order.
struct PlanNote {
  enum class Kind {
    VanishedUnmatched,  // vanished UIDs of `side` (uids) without a mapping: ignored
    ModifiedUnmatched,  // a modified UID of `side` (uids) without a mapping: try --repair
    Conflict,           // both copies changed differently: both get the union
  };
  Kind kind = Kind::Conflict;
  Side side = Side::Local;
  UidSet uids;
  Mapping pair;                                  // Conflict: the two UIDs
  std::string local_flags, remote_flags, merged; // Conflict: both sides' flags, their union
};

// For each UID of `side`, the other side's UID it is mapped to, if any
// (StateDB::lookup).
using PeerLookup = std::function<std::vector<std::optional<uint32_t>>(Side side, std::span<const uint32_t> uids)>;

// Plans one round of known-message changes: a message vanished on one side
// is expunged on the other (unless it vanished there too) and its mapping
// forgotten; flags changed on one side are set on the other; flags
// changed on both sides differently become their union on both.  A
// mapping being forgotten counts as gone for the flag changes (the
// reference forgets before it looks these up).
// Keeps in `set` only the UIDs `known` holds and returns the others, in
// ranges, nothing expanded: a server's set (VANISHED 1:4294967295) is
// clipped to what the client knows before anything is sized by it.
UidSet clip_to_known(UidSet& set, const UidSet& known);

Plan plan_known_changes(const PerSide<KnownChanges>& changes, const PeerLookup& peers, std::vector<PlanNote>& notes);

// Logs a note as the reference words it.
void log_note(Context& ctx, const Box& box, const PlanNote& note);
// A flag conflict found outside the planner (resume, --repair): logs it
// as the reference does and returns the union both sides get.
std::string resolve_conflict(Context& ctx, const Box& box, Mapping pair, const std::string& local_flags,
                             const std::string& remote_flags);

// Applies a plan: both servers at once, each one pipelined round trip
// (UID EXPUNGE and the flag STOREs, UNCHANGEDSINCE the clean state per
// the side's tracker); `then(side)`, if set, runs on each side right
// after its updates.  Then the mappings of plan.forget are removed in the
// open transaction (not committed: the caller commits with what follows).
void apply(Context& ctx, Box& box, const Plan& plan, const std::function<void(Side)>& then = {});

// Plans and applies the known-message changes of both sides until
// neither has anything pending; `then(side)` runs once on each side after
// its first round of updates (or at once when there is none: the FETCHes
// of new messages hide there behind the slower side's STOREs).  Returns
// whether anything changed.
bool sync_known(Context& ctx, Box& box, const std::function<void(Side)>& then = {});

}  // namespace interimap::detail::sync
