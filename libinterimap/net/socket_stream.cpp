#include "net/socket_stream.hpp"

#include <interimap/error.hpp>

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cassert>
#include <climits>
#include <cerrno>
#include <cstring>
#include <vector>

namespace interimap::detail {

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) {
    // Linux closes the descriptor even when close() fails with EINTR, so
    // retrying could close a descriptor another thread just opened.
    ::close(fd_);
  }
  fd_ = fd;
}

SocketStream::SocketStream(UniqueFd fd, std::string name, std::string peer)
    : fd_(std::move(fd)), name_(std::move(name)), peer_(std::move(peer)) {}

size_t SocketStream::read(std::span<char> buf) {
  assert(!buf.empty());
  while (true) {
    ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), 0);
    if (n > 0) return static_cast<size_t>(n);
    if (n == 0) {
      on_end();
      return 0;
    }
    if (errno != EINTR) fail(Op::Read, errno);
  }
}

void SocketStream::write(std::string_view data) {
  while (!data.empty()) {
    // MSG_NOSIGNAL: a closed peer must give EPIPE, not kill the process.
    ssize_t n = ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
    if (n >= 0) {
      data.remove_prefix(static_cast<size_t>(n));
    } else if (errno != EINTR) {
      fail(Op::Write, errno);
    }
  }
}

void SocketStream::write_parts(std::span<const std::string_view> parts) {
  // sendmsg(2) with at most IOV_MAX parts at a time; a partial write
  // resumes inside the part it stopped in.
  std::vector<iovec> iov;
  size_t i = 0, offset = 0;  // the next byte to send: parts[i][offset]
  while (i < parts.size()) {
    iov.clear();
    for (size_t j = i; j < parts.size() && iov.size() < IOV_MAX; ++j) {
      const std::string_view p = j == i ? parts[j].substr(offset) : parts[j];
      if (!p.empty()) iov.push_back({const_cast<char*>(p.data()), p.size()});
    }
    if (iov.empty()) return;
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = iov.size();
    const ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno != EINTR) fail(Op::Write, errno);
      continue;
    }
    auto left = static_cast<size_t>(n);
    while (i < parts.size() && left >= parts[i].size() - offset) {
      left -= parts[i].size() - offset;
      offset = 0;
      ++i;
    }
    offset += left;
  }
}

void SocketStream::fail(Op op, int err) {
  // SO_SNDTIMEO expired with nothing sent (see tcp.cpp).
  std::string reason = err == EAGAIN || err == EWOULDBLOCK ? std::string("timed out") : std::strerror(err);
  throw NetworkError(name_, fmt::format("cannot {} {}: {}", op == Op::Read ? "read from" : "write to", peer_, reason));
}

bool wait_readable(const Stream& stream, std::chrono::milliseconds timeout) {
  if (stream.buffered()) return true;
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd pfd = {stream.fd(), POLLIN, 0};
    int r = ::poll(&pfd, 1, static_cast<int>(left));
    if (r > 0) return true;  // POLLIN, or POLLHUP/POLLERR for read() to report
    if (r == 0) return false;
    if (errno != EINTR)
      throw NetworkError(std::string(stream.connection_name()),
                         fmt::format("poll on {}: {}", stream.peer(), std::strerror(errno)));
  }
}

}  // namespace interimap::detail
