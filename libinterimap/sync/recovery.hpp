// What a run does when the last one did not end cleanly, and --repair
// (kept apart from the normal pass, as leveldb keeps repair.cc apart):
//  - recover(): copies an interrupted run made but did not record;
//  - resume(): mappings recorded above the clean UIDNEXT (an interrupted
//    sync), checked on both sides before the sync goes on;
//  - repair(): every UID and flag list compared with the database.
#pragma once

#include <interimap/statedb.hpp>

#include "sync/context.hpp"

#include <cstdint>
#include <utility>
#include <vector>

namespace interimap::detail::sync {

// `pending`: the record's interimap_pending_append rows (target side, its
// UIDNEXT before the first APPEND).
void recover(Context& ctx, const MailboxRecord& record, const std::vector<std::pair<Side, uint32_t>>& pending);
void resume(Context& ctx, const MailboxRecord& record);
void repair(Context& ctx, const MailboxRecord& record);

}  // namespace interimap::detail::sync
