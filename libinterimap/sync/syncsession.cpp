// The session: opening (database, connections, capabilities, delimiters,
// schema), one pass per run(), closing.  The algorithm lives in the units
// listed in sync/context.hpp; include/interimap/syncsession.hpp has the
// contract.
#include <interimap/mailbox.hpp>
#include <interimap/syncsession.hpp>

#include "sync/context.hpp"
#include "sync/guard.hpp"
#include "sync/mailbox_list.hpp"
#include "sync/mailbox_sync.hpp"
#include "sync/workers.hpp"

#include <fmt/format.h>

#include <cstdint>
#include <stdexcept>

namespace interimap {

namespace {

using detail::sync::Context;
using detail::sync::kSides;

constexpr std::string_view kVersion = "0.5.7";

SyncSettings checked(SyncSettings settings) {
  if (settings.dry_run && settings.watch) throw std::invalid_argument("SyncSession: a dry run cannot watch");
  if (settings.mode == SyncMode::Delete && settings.mailboxes.empty())
    throw std::invalid_argument("SyncSession: --delete needs at least one mailbox");
  if (settings.mode == SyncMode::Rename && settings.mailboxes.size() != 2)
    throw std::invalid_argument("SyncSession: --rename needs SOURCE and DEST");
  for (auto& m : settings.mailboxes) m = detail::sync::normalize_inbox(std::move(m));
  return settings;
}

}  // namespace

struct INTERIMAP_LOCAL SyncSession::Impl {
  Impl(SyncSettings settings, Logger& logger) : ctx(checked(std::move(settings)), logger), list(ctx), workers(ctx) {
    for (Side s : kSides) ctx.names.set_reference(s, ctx.settings.list_reference[index(s)]);
  }

  void open();
  void run();

  Context ctx;
  detail::sync::MailboxList list;
  detail::sync::Workers workers;  // the pass's other connections
  detail::sync::Guard guard;  // self-sync and mass deletions (issue 15)
  std::vector<std::string> mailboxes;  // synchronized by the last run (database form)
  // The database generation a pass left unchanged (a no-op pass): the same
  // LIST answers again make the same no-op.
  std::uint64_t noop_generation = UINT64_MAX;
};

void SyncSession::Impl::open() {
  if (ctx.debugging()) ctx.debug("", fmt::format(">>> interimap {}", kVersion));
  // Lock the database before any network traffic, to fail early when
  // another run holds it (as the reference).
  StateOptions so;
  so.create_if_missing = !ctx.settings.watch;
  so.private_copy = ctx.settings.dry_run;
  ctx.attach_db(std::make_shared<detail::sync::SharedDb>(std::make_unique<StateDB>(ctx.settings.database, so)));
  ctx.journal =
      std::make_shared<detail::sync::AppendJournal>(ctx.settings.database + "-appends", ctx.settings.dry_run);

  ctx.both.run([&](Side s) { detail::sync::connect_side(ctx, s); });
  // Without LIST-EXTENDED the subscriptions come from LSUB, and without
  // LIST-STATUS one STATUS per mailbox is pipelined (Connection::list).
  for (Side s : kSides)
    ctx.debug(to_string(s), fmt::format("Change tracking: {}",
                                        ctx.tracking[index(s)] == ChangeTracking::Qresync     ? "QRESYNC"
                                        : ctx.tracking[index(s)] == ChangeTracking::Condstore ? "CONDSTORE"
                                                                                              : "plain"));
  list.learn_delimiters();
  ctx.db->ensure_schema(ctx.names.delimiter(Side::Local), ctx.names.delimiter(Side::Remote),
                        [&](std::string_view line) { ctx.notice("", line); });
}

void SyncSession::Impl::run() {
  const bool same = list.list();
  const std::uint64_t generation = ctx.db->generation();
  switch (ctx.settings.mode) {
    case SyncMode::Delete: list.remove(); break;
    case SyncMode::Rename: list.rename(); break;
    case SyncMode::Sync:
      // A --watch poll: the servers said what they said last time and the
      // database is as the last pass, a no-op, left it: nothing to do.
      // (Not with a plain side: its flag changes show in no listing.)
      if (same && generation == noop_generation && ctx.tracking[0] != ChangeTracking::Plain &&
          ctx.tracking[1] != ChangeTracking::Plain) {
        if (ctx.debugging())
          for (Side s : kSides) ctx.debug(to_string(s), "Clean state!");
        break;
      }
      guard.before_pass(ctx, list);
      mailboxes = list.synchronize();
      detail::sync::sync_mailboxes(ctx, workers, list, mailboxes, /*repair=*/false);
      noop_generation = ctx.db->generation() == generation ? generation : UINT64_MAX;
      break;
    case SyncMode::Repair:
      guard.before_pass(ctx, list);
      mailboxes = list.synchronize();
      detail::sync::sync_mailboxes(ctx, workers, list, mailboxes, /*repair=*/true);
      break;
  }
}

// ---------------------------------------------------------------------------

SyncSession::SyncSession(SyncSettings settings, Logger& logger)
    : impl_(std::make_unique<Impl>(std::move(settings), logger)) {}

SyncSession::~SyncSession() {
  if (impl_) close();
}

void SyncSession::open() { impl_->open(); }

void SyncSession::run() {
  try {
    impl_->run();
  } catch (...) {
    impl_->ctx.rollback();  // what the servers did not confirm
    throw;
  }
}

void SyncSession::close() noexcept {
  Context& ctx = impl_->ctx;
  ctx.rollback();
  std::array<bool, 2> was_open{};
  for (Side s : kSides) was_open[index(s)] = ctx.connections[index(s)] && ctx.connections[index(s)]->is_open();
  // Both at once: each waits for its server (LOGOUT's answer, a tunnel's
  // exit).  A one-shot run hangs up its tunnels as the reference does; a
  // network server, and both servers when --watch stops, get a LOGOUT.
  auto end = [&](Side s) {
    if (!was_open[index(s)]) return;
    Connection& c = ctx.connection(s);
    const bool tunnel = c.options().type == ConnectionOptions::Type::Tunnel;
    c.close(tunnel && !ctx.settings.watch ? Connection::Goodbye::Hangup : Connection::Goodbye::Logout);
  };
  try {
    ctx.both.run(end);
  } catch (...) {
    for (Side s : kSides) end(s);  // the helper thread could not start
  }
  impl_->workers.close();
  // As the reference, each side's traffic once its connection is closed
  // (once: close() may be called again), unless --quiet, when the run said
  // anything (a no-op run stays silent).
  try {
    if (ctx.debugging() || ctx.log.lines() > 0)
      for (Side s : kSides)
        if (was_open[index(s)]) {
          // All of the session's connections to that server.
          ServerTraffic t = impl_->workers.traffic()[index(s)];
          detail::sync::add_traffic(t, ctx.connection(s).traffic());
          ctx.log.info(to_string(s), describe(t));
        }
  } catch (...) {
  }
}

Connection& SyncSession::connection(Side side) { return impl_->ctx.connection(side); }
StateDB& SyncSession::database() { return impl_->ctx.db.unshared(); }
const std::string& SyncSession::database_path() const { return impl_->ctx.settings.database; }
const std::vector<std::string>& SyncSession::mailboxes() const { return impl_->mailboxes; }
std::string SyncSession::wire_name(Side side, std::string_view name) const { return impl_->ctx.names.wire(side, name); }
std::string SyncSession::pretty_name(std::string_view name) const { return impl_->ctx.names.pretty(name); }

}  // namespace interimap
