#include "sync/workers.hpp"

#include <interimap/mailbox.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>

namespace interimap::detail::sync {

void connect_side(Context& ctx, Side s) {
  ConnectionOptions co = ctx.settings.connections[index(s)];
  co.name = std::string(to_string(s));
  co.dry_run = co.dry_run || ctx.settings.dry_run;
  if (ctx.settings.watch && co.type != ConnectionOptions::Type::Tunnel) co.keepalive = true;
  ctx.connections[index(s)] = std::make_unique<Connection>(std::move(co), ctx.log);
  Connection& c = ctx.connection(s);
  c.open();
  // Each side's change tracking: the best its server offers, or the one
  // change-tracking forces (doc/design.md "Change tracking").
  ChangeTracking mode = ctx.settings.change_tracking[index(s)];
  // A forced mode does not use what it leaves out, even if advertised.
  if (mode == ChangeTracking::Plain) c.ignore_capabilities({"QRESYNC", "CONDSTORE"});
  if (mode == ChangeTracking::Condstore) c.ignore_capabilities({"QRESYNC"});
  const bool enable = c.has_capability("ENABLE");
  if (mode == ChangeTracking::Auto)
    mode = enable && c.has_capability("QRESYNC")     ? ChangeTracking::Qresync
           : enable && c.has_capability("CONDSTORE") ? ChangeTracking::Condstore
                                                     : ChangeTracking::Plain;
  const char* name = mode == ChangeTracking::Qresync     ? "qresync"
                     : mode == ChangeTracking::Condstore ? "condstore"
                                                         : "plain";
  std::vector<const char*> needs = {"UIDPLUS"};
  if (mode == ChangeTracking::Qresync) needs = {"UIDPLUS", "ENABLE", "QRESYNC"};
  if (mode == ChangeTracking::Condstore) needs = {"UIDPLUS", "ENABLE", "CONDSTORE"};
  for (const char* cap : needs)
    if (!c.has_capability(cap))
      Context::fail(to_string(s), fmt::format("Non {}-capable IMAP server (change-tracking {}).", cap, name));
  if (mode == ChangeTracking::Qresync)
    Mailbox::enable_qresync(c);
  else if (mode == ChangeTracking::Condstore)
    Mailbox::enable_condstore(c);
  ctx.tracking[index(s)] = mode;
}

void add_traffic(ServerTraffic& into, const ServerTraffic& t) {
  into.received += t.received;
  into.sent += t.sent;
  if (t.received_compressed) into.received_compressed = into.received_compressed.value_or(0) + *t.received_compressed;
  if (t.sent_compressed) into.sent_compressed = into.sent_compressed.value_or(0) + *t.sent_compressed;
}

// A worker: a Context of its own (connections, transaction, helper
// thread) on the session's database and journal, logging into a capture.
struct Workers::Worker {
  explicit Worker(const Context& main)
      : log(main.log), capture(std::make_shared<Logger::Capture>()), ctx(main.settings, log) {
    log.capture(capture);
    ctx.names = main.names;
    ctx.tracking = main.tracking;
    // Its connections get the session's modes, resolved once.
    for (Side s : kSides) ctx.settings.change_tracking[index(s)] = main.tracking[index(s)];
    ctx.attach_db(main.db.shared());
    ctx.journal = main.journal;
  }
  bool open() const { return ctx.connections[0] && ctx.connections[1]; }
  void close(bool hangup, PerSide<ServerTraffic>& traffic) noexcept {
    auto end = [&](Side s) {
      auto& c = ctx.connections[index(s)];
      if (!c) return;
      if (c->is_open()) c->close(hangup && c->options().type == ConnectionOptions::Type::Tunnel
                                     ? Connection::Goodbye::Hangup
                                     : Connection::Goodbye::Logout);
      add_traffic(traffic[index(s)], c->traffic());
      c.reset();
    };
    try {
      ctx.both.run(end);
    } catch (...) {
      for (Side s : kSides) end(s);
    }
  }

