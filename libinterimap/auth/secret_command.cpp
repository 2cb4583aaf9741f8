#include "auth/secret_command.hpp"
#include "net/socket_stream.hpp"

#include <interimap/error.hpp>

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace interimap::detail {

namespace {

constexpr size_t kMaxOutput = 64 * 1024;

// posix_spawn's helper objects, freed on every path.
struct Spawn {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  Spawn() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
  }
  ~Spawn() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
  Spawn(const Spawn&) = delete;
  Spawn& operator=(const Spawn&) = delete;
};

// Waits for pid; returns its wait status (or -1 if reaped elsewhere).
int reap(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return status;
}

}  // namespace

std::string run_secret_command(const std::string& section, std::string_view option, const std::string& command,
                               std::chrono::milliseconds timeout) {
  auto fail = [&](std::string_view what) {
    return Error(section, fmt::format("{} `{}` {}", option, command, what));
  };

  int ends[2];
  if (pipe2(ends, O_CLOEXEC) < 0) throw fail(fmt::format("cannot run: pipe: {}", std::strerror(errno)));
  UniqueFd ours(ends[0]);
  UniqueFd theirs(ends[1]);
  if (theirs.get() <= STDERR_FILENO) {
    const int moved = fcntl(theirs.get(), F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
    if (moved < 0) throw fail(fmt::format("cannot run: fcntl: {}", std::strerror(errno)));
    theirs.reset(moved);
  }

  Spawn sp;
  int rc = posix_spawn_file_actions_addopen(&sp.actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&sp.actions, theirs.get(), STDOUT_FILENO);
  // A session of its own: no controlling terminal (a helper wanting to ask
  // the user fails instead of hanging), and a process group we can kill
  // whole at the time limit.  Default signal dispositions and an empty mask.
  sigset_t empty, defaults;
  sigemptyset(&empty);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGTERM);
  sigaddset(&defaults, SIGHUP);
  if (rc == 0) rc = posix_spawnattr_setsigmask(&sp.attr, &empty);
  if (rc == 0) rc = posix_spawnattr_setsigdefault(&sp.attr, &defaults);
  if (rc == 0)
    rc = posix_spawnattr_setflags(&sp.attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  if (rc != 0) throw fail(fmt::format("cannot run: posix_spawn: {}", std::strerror(rc)));

  const char* argv[] = {"/bin/sh", "-c", command.c_str(), nullptr};
  pid_t pid = -1;
  rc = posix_spawn(&pid, "/bin/sh", &sp.actions, &sp.attr, const_cast<char* const*>(argv), environ);
  if (rc != 0) throw fail(fmt::format("cannot run: {}", std::strerror(rc)));
  theirs.reset();

  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  std::string out;
  bool timed_out = false, too_long = false;
  char buf[4096];
  while (true) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    struct pollfd p {ours.get(), POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<std::chrono::milliseconds::rep>(left.count(), 60'000)));
    if (r < 0 && errno != EINTR) {
      kill(-pid, SIGKILL);
      reap(pid);
      throw fail(fmt::format("poll: {}", std::strerror(errno)));
    }
    if (r <= 0) continue;
    const ssize_t n = ::read(ours.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      kill(-pid, SIGKILL);
      reap(pid);
      throw fail(fmt::format("read: {}", std::strerror(errno)));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > kMaxOutput) {
      too_long = true;
      break;
    }
  }
  int status = 0;
  if (timed_out || too_long) {
    // The whole session: a shell's children too (e.g. a sleep).
    kill(-pid, SIGKILL);
    reap(pid);
    std::fill(out.begin(), out.end(), '\0');
    if (timed_out) throw fail(fmt::format("timed out after {} s", (timeout.count() + 999) / 1000));
    throw fail(fmt::format("printed more than {} KiB", kMaxOutput / 1024));
  }
  // End of output: the command is exiting (or closed its standard output
  // and goes on: then the time limit applies to it too).
  while (true) {
    const pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) {
      status = 0;  // reaped elsewhere (SIGCHLD ignored): the status is lost
      break;
    }
    if (Clock::now() >= deadline) {
      kill(-pid, SIGKILL);
      reap(pid);
      std::fill(out.begin(), out.end(), '\0');
      throw fail(fmt::format("timed out after {} s", (timeout.count() + 999) / 1000));
    }
    ::usleep(2000);
  }
  auto wipe = [&] { std::fill(out.begin(), out.end(), '\0'); };
  if (WIFSIGNALED(status)) {
    wipe();
    throw fail(fmt::format("was killed by signal {}", WTERMSIG(status)));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
    wipe();
    throw fail(fmt::format("failed (exit status {})", WEXITSTATUS(status)));
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  if (!out.empty() && out.back() == '\r') out.pop_back();
  if (out.empty()) throw fail("printed nothing");
  const bool control = std::any_of(out.begin(), out.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
  if (control) {
    const bool lines = out.find('\n') != std::string::npos;
    wipe();
    throw fail(lines ? "printed more than one line" : "printed a control character");
  }
  return out;
}

}  // namespace interimap::detail
