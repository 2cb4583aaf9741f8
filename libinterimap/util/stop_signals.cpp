#include <interimap/error.hpp>
#include <interimap/stop_signals.hpp>

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace interimap {

namespace {

// Written by the handler, read by the loop; the pipe's write end is only
// read by the handler.  sig_atomic_t and write(2) are async-signal-safe.
volatile std::sig_atomic_t g_received = 0;
volatile int g_wake_write = -1;
bool g_installed = false;  // one StopSignals at a time (main thread only)

extern "C" void on_stop_signal(int sig) {
  const int saved = errno;
  if (g_received != 0) {
    // A second signal: give up at once.  The signal is blocked while its
    // handler runs, so the re-raised one is delivered, with the default
    // action, when this returns.
    ::signal(sig, SIG_DFL);
    ::raise(sig);
  } else {
    g_received = sig;
    const char byte = 1;
    if (g_wake_write >= 0) [[maybe_unused]] const ssize_t n = ::write(g_wake_write, &byte, 1);
  }
  errno = saved;
}

}  // namespace

struct INTERIMAP_LOCAL StopSignals::State {
  int pipe[2] = {-1, -1};
  std::vector<int> signals;
  std::vector<struct sigaction> previous;
};

StopSignals::StopSignals() : StopSignals({SIGTERM, SIGINT, SIGHUP}) {}

StopSignals::StopSignals(std::initializer_list<int> signals) : state_(std::make_unique<State>()) {
  if (signals.size() == 0) throw std::invalid_argument("StopSignals: no signal");
  if (g_installed) throw std::logic_error("StopSignals: only one instance at a time");
  if (::pipe2(state_->pipe, O_CLOEXEC | O_NONBLOCK) != 0)
    throw Error(fmt::format("pipe: {}", std::strerror(errno)));
  state_->signals.assign(signals.begin(), signals.end());
  state_->previous.resize(state_->signals.size());
  g_received = 0;
  g_wake_write = state_->pipe[1];
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  // Restart interrupted system calls: the streams and SQLite keep going,
  // the loop notices the flag (or the pipe) at its next wait.
  sa.sa_flags = SA_RESTART;
  for (size_t i = 0; i < state_->signals.size(); ++i) ::sigaction(state_->signals[i], &sa, &state_->previous[i]);
  g_installed = true;
}

StopSignals::~StopSignals() {
  for (size_t i = 0; i < state_->signals.size(); ++i)
    ::sigaction(state_->signals[i], &state_->previous[i], nullptr);
  g_wake_write = -1;
  ::close(state_->pipe[0]);
  ::close(state_->pipe[1]);
  g_installed = false;
}

int StopSignals::received() const noexcept { return g_received; }

int StopSignals::fd() const noexcept { return state_->pipe[0]; }

const char* StopSignals::name(int signal) noexcept {
  switch (signal) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGHUP: return "SIGHUP";
    default: return "signal";
  }
}

}  // namespace interimap
