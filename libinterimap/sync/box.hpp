// A mailbox being synchronized: its record, both sides' Mailbox objects,
// the last clean state of each side (the reference's persistent cache),
// and how each side tracks changes.
#pragma once

#include <interimap/mailbox.hpp>
#include <interimap/statedb.hpp>

#include "sync/change_tracker.hpp"
#include "sync/context.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace interimap::detail::sync {

struct Box {
  MailboxId idx = 0;
  std::string name;  // database form
  // Per side, the last clean state: UIDVALIDITY (0: not known yet, a new
  // mailbox), UIDNEXT (everything at or above is new; 0: everything),
  // HIGHESTMODSEQ (every change up to it is propagated; 0: none known).
  PerSide<SideState> clean{};
  PerSide<std::optional<Mailbox>> mailbox;
  PerSide<std::unique_ptr<ChangeTracker>> tracker;
  // An interimap_pending_append row is committed for that side as target.
  PerSide<bool> pending_append{};
  PerSide<uint32_t> pending_next{};  // that row's UIDNEXT (the journal's key)
  bool resumed = false;              // by resume(): the append journal is done with once it ends
  // With want_sizes, select() gets (UID, RFC822.SIZE) of the messages at
  // or above the clean UIDNEXT, for cross_pick().
  bool want_sizes = false;
  PerSide<std::vector<std::pair<uint32_t, uint64_t>>> new_sizes;
  // A side's first changes(), taken before the other side was selected
  // (sync_mailbox()); sync_known() uses them instead of asking again.
  PerSide<std::optional<KnownChanges>> early;

  // A box for a record, with its whole clean state when it has one.  Each
  // caller says what it does not use: a new mailbox has no clean state,
  // resume() forgets the HIGHESTMODSEQs, recover() reads the UIDVALIDITYs
  // only.
  static Box from(const MailboxRecord& record);

  Mailbox& m(Side side) { return *mailbox[index(side)]; }
  SideState& state(Side side) { return clean[index(side)]; }

  // SELECTs both sides at once.  With resync, each side's tracker asks for
  // the changes since the clean state.  Fails when a UIDVALIDITY differs
  // from the clean state's (SyncError naming the side) or the server gives
  // no UIDNEXT (ProtocolError).
  void select(Context& ctx, bool resync, PerSide<bool> sides = {true, true});
  // In long-lived mode, leaves the selected state: LIST (STATUS) may
  // report stale values for the selected mailbox (the reference UNSELECTs
  // too), and the next pass relies on them.
  void finish(Context& ctx);
};

}  // namespace interimap::detail::sync
