// The pass over the mailboxes (interimap(1) DESCRIPTION steps 2 to 4):
// recovery of what an interrupted run left, then each mailbox whose
// UIDNEXT or HIGHESTMODSEQ moved on either side (every mailbox with
// --repair), several at once (sync/workers.hpp).
#pragma once

#include <interimap/statedb.hpp>

#include "sync/context.hpp"
#include "sync/mailbox_list.hpp"
#include "sync/workers.hpp"

#include <string>
#include <vector>

namespace interimap::detail::sync {

// One mailbox: a new one (no clean state) is copied both ways; a known
// one is resynchronized from its clean state (known messages, then new).
void sync_mailbox(Context& ctx, MailboxList& list, const MailboxRecord& record);

// The pass over `mailboxes` (database form, as MailboxList::synchronize()
// returned them); with repair, --repair's full comparison of each.  The
// mailboxes to synchronize go to `workers`, several at once.
void sync_mailboxes(Context& ctx, Workers& workers, MailboxList& list, const std::vector<std::string>& mailboxes,
                    bool repair);

}  // namespace interimap::detail::sync
