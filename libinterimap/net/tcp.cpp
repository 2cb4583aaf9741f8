#include "net/tcp.hpp"

#include <interimap/error.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace interimap::detail {

namespace {

// The reference bounds connect, read and write by 30 s (SO_RCVTIMEO and
// SO_SNDTIMEO).  We bound connect, write and the set-up reads (SOCKS5, TLS
// handshake) the same way; later reads block, as the IMAP layer polls with
// its own timeouts (a socket-wide SO_RCVTIMEO would break IDLE).
constexpr int kTimeoutSeconds = static_cast<int>(kSetupTimeout.count());
// The reference's TCP_KEEPIDLE with keepalive (interimap --watch).
constexpr int kKeepIdleSeconds = 60;

struct AddrInfoDeleter {
  void operator()(addrinfo* ai) const noexcept { freeaddrinfo(ai); }
};
using AddrInfoPtr = std::unique_ptr<addrinfo, AddrInfoDeleter>;

std::string numeric_address(const sockaddr* sa, socklen_t len) {
  char buf[NI_MAXHOST];
  if (getnameinfo(sa, len, buf, sizeof buf, nullptr, 0, NI_NUMERICHOST) != 0) return "?";
  return buf;
}

// connect() with a deadline: non-blocking connect, then poll for
// writability and read the outcome from SO_ERROR.  Returns 0 or an errno.
int connect_with_timeout(int fd, const sockaddr* sa, socklen_t len) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return errno;
  if (connect(fd, sa, len) < 0) {
    if (errno != EINPROGRESS && errno != EINTR) return errno;
    // EINTR: the connection goes on asynchronously, as for EINPROGRESS.
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + std::chrono::seconds(kTimeoutSeconds);
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return ETIMEDOUT;
      pollfd pfd = {fd, POLLOUT, 0};
      int r = poll(&pfd, 1, static_cast<int>(left));
      if (r > 0) break;
      if (r == 0) return ETIMEDOUT;
      if (errno != EINTR) return errno;
    }
    int err = 0;
    socklen_t err_len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len) < 0) return errno;
    if (err != 0) return err;
  }
  if (fcntl(fd, F_SETFL, flags) < 0) return errno;
  return 0;
}

void set_option(int fd, int level, int option, const void* value, socklen_t len, std::string_view option_name,
                std::string_view name, std::string_view where) {
  if (setsockopt(fd, level, option, value, len) < 0)
    throw NetworkError(std::string(name),
                       fmt::format("setsockopt {} on the socket to {}: {}", option_name, where, std::strerror(errno)));
}

}  // namespace

HostSpec parse_host(std::string_view host, std::string_view name) {
  HostSpec spec;
  bool bracketed = host.size() >= 2 && host.front() == '[' && host.back() == ']';
  spec.address = std::string(bracketed ? host.substr(1, host.size() - 2) : host);
  // inet_pton accepts exactly the dotted quads (no leading zeros) and the
  // RFC 4291 2.2 text forms the reference's regular expressions accept.
  unsigned char buf[sizeof(in6_addr)];
  if (inet_pton(AF_INET, spec.address.c_str(), buf) == 1) {
    spec.family = AF_INET;
  } else if (inet_pton(AF_INET6, spec.address.c_str(), buf) == 1) {
    spec.family = AF_INET6;
  } else if (bracketed) {
    throw ConfigError(std::string(name), fmt::format("invalid IP literal `{}` in host", host));
  }
  return spec;
}

std::string format_endpoint(std::string_view host, std::string_view port) {
  if (host.find(':') != std::string_view::npos && !host.starts_with('[')) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

UniqueFd tcp_connect(const HostSpec& host, const std::string& service, std::string_view name, std::string_view what,
                     bool keepalive) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  if (host.is_literal()) {
    // An IP literal is never looked up (interimap(1), "host").
    hints.ai_family = host.family;
    hints.ai_flags = AI_NUMERICHOST;
  }
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.address.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) {
    std::string reason = rc == EAI_SYSTEM ? std::strerror(errno) : gai_strerror(rc);
    throw NetworkError(std::string(name),
                       fmt::format("cannot resolve {}{}: {}", what, format_endpoint(host.address, service), reason));
  }
  AddrInfoPtr list(res);

  const std::string endpoint = format_endpoint(host.address, service);
  int last_error = EHOSTUNREACH;
  std::string last_address;
  for (const addrinfo* ai = list.get(); ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    last_address = numeric_address(ai->ai_addr, ai->ai_addrlen);
    if (!fd) {
      last_error = errno;
      continue;
    }
    last_error = connect_with_timeout(fd.get(), ai->ai_addr, ai->ai_addrlen);
    if (last_error != 0) continue;

    const std::string where = fmt::format("{}{}", what, endpoint);
    int one = 1;
    // IMAP commands are small and answered one by one; Nagle would delay them.
    set_option(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one, "TCP_NODELAY", name, where);
    timeval tv = {kTimeoutSeconds, 0};
    set_option(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv, "SO_SNDTIMEO", name, where);
    if (keepalive) {
      int idle = kKeepIdleSeconds;
      set_option(fd.get(), SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one, "SO_KEEPALIVE", name, where);
      set_option(fd.get(), IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle, "TCP_KEEPIDLE", name, where);
    }
    return fd;
  }
  std::string address = host.is_literal() || last_address.empty() ? std::string() : " (" + last_address + ")";
  throw NetworkError(std::string(name),
                     fmt::format("cannot connect to {}{}{}: {}", what, endpoint, address, std::strerror(last_error)));
}

std::unique_ptr<SocketStream> open_tcp(const ConnectionOptions& opts) {
  HostSpec host = parse_host(opts.host, opts.name);
  std::string port = std::to_string(opts.effective_port());
  UniqueFd fd = tcp_connect(host, port, opts.name, "", opts.keepalive);
  return std::make_unique<SocketStream>(std::move(fd), opts.name, format_endpoint(host.address, port));
}

}  // namespace interimap::detail
