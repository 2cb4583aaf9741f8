// interimap's long-lived mode: --watch[=SECONDS] and --notify (interimap(1)
// 0.5.7), and the signals that end a run cleanly.
//
//   StopSignals stop;                 // SIGTERM, SIGINT, SIGHUP caught
//   session.open();
//   watch(session, {.interval = 60}, stop, logger);
//   session.close();                  // LOGOUT; then exit 0
//
// Polling (--watch): a pass, then another one SECONDS after the previous
// one ended; a pass where nothing changed costs one LIST-STATUS per server
// and no SELECT.  While waiting, what the servers send is read at once, so
// a lost connection is noticed (and reported) without waiting for the
// next pass.
//
// Notifications (--notify): RFC 5465 NOTIFY SET on both servers for the
// synchronized mailboxes (the reference's event set, see
// Connection::notify_set), renewed when the mailbox list changes; a pass
// runs as soon as a server announces a change (Dovecot announces within
// about half a second), and a NOOP on both after SECONDS of silence keeps
// the connections alive.  A change that shows up during a pass (the
// selected mailbox's EXISTS, VANISHED, FETCH) earns one more pass, so
// nothing announced is left waiting.
//
// Threading: one thread; the signal handlers only set a flag and write to
// a pipe.
#pragma once

#include <interimap/export.hpp>

#include <interimap/log.hpp>
#include <interimap/stop_signals.hpp>
#include <interimap/syncsession.hpp>

namespace interimap {

struct WatchOptions {
  // --watch=SECONDS: seconds between the end of a pass and the next one
  // (polling), or of silence before a NOOP (notify).  0: the reference's
  // default, 60, or 900 with notify.
  unsigned long interval = 0;
  // --notify: RFC 5465 NOTIFY instead of polling.  Both servers must
  // advertise NOTIFY (else SyncError "Server did not advertise NOTIFY
  // (RFC 5465) capability." naming the side, before any pass).
  bool notify = false;
};

// Runs passes on an open session (SyncSession::open() done; the first
// pass included) until `stop` receives a signal; a pass in progress is
// finished first.  Returns normally after a signal, even if the pass the
// signal interrupted then failed (its error is logged as a warning: the
// tunnel commands may have received the same signal).  Otherwise throws
// what SyncSession::run() throws, or NetworkError "NAME: connection closed
// by the server..." when a connection is lost while waiting; the caller
// reports it and exits non-zero, and the next run resumes from the
// database, which only records confirmed work.
INTERIMAP_API void watch(SyncSession& session, const WatchOptions& options, const StopSignals& stop, Logger& logger);

}  // namespace interimap
