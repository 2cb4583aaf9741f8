#include <interimap/connection.hpp>
#include <interimap/error.hpp>
#include <interimap/watch.hpp>

#include <fcntl.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <string>
#include <vector>

namespace interimap {

namespace {

using Clock = std::chrono::steady_clock;

class Watcher {
 public:
  Watcher(SyncSession& session, const WatchOptions& options, const StopSignals& stop, Logger& logger)
      : session_(session),
        notify_(options.notify),
        // Capped at ten years, so that milliseconds cannot overflow.
        interval_(std::chrono::seconds(std::min<unsigned long>(
            options.interval != 0 ? options.interval : (options.notify ? 900 : 60), 10UL * 366 * 86400))),
        stop_(stop),
        logger_(logger),
        conns_{&session.connection(Side::Local), &session.connection(Side::Remote)} {}

  void run() {
    if (notify_) {
      // Before any pass, as the reference (it fails in its NOTIFY call).
      for (Side s : {Side::Local, Side::Remote})
        if (!session_.connection(s).has_capability("NOTIFY"))
          throw SyncError(std::string(to_string(s)),
                          "Server did not advertise NOTIFY (RFC 5465) capability, which --notify needs.");
    }
    // What each pass selects is seen through the EXISTS of its SELECT.
    for (Connection* c : conns_) c->track_activity(true);
    bool pending = true;   // a pass is due
    bool recheck = false;  // ... only because of activity during the previous pass
    while (!stop_.received()) {
      if (pending) {
        const bool was_recheck = recheck;
        pending = recheck = false;
        pass();
        if (!notify_ || stop_.received()) continue;
        after_pass(was_recheck, pending, recheck);
        if (pending) continue;
      }
      pending = wait();
    }
  }

 private:
  void debug(const std::string& message) {
    if (logger_.debug() > 0) logger_.log(LogLevel::Debug, "", {}, message);
  }

  // One pass, then back to no mailbox selected.  A server reports the
  // STATUS of its session's selected mailbox as the session last saw it
  // (Dovecot does), so a mailbox left selected would look clean to the
  // next LIST-STATUS however much it changed; NOTIFY reports changes to
  // other mailboxes as STATUS responses naming them.  UNSELECT (RFC 3691)
  // is one command after a pass that selected something, nothing after a
  // pass that did not; a server without it gets a NOOP before each pass
  // instead (the reference's choice, too).
  void pass() {
    for (size_t i = 0; i < conns_.size(); ++i)
      if (stale_[i]) conns_[i]->noop();
    session_.run();
    for (size_t i = 0; i < conns_.size(); ++i) {
      ServerActivity a = conns_[i]->take_activity();
      merge(activity_, a);
      if (!a.selected) continue;
      if (conns_[i]->has_capability("UNSELECT")) {
        // BAD when nothing is selected (a FETCH seen outside a SELECT): fine.
        conns_[i]->unselect();
      } else {
        stale_[i] = true;
      }
    }
  }

  static void merge(ServerActivity& into, const ServerActivity& a) {
    into.mailboxes.insert(into.mailboxes.end(), a.mailboxes.begin(), a.mailboxes.end());
    into.mailbox_list = into.mailbox_list || a.mailbox_list;
    into.selected = into.selected || a.selected;
    into.overflow = into.overflow || a.overflow;
  }

  ServerActivity take_activity() {
    ServerActivity all = std::move(activity_);
    activity_ = ServerActivity{};
    for (Connection* c : conns_) merge(all, c->take_activity());
    return all;
  }

