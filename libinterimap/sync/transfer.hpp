// New messages (the reference's pull_new_messages): FETCH from one side,
// APPEND to the other, streaming, each copy's mapping recorded once the
// target confirmed it (APPENDUID); and the crossing of a few small new
// messages on both sides in one round trip each way.
#pragma once

#include <interimap/mailbox.hpp>

#include "sync/box.hpp"
#include "sync/context.hpp"

#include <vector>

namespace interimap::detail::sync {

// FETCH `uids` from `source` and APPEND them to the other side, a batch
// appended while the next is read; returns the new target UIDs.  With
// announce, each message is logged with its sender (--repair's copies).
UidSet transfer(Context& ctx, Box& box, Side source, const UidSet& uids, bool announce);

// New messages on both sides, few and small (the usual poll): cross_pick()
// chooses up to 128 messages / 1 MiB per side from the sizes select()
// got, nothing unless both sides have new messages; their FETCHes go out
// right after each side's first STOREs (sync_known's `then`), then
// cross_append() appends both ways at once and adds to `ignore` what it
// copied, per side, for sync_messages().
PerSide<UidSet> cross_pick(const Box& box);
void cross_append(Context& ctx, Box& box, const PerSide<UidSet>& pick, PerSide<std::vector<Message>>& fetched,
                  PerSide<UidSet>& ignore);

// New messages both ways (except `ignore`, already copied) until neither
// side has more, then known messages, then the new clean state, committed.
void sync_messages(Context& ctx, Box& box, PerSide<UidSet> ignore);

}  // namespace interimap::detail::sync
