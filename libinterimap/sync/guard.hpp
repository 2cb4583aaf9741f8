// The guard (issue 15; doc/design.md "The guard"): two refusals that stop a
// run before it changes anything.
//  - Mass deletion: a side that lost all or most of its synchronized
//    messages at once (a store replaced by an empty one, every message
//    expunged, a database copied from another account) would have the
//    loss copied to the other side.  Counted from the listing, before any
//    mailbox is touched; per mailbox (optional) before its EXPUNGEs.
//  - Self-sync: [local] and [remote] reaching the same store, which the
//    reference copies into itself on every pass.
// The decisions are pure functions (unit-tested, tests/unit/test_guard.cpp);
// the Guard class gathers their inputs from the listing and the database.
#pragma once

#include <interimap/config.hpp>
#include <interimap/syncsession.hpp>

#include "sync/context.hpp"
#include "sync/mailbox_list.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace interimap::detail::sync {

// ---- Pure decisions.

// What one side's listing says of a mailbox the database has synchronized.
enum class Seen : std::uint8_t {
  Listed,    // there, same UIDVALIDITY: `messages` (if given) bounds the loss
  Replaced,  // there with another UIDVALIDITY: every mapped message counts as gone
  Missing,   // not listed (the other side lists it): every mapped message counts as gone
};

struct MailboxLoss {
  std::string name;          // database form
  std::uint64_t mapped = 0;  // the database's mappings
  PerSide<Seen> seen{};
  PerSide<std::optional<std::uint64_t>> messages;  // MESSAGES from the listing
};

// The mapped messages of a mailbox gone from `side`, at least: all of them
// when it was replaced, is missing or is empty; else mapped - MESSAGES
// (MESSAGES counts the new messages too, so this never overstates a loss);
// 0 without MESSAGES.
std::uint64_t gone_at_least(const MailboxLoss& box, Side side);

// A side-wide loss that stops the pass.
struct MassDeletion {
  Side side = Side::Local;        // the side the messages are gone from
  std::uint64_t gone = 0;         // at least this many mapped messages
  std::uint64_t mapped = 0;       // of this many
  std::size_t mailboxes = 0;      // mailboxes holding mapped messages
  std::vector<std::string> replaced, missing, emptied;  // database-form names
};

// The side whose loss reaches both limits (at least limits.minimum
// messages, more than limits.share percent of `mapped`), the larger loss
// if both do; nullopt when none does, or when limits.allow or
// limits.share == 0.
std::optional<MassDeletion> find_mass_deletion(const std::vector<MailboxLoss>& boxes, const MassDeletionLimits& limits);
// The error line's text (without the component): what was seen, where, the
// limits and the options that let it through.  `pretty` gives log names.
std::string describe(const MassDeletion& loss, const MassDeletionLimits& limits, const MailboxNames& names);

// Whether expunging `expunged` of a mailbox's `mapped` messages in one
// round exceeds the per-mailbox limit (at least mailbox_minimum, more than
// mailbox_share percent; mailbox_share > 0, not allow).
bool exceeds_mailbox_limit(std::uint64_t expunged, std::uint64_t mapped, const MassDeletionLimits& limits);

// What a listing says of one selectable mailbox (database form -> values).
struct ListedStatus {
  std::optional<std::uint32_t> uidvalidity, uidnext, messages;
  std::optional<std::uint64_t> highestmodseq;
  bool operator==(const ListedStatus&) const = default;
};
using Listing = std::map<std::string, ListedStatus, std::less<>>;

// Whether both listings may come from one store, worth a probe: the same
// mailboxes (at least one), each with the same UIDVALIDITY, and the same
// UIDNEXT, HIGHESTMODSEQ and MESSAGES where both sides give them, and a
// message somewhere (empty stores have nothing to copy into themselves).
// A store listed twice always matches; two independent stores match only
// when one is a file copy of the other, or when they were made in the
// same second with the same messages (Dovecot's UIDVALIDITY is a creation
// time; equal UIDVALIDITYs in the database are no evidence either).  So
// after a first sync (`first_sync` false: the database has synchronized a
// listed mailbox) HIGHESTMODSEQ, which differs with the stores' history,
// must be given on both sides: without it (a plain side) such a pair would
// be probed on every run, three commands more per no-op run.
bool looks_like_one_store(const PerSide<Listing>& listings, bool first_sync);

// The mass-deletion options of the default section; ConfigError for a bad
// value.  (SyncSettings::from_config.)
MassDeletionLimits read_mass_deletion_limits(const Config& config);

// ---- The engine's checks.

// Whether the listing must carry MESSAGES (the side-wide check is on).
bool guard_wants_messages(const SyncSettings& settings);

// Per mailbox, before a round of its EXPUNGEs (known.cpp apply()): throws
// SyncError when `expunge[side]` of the mailbox's mapped messages exceed
// the per-mailbox limit on a side.  `forgets`: the round forgets mappings
// (a recover() round, which expunges unrecorded copies only, does not).
void check_mailbox_expunges(Context& ctx, MailboxId idx, std::string_view name, const PerSide<std::size_t>& expunge,
                            bool forgets);

class Guard {
 public:
  // Before a Sync or Repair pass changes anything (after MailboxList::list(),
  // before synchronize()): refuses a self-sync (the first pass of the
  // session only) and a mass deletion, with a SyncError.  On a self-sync,
  // a database that holds no mailbox (this run created it) is removed.
  void before_pass(Context& ctx, MailboxList& list);

 private:
  void refuse_self_sync(Context& ctx, MailboxList& list);
  void refuse_mass_deletion(Context& ctx, MailboxList& list);
  bool self_checked_ = false;
};

}  // namespace interimap::detail::sync
