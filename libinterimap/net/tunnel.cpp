#include "net/tunnel.hpp"

#include <interimap/error.hpp>

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <poll.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

namespace interimap::detail {

namespace {

// Perl's isSPACE: the blanks that separate words of a command.
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
// Perl's isWORDCHAR, for the "VAR=value" test.
bool is_word(char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
// The metacharacters that make Perl's exec hand a command to the shell
// (perl doio.c, do_exec3).
constexpr std::string_view kShellMetacharacters = "$&*(){}[]'\";\\|?<>~`\n";

// RAII for posix_spawn's two helper objects.
class SpawnFileActions {
 public:
  SpawnFileActions() { posix_spawn_file_actions_init(&actions_); }
  ~SpawnFileActions() { posix_spawn_file_actions_destroy(&actions_); }
  SpawnFileActions(const SpawnFileActions&) = delete;
  SpawnFileActions& operator=(const SpawnFileActions&) = delete;
  posix_spawn_file_actions_t* get() { return &actions_; }

 private:
  posix_spawn_file_actions_t actions_;
};

class SpawnAttributes {
 public:
  SpawnAttributes() { posix_spawnattr_init(&attr_); }
  ~SpawnAttributes() { posix_spawnattr_destroy(&attr_); }
  SpawnAttributes(const SpawnAttributes&) = delete;
  SpawnAttributes& operator=(const SpawnAttributes&) = delete;
  posix_spawnattr_t* get() { return &attr_; }

 private:
  posix_spawnattr_t attr_;
};

// Runs argv with `actions` and `attr`; returns 0 or an error number.
int spawn(pid_t* pid, const std::vector<std::string>& argv, SpawnFileActions& actions, SpawnAttributes& attr) {
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // glibc's posix_spawn runs the child with vfork semantics and reports an
  // exec failure (ENOENT, EACCES, ENOEXEC) as its return value.
  return posix_spawnp(pid, args[0], actions.get(), attr.get(), args.data(), environ);
}

}  // namespace

TunnelCommand parse_tunnel_command(std::string_view command) {
  while (!command.empty() && is_space(command.front())) command.remove_prefix(1);
  auto shell = [&] { return TunnelCommand{true, {"/bin/sh", "-c", std::string(command)}}; };

  // Shell built-ins that cannot be exec'd: ". FILE" and "exec ...".
  if (command.size() >= 2 && command[0] == '.' && is_space(command[1])) return shell();
  if (command.size() >= 5 && command.starts_with("exec") && is_space(command[4])) return shell();
  // "VAR=value cmd": an assignment only the shell understands.
  size_t word_end = 0;
  while (word_end < command.size() && is_word(command[word_end])) ++word_end;
  if (word_end < command.size() && command[word_end] == '=') return shell();

  for (size_t i = 0; i < command.size(); ++i) {
    if (kShellMetacharacters.find(command[i]) == std::string_view::npos) continue;
    if (command[i] == '\n' && i + 1 == command.size()) {
      command.remove_suffix(1);  // one trailing newline is dropped
      break;
    }
    return shell();
  }

  TunnelCommand out;
  size_t i = 0;
  while (i < command.size()) {
    while (i < command.size() && is_space(command[i])) ++i;
    size_t start = i;
    while (i < command.size() && !is_space(command[i])) ++i;
    if (i > start) out.argv.emplace_back(command.substr(start, i - start));
  }
  return out;
}

ChildProcess::~ChildProcess() {
  if (wait_for(std::chrono::seconds(1))) return;
  kill(pid_, SIGTERM);
  if (wait_for(std::chrono::seconds(2))) return;
  kill(pid_, SIGKILL);
  int status;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

bool ChildProcess::wait_for(std::chrono::milliseconds timeout) noexcept {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  // A pidfd (Linux 5.3) becomes readable the moment the child exits: no
  // polling delay between its exit and our return.
  // (Through syscall(2): glibc 2.36's <sys/pidfd.h> lacks extern "C".)
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0)));
  auto pause = std::chrono::milliseconds(1);
  while (!reaped_) {
    int status;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      status_ = status;
      reaped_ = true;
    } else if (r < 0 && errno != EINTR) {
      // ECHILD: reaped elsewhere (e.g. SIGCHLD set to SIG_IGN); the status is lost.
      reaped_ = true;
    } else if (r == 0) {
      auto now = Clock::now();
      if (now >= deadline) return false;
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
      if (pidfd) {
        struct pollfd p {pidfd.get(), POLLIN, 0};
        ::poll(&p, 1, static_cast<int>(std::min<std::chrono::milliseconds::rep>(left.count(), 60'000)));
      } else {
        std::this_thread::sleep_for(std::min<Clock::duration>(pause, left));
        pause = std::min(pause * 2, std::chrono::milliseconds(50));
      }
    }
  }
  return true;
}

std::string ChildProcess::describe() const {
  if (!reaped_) return {};
  if (!status_) return "exited";
  if (WIFEXITED(*status_)) return fmt::format("exited with status {}", WEXITSTATUS(*status_));
  if (WIFSIGNALED(*status_)) return fmt::format("killed by signal {}", WTERMSIG(*status_));
  return fmt::format("ended with wait status {}", *status_);
}

TunnelStream::TunnelStream(UniqueFd fd, std::string name, std::string command, pid_t pid)
    : SocketStream(std::move(fd), std::move(name), fmt::format("tunnel command `{}`", command)),
      command_(std::move(command)),
      child_(pid) {}

TunnelStream::~TunnelStream() {
  // Members die before the base: close the socket now, or child_'s
  // destructor would wait for a child that never sees end of input.
  fd_.reset();
}

std::string TunnelStream::end_reason() const {
  std::string d = child_.describe();
  if (d.empty()) return {};
  return fmt::format("tunnel command `{}` {}", command_, d);
}

void TunnelStream::on_end() {
  // The command closed its output: it is most likely exiting; give it a
  // moment so end_reason() can tell how.
  child_.wait_for(std::chrono::milliseconds(500));
}

void TunnelStream::fail(Op op, int err) {
  // ECONNRESET (it exited leaving our data unread) or EPIPE (it exited, or
  // closed its input): its exit status says more than the errno.
  if ((err == ECONNRESET || err == EPIPE) && child_.wait_for(std::chrono::milliseconds(500)))
    throw NetworkError(name_, end_reason());
  SocketStream::fail(op, err);
}

std::unique_ptr<Stream> open_tunnel(const ConnectionOptions& opts, int debug) {
  TunnelCommand command = parse_tunnel_command(opts.command);
  if (command.argv.empty()) throw ConfigError(opts.name, "empty tunnel command (option command)");
  auto fail = [&](std::string_view what, int err) {
    return NetworkError(opts.name,
                        fmt::format("cannot run tunnel command `{}`: {}{}", opts.command, what, std::strerror(err)));
  };

  int ends[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) < 0) throw fail("socketpair: ", errno);
  UniqueFd ours(ends[0]);
  UniqueFd theirs(ends[1]);
  if (theirs.get() <= STDERR_FILENO) {
    // With a standard descriptor closed in this process, the socketpair
    // may land on 0-2, where the dup2 below would leave it close-on-exec.
    int moved = fcntl(theirs.get(), F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
    if (moved < 0) throw fail("fcntl: ", errno);
    theirs.reset(moved);
  }

  SpawnFileActions actions;
  SpawnAttributes attr;
  int rc = posix_spawn_file_actions_adddup2(actions.get(), theirs.get(), STDIN_FILENO);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(actions.get(), theirs.get(), STDOUT_FILENO);
  if (rc == 0 && opts.null_stderr && debug == 0)
    rc = posix_spawn_file_actions_addopen(actions.get(), STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  // Both socket ends are close-on-exec: the child keeps only 0 and 1.
  // As the reference, the child blocks SIGINT: a ^C on the terminal goes to
  // the whole process group, and we want to log out before it goes away.
  // SIGPIPE is reset in case this process ignores it.
  sigset_t mask, defaults;
  pthread_sigmask(SIG_BLOCK, nullptr, &mask);
  sigaddset(&mask, SIGINT);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  if (rc == 0) rc = posix_spawnattr_setsigmask(attr.get(), &mask);
  if (rc == 0) rc = posix_spawnattr_setsigdefault(attr.get(), &defaults);
  if (rc == 0) rc = posix_spawnattr_setflags(attr.get(), POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  if (rc != 0) throw fail("posix_spawn: ", rc);

  pid_t pid = -1;
  rc = spawn(&pid, command.argv, actions, attr);
  if (rc == ENOEXEC && !command.shell) {
    // Perl's exec falls back to the shell for a file the kernel cannot
    // execute (a script without #!); glibc's posix_spawnp no longer does.
    command = TunnelCommand{true, {"/bin/sh", "-c", opts.command}};
    rc = spawn(&pid, command.argv, actions, attr);
  }
  if (rc != 0) throw fail("", rc);
  theirs.reset();
  return std::make_unique<TunnelStream>(std::move(ours), opts.name, opts.command, pid);
}

}  // namespace interimap::detail
