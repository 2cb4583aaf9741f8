// The signals that end a long run cleanly: interimap's SIGTERM, SIGINT and
// SIGHUP (interimap(1) 0.5.7), pullimap's SIGTERM and SIGINT.
//
//   StopSignals stop;                    // SIGTERM, SIGINT, SIGHUP caught
//   options.interrupted = [&stop] { return stop.received() != 0; };
//   ... run, polling received() or waiting on fd() ...
//
// Threading: the handler only sets a flag and writes to a pipe; received()
// and fd() are for the thread that waits.
#pragma once

#include <interimap/export.hpp>

#include <initializer_list>
#include <memory>

namespace interimap {

// Catches the given signals while alive: the first one is recorded
// (received()) and makes fd() readable so that a wait ends at once; the
// work in progress is then finished or abandoned by the caller, who logs
// out and exits.  A second signal (any of them) abandons everything at
// once: the default action (termination) is restored and the signal
// re-raised; the state files stay consistent since they only record
// confirmed work.  Interrupted system calls restart (SA_RESTART).  One
// instance at a time (std::logic_error otherwise); the destructor restores
// the previous dispositions.  Throws Error when the pipe cannot be made.
class INTERIMAP_API StopSignals {
 public:
  // SIGTERM, SIGINT and SIGHUP (interimap's).
  StopSignals();
  // The given signals (pullimap: SIGTERM and SIGINT); a signal it does not
  // list keeps its disposition.  std::invalid_argument when empty.
  explicit StopSignals(std::initializer_list<int> signals);
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The first signal received, 0 if none yet.
  int received() const noexcept;
  // A descriptor that becomes readable when a signal arrived (for poll(2)).
  int fd() const noexcept;
  // "SIGTERM", "SIGINT", "SIGHUP" (or "signal" for another one).
  static const char* name(int signal) noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace interimap
