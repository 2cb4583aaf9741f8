// Adoption of existing mail and UIDVALIDITY recovery (doc/design.md
// "Adoption and UIDVALIDITY recovery"; our addition, issue 15).
//  - adopt(): the first sync of a mailbox that holds messages on both
//    sides pairs the identical ones (adopt_match) instead of copying each
//    side to the other;
//  - recover_uidvalidity(): a side whose UIDVALIDITY changed has its
//    messages paired again with the other side's the same way, and the
//    mailbox is synchronized from there, nothing expunged.
#pragma once

#include <interimap/statedb.hpp>

#include "sync/box.hpp"
#include "sync/context.hpp"
#include "sync/mailbox_list.hpp"

namespace interimap::detail::sync {

// A new mailbox, both sides selected and its state initialized in the
// open transaction: pairs the messages both sides already hold, gives
// each pair the union of its flags (as a conflict would), records the
// pairs and commits, and returns each side's paired UIDs (not to be
// copied: sync_messages()'s `ignore`).  Nothing is read when a side is
// empty.
PerSide<UidSet> adopt(Context& ctx, Box& box);

// The sides of a synchronized mailbox whose UIDVALIDITY in this pass's
// listing differs from the recorded one.
PerSide<bool> uidvalidity_changed(Context& ctx, const MailboxList& list, const MailboxRecord& record);
inline bool any_side(PerSide<bool> sides) { return sides[0] || sides[1]; }

// When uidvalidity_changed() says so: re-pairs the mailbox's messages,
// copies what either side lacks (a message the changed side lost comes
// back from the other side, nothing is expunged), records the new
// UIDVALIDITY and mappings, warns with the counts, and returns true.
// Returns false, doing nothing, when no UIDVALIDITY changed.
bool recover_uidvalidity(Context& ctx, const MailboxList& list, const MailboxRecord& record);

}  // namespace interimap::detail::sync