  // NOTIFY SET for the mailboxes the pass synchronized, when they changed;
  // then whether the servers announced anything meanwhile.
  void after_pass(bool was_recheck, bool& pending, bool& recheck) {
    if (!notify_set_ || session_.mailboxes() != notified_) {
      notified_ = session_.mailboxes();
      for (Side s : {Side::Local, Side::Remote}) {
        std::vector<std::string> wire;
        wire.reserve(notified_.size());
        for (const auto& name : notified_) wire.push_back(session_.wire_name(s, name));
        session_.connection(s).notify_set(wire);
      }
      notify_set_ = true;
      // A change between the pass's LIST and the NOTIFY SET was announced
      // to nobody: one more pass (a LIST-STATUS per server) catches it.
      (void)take_activity();
      debug("NOTIFY SET on both servers; catching up");
      pending = true;
      return;
    }
    const ServerActivity a = take_activity();
    if (a.overflow) {
      logger_.warning("", "a server stopped notifying (NOTIFICATIONOVERFLOW); renewing NOTIFY");
      notify_set_ = false;
      pending = true;
    } else if (!a.mailboxes.empty() || a.mailbox_list) {
      debug("changes announced during the pass");
      pending = true;
    } else if (a.selected && !was_recheck) {
      // A change to the mailbox the pass had selected shows as its EXISTS,
      // VANISHED or FETCH, which also answer the pass's own commands: one
      // more pass makes sure, and is not chained.
      debug("selected mailbox activity during the pass; checking again");
      pending = recheck = true;
    }
  }

  // Waits for the next pass: returns true when one is due, false on a
  // signal.
  bool wait() {
    auto deadline = Clock::now() + interval_;
    while (!stop_.received()) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      Connection::WaitResult r = Connection::WaitResult::Timeout;
      if (left.count() > 0) r = Connection::wait_any(conns_, left, stop_.fd());
      switch (r) {
        case Connection::WaitResult::Woken:
          return false;
        case Connection::WaitResult::Data:
          // Polling: unsolicited data was read (a BYE, say); the pass comes
          // at its time.  Notify: a pass now.
          if (notify_ && announced()) return true;
          break;
        case Connection::WaitResult::Timeout:
          if (!notify_) return true;
          // RFC 3501 5.4: keep the connections from being logged out.
          for (Connection* c : conns_) c->noop();
          if (announced()) return true;
          deadline = Clock::now() + interval_;
          break;
      }
    }
    return false;
  }

  bool announced() {
    const ServerActivity a = take_activity();
    if (!a.any()) return false;
    if (a.overflow) {
      logger_.warning("", "a server stopped notifying (NOTIFICATIONOVERFLOW); renewing NOTIFY");
      notify_set_ = false;
    }
    if (logger_.debug() > 0) {
      std::string what = a.mailboxes.empty() ? "" : fmt::format(" STATUS {}", fmt::join(a.mailboxes, ", "));
      if (a.mailbox_list) what += " LIST";
      if (a.selected) what += " selected mailbox";
      debug("notified:" + what);
    }
    return true;
  }

  SyncSession& session_;
  const bool notify_;
  const std::chrono::milliseconds interval_;
  const StopSignals& stop_;
  Logger& logger_;
  std::vector<Connection*> conns_;
  std::array<bool, 2> stale_{};   // selected, no UNSELECT: NOOP before each pass
  ServerActivity activity_;       // taken during the last pass
  bool notify_set_ = false;
  std::vector<std::string> notified_;  // session.mailboxes() at the last NOTIFY SET
};

}  // namespace

void watch(SyncSession& session, const WatchOptions& options, const StopSignals& stop, Logger& logger) {
  Watcher w(session, options, stop, logger);
  try {
    w.run();
  } catch (const Error& e) {
    // After a signal the tunnel commands may have been signalled too (a
    // terminal's ^C, systemd's stop): the failure is the stop itself.
    if (stop.received() == 0) throw;
    logger.warning("", fmt::format("after {}: {}", StopSignals::name(stop.received()), e.what()));
  }
  if (const int sig = stop.received(); sig != 0 && logger.debug() > 0)
    logger.log(LogLevel::Debug, "", {}, fmt::format("{} received: logging out", StopSignals::name(sig)));
}

}  // namespace interimap
