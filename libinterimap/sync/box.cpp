#include "sync/box.hpp"

#include <fmt/format.h>

namespace interimap::detail::sync {

Box Box::from(const MailboxRecord& record) {
  Box box;
  box.idx = record.idx;
  box.name = record.name;
  if (record.state) box.clean = record.state->sides;
  return box;
}

void Box::select(Context& ctx, bool resync, PerSide<bool> sides) {
  for (Side s : kSides) {
    if (!sides[index(s)]) continue;
    tracker[index(s)] = make_change_tracker(ctx.tracking[index(s)]);
    if (resync) tracker[index(s)]->prepare(*ctx.db.lock(), idx, s, clean[index(s)]);
  }
  ctx.both.run([&](Side s) {
    const size_t i = index(s);
    if (!sides[i]) return;
    Mailbox& m = mailbox[i].emplace(ctx.connection(s), ctx.names.wire(s, name));
    if (resync)
      tracker[i]->select(m, clean[i]);
    else
      m.select();
    if (clean[i].uidvalidity != 0 && m.uidvalidity() != clean[i].uidvalidity)
      // Changed since this pass's listing (which recover_uidvalidity()
      // answers): the next run pairs its messages again.
      Context::fail(to_string(s), fmt::format("UIDVALIDITY changed during the run! ({} != {})  The next run pairs the "
                                              "messages of {} again.",
                                              m.uidvalidity(), clean[i].uidvalidity, ctx.names.wire(s, name)));
    if (!m.uidnext())
      throw ProtocolError(std::string(to_string(s)),
                          fmt::format("{}: Unknown UIDNEXT value - non-compliant server?", ctx.names.wire(s, name)));
    if (want_sizes && clean[i].uidnext > 0 && *m.uidnext() > clean[i].uidnext)
      new_sizes[i] = m.fetch_sizes(UidSet::range(clean[i].uidnext, *m.uidnext() - 1));
  });
}

void Box::finish(Context& ctx) {
  if (!ctx.settings.watch) return;
  ctx.both.run([&](Side s) {
    if (mailbox[index(s)] && m(s).selected()) m(s).close();
  });
}

}  // namespace interimap::detail::sync
