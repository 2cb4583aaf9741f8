// Several mailboxes in flight at once (issue 14).  A server executes one
// command at a time per connection, and one mailbox's commands form a
// chain of dependent round trips (SELECT, the flag and expunge batch, the
// FETCH of new messages, their APPEND on the other side): run alone, each
// server waits for the other one and for the client most of the time.
// With several workers, each on a pair of connections of its own (one per
// side), each server has a command of another mailbox queued while one
// mailbox's answer is on its way.
//
// What stays as in a sequential pass:
//  - each mailbox's state is committed once its changes are on both sides,
//    by the worker that synchronized it (the database is shared, one
//    worker at a time: sync/shared_db.hpp);
//  - the log: each worker captures its mailbox's lines, and they are
//    written mailbox after mailbox, in the order of the pass;
//  - an error ends the pass: no mailbox is started after it; those in
//    flight finish (and are committed), then the error of the first
//    failing mailbox, in the pass's order, is thrown;
//  - a stop signal (SyncSettings::interrupted) is seen before each mailbox.
// What bounds it: `max-connections` (default 2) connections per server,
// the session's own included, and the number of mailboxes to synchronize;
// the other connections are opened when a pass has two mailboxes or more
// to synchronize, by their worker while the first one starts (a server
// refusing them only leaves fewer workers, with a warning).
#pragma once

#include <interimap/statedb.hpp>

#include "sync/context.hpp"

#include <functional>
#include <memory>
#include <vector>

namespace interimap::detail::sync {

// Creates and opens ctx.connections[side] per ctx.settings, and resolves
// its change tracking into ctx.tracking (doc/design.md "Change tracking").
void connect_side(Context& ctx, Side side);

// Adds t's bytes to into's.
void add_traffic(ServerTraffic& into, const ServerTraffic& t);

class Workers {
 public:
  explicit Workers(Context& main);
  ~Workers();
  Workers(const Workers&) = delete;
  Workers& operator=(const Workers&) = delete;

  using Task = std::function<void(Context&, const MailboxRecord&)>;
  // task(ctx, record) for each record, in order with one worker, on up
  // to max-connections workers otherwise (main's connections are one).
  void run(const std::vector<MailboxRecord>& todo, const Task& task);
  // The other workers' traffic so far, per side.
  PerSide<ServerTraffic> traffic() const;
  // Ends the other workers' sessions (as SyncSession::close ends main's).
  void close() noexcept;

 private:
  struct Worker;
  Worker& worker(size_t i);

  Context& main_;
  std::vector<std::unique_ptr<Worker>> workers_;  // [0] is main's connections
  bool refused_ = false;  // a server refused another connection: no more tries
  PerSide<ServerTraffic> closed_traffic_{};
};

}  // namespace interimap::detail::sync