  Logger log;  // before ctx, which refers to it
  std::shared_ptr<Logger::Capture> capture;
  Context ctx;
};

Workers::Workers(Context& main) : main_(main) {}

Workers::~Workers() { close(); }

Workers::Worker& Workers::worker(size_t i) {
  while (workers_.size() <= i) workers_.push_back(std::make_unique<Worker>(main_));
  return *workers_[i];
}

PerSide<ServerTraffic> Workers::traffic() const {
  PerSide<ServerTraffic> t = closed_traffic_;
  for (size_t i = 1; i < workers_.size(); ++i)
    for (Side s : kSides)
      if (const auto& c = workers_[i]->ctx.connections[index(s)]) add_traffic(t[index(s)], c->traffic());
  return t;
}

void Workers::close() noexcept {
  for (size_t i = 1; i < workers_.size(); ++i) workers_[i]->close(!main_.settings.watch, closed_traffic_);
}

void Workers::run(const std::vector<MailboxRecord>& todo, const Task& task) {
  const auto& interrupted = main_.settings.interrupted;
  size_t n = std::min({size_t{main_.settings.max_connections[0]}, size_t{main_.settings.max_connections[1]},
                       todo.size()});
  // A dry run's servers are simulated per connection (a mailbox it would
  // create exists on that connection only): one connection each.
  if (main_.settings.dry_run) n = 1;
  if (refused_) {
    size_t open = 1;
    while (open < workers_.size() && workers_[open]->open()) ++open;
    n = std::min(n, open);
  }
  if (n <= 1) {
    for (const auto& record : todo) {
      if (interrupted && interrupted()) return;  // a stop signal: the rest next time
      task(main_, record);
    }
    return;
  }

  // Worker 0 borrows the session's connections for the pass.
  Worker& first = worker(0);
  std::swap(first.ctx.connections, main_.connections);
  for (auto& c : first.ctx.connections) c->set_logger(first.log);
  struct GiveBack {
    Context& main;
    Worker& first;
    ~GiveBack() {
      std::swap(first.ctx.connections, main.connections);
      for (auto& c : main.connections) c->set_logger(main.log);
    }
  } give_back{main_, first};

  struct Slot {
    std::vector<Logger::Record> lines;
    std::exception_ptr error;
    bool done = false;
  };
  std::vector<Slot> slots(todo.size());
  std::mutex mutex;
  std::condition_variable changed;
  size_t next = 0, running = n;
  bool stop = false;
  std::vector<std::string> refusals;

  auto loop = [&](Worker& w) {
    if (!w.open()) {
      try {
        w.ctx.both.run([&](Side s) { connect_side(w.ctx, s); });
      } catch (const std::exception& e) {
        PerSide<ServerTraffic> ignored;
        w.close(false, ignored);
        w.capture->take();
        const std::lock_guard<std::mutex> lock(mutex);
        refusals.push_back(e.what());
      }
    }
    while (w.open()) {
      size_t i;
      {
        const std::lock_guard<std::mutex> lock(mutex);
        if (stop || next == todo.size()) break;
        i = next++;
      }
      if (interrupted && interrupted()) {
        const std::lock_guard<std::mutex> lock(mutex);
        stop = true;  // a stop signal: mailbox i and the rest next time
        break;
      }
      std::exception_ptr error;
      try {
        task(w.ctx, todo[i]);
      } catch (...) {
        w.ctx.rollback();  // what the servers did not confirm
        error = std::current_exception();
      }
      std::vector<Logger::Record> lines = w.capture->take();
      {
        const std::lock_guard<std::mutex> lock(mutex);
        slots[i].lines = std::move(lines);
        slots[i].error = error;
        slots[i].done = true;
        if (error) stop = true;
      }
      changed.notify_all();
    }
    {
      const std::lock_guard<std::mutex> lock(mutex);
      --running;
    }
    changed.notify_all();
  };

  std::vector<std::thread> threads;
  std::exception_ptr first_error;
  {
    // If a thread cannot start, the others still end (stop) and are joined.
    struct Join {
      std::vector<std::thread>& threads;
      ~Join() {
        for (auto& t : threads) t.join();
      }
    } join{threads};
    try {
      for (size_t k = 0; k < n; ++k) threads.emplace_back(loop, std::ref(worker(k)));
    } catch (...) {
      {
        const std::lock_guard<std::mutex> lock(mutex);
        stop = true;
        running -= n - threads.size();
      }
      first_error = std::current_exception();
    }
    // Each mailbox's lines, in the pass's order, as soon as they are all there.
    size_t emitted = 0;
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      changed.wait(lock, [&] { return (emitted < slots.size() && slots[emitted].done) || running == 0; });
      while (emitted < slots.size() && slots[emitted].done) {
        Slot slot = std::move(slots[emitted]);
        lock.unlock();
        main_.log.replay(slot.lines);
        if (slot.error && !first_error) first_error = slot.error;
        lock.lock();
        ++emitted;
      }
      if (running == 0) break;
    }
    // Those after a mailbox that was not started (a stop, an error).
    for (; emitted < slots.size(); ++emitted) {
      main_.log.replay(slots[emitted].lines);
      if (slots[emitted].error && !first_error) first_error = slots[emitted].error;
    }
  }
  if (!refusals.empty()) {
    refused_ = true;
    for (const auto& why : refusals)
      main_.log.warning("", fmt::format("Could not open one more connection, going on with fewer: {}", why));
  }
  // A one-shot run ends here; a long one does not keep connections that
  // may time out while it waits (they are opened again when needed).
  if (main_.settings.watch) close();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace interimap::detail::sync
