// Private to the net layer: the owner of a file descriptor, and the Stream
// over a connected socket that TCP, SOCKS5 and the tunnel share.
#pragma once

#include "net/stream.hpp"

#include <chrono>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace interimap::detail {

// The bound on each step of opening a connection (connect, each read of
// the SOCKS5 negotiation and of the TLS handshake) and on a write without
// progress: the reference's 30 s SO_RCVTIMEO/SO_SNDTIMEO.
inline constexpr std::chrono::seconds kSetupTimeout{30};

// Owns one file descriptor and closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  // Gives up ownership without closing.
  int release() noexcept { return std::exchange(fd_, -1); }
  // Closes the descriptor held, if any, and takes `fd`.
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

// A Stream over a connected stream socket (TCP or AF_UNIX).  Writes use
// send(MSG_NOSIGNAL), so a peer that went away yields EPIPE, never SIGPIPE.
// Reads and writes restart after EINTR.
class SocketStream : public Stream {
 public:
  // `name` is the connection's name, `peer` what the socket leads to
  // ("imap.example.net:993", "tunnel command `...`"); both go into the
  // messages: "NAME: cannot read from PEER: REASON".
  SocketStream(UniqueFd fd, std::string name, std::string peer);

  // buf must not be empty.
  size_t read(std::span<char> buf) override;
  void write(std::string_view data) override;
  void write_parts(std::span<const std::string_view> parts) override;
  int fd() const override { return fd_.get(); }
  std::string connection_name() const override { return name_; }
  std::string peer() const override { return peer_; }

  // Gives the socket up (for a SOCKS5 negotiation handing it to the
  // stream that follows); the stream is unusable afterwards.
  UniqueFd release() noexcept { return std::move(fd_); }

 protected:
  enum class Op { Read, Write };
  // Called once when read() meets the end of the stream.
  virtual void on_end() {}
  // Throws the NetworkError for a failed read or write (errno `err`).
  [[noreturn]] virtual void fail(Op op, int err);

  UniqueFd fd_;
  std::string name_;
  std::string peer_;
};

// Waits until read() on `stream` would not block (buffered, or its fd
// readable or at end), at most `timeout`.  False on timeout; throws
// NetworkError if poll fails.
bool wait_readable(const Stream& stream, std::chrono::milliseconds timeout);

}  // namespace interimap::detail
