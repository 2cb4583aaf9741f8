// Private to the net layer: type=tunnel, a command speaking IMAP on its
// standard input and output.
#pragma once

#include "net/socket_stream.hpp"

#include <interimap/options.hpp>

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace interimap::detail {

// How a tunnel command is run: argv for execvp, or {"/bin/sh", "-c", CMD}.
struct TunnelCommand {
  bool shell = false;
  std::vector<std::string> argv;
};

// Decides as Perl's exec does with one string (the reference runs
// `exec $command`): leading blanks are skipped; the shell runs commands
// starting with ". " or "exec ", or with a WORD= assignment, or holding
// one of $&*(){}[]'";\|?<>~` or a newline that is not the last character;
// otherwise the command is split on blanks (one trailing newline dropped).
// Returns an empty argv for a blank command.
TunnelCommand parse_tunnel_command(std::string_view command);

// Owns a child process: the destructor waits up to 1 s for it to exit,
// then sends SIGTERM and waits 2 s, then SIGKILL, and always reaps it.
class ChildProcess {
 public:
  explicit ChildProcess(pid_t pid) noexcept : pid_(pid) {}
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Reaps the child if it exits within `timeout`; true once reaped.
  bool wait_for(std::chrono::milliseconds timeout) noexcept;
  // "exited with status N", "killed by signal N", or empty while running.
  std::string describe() const;

 private:
  pid_t pid_;
  bool reaped_ = false;
  std::optional<int> status_;  // waitpid status; unset if reaped by someone else
};

// The stream to a tunnel command.  At end of stream (or ECONNRESET/EPIPE)
// it waits up to 0.5 s for the command to exit, to report its status.
class TunnelStream final : public SocketStream {
 public:
  TunnelStream(UniqueFd fd, std::string name, std::string command, pid_t pid);
  // Closes the socket first, so that the child sees end of input, then
  // reaps it (ChildProcess).
  ~TunnelStream() override;

  std::string end_reason() const override;

 protected:
  void on_end() override;
  [[noreturn]] void fail(Op op, int err) override;

 private:
  std::string command_;
  ChildProcess child_;
};

// Starts opts.command (see parse_tunnel_command) with one end of a
// socketpair as its standard input and output; its standard error goes to
// /dev/null when opts.null_stderr and debug == 0.  Throws ConfigError for a
// blank command, NetworkError "NAME: cannot run tunnel command `CMD`: REASON".
std::unique_ptr<Stream> open_tunnel(const ConnectionOptions& opts, int debug);

}  // namespace interimap::detail
