// Private to the net layer: host option parsing and TCP connection.
#pragma once

#include "net/socket_stream.hpp"

#include <interimap/options.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace interimap::detail {

// The host option, understood as the reference does: "[LITERAL]" must be an
// IPv4 or IPv6 address; a bare IPv4 or IPv6 address is a literal too; any
// other value is a name to resolve.
struct HostSpec {
  std::string address;  // brackets stripped
  int family = 0;       // AF_INET or AF_INET6 for a literal, 0 for a name
  bool is_literal() const { return family != 0; }
};

// Throws ConfigError ("NAME: invalid IP literal `[x]` in host") for brackets
// around something else.
HostSpec parse_host(std::string_view host, std::string_view name);

// "host:port", with an IPv6 address in brackets: "[::1]:143".
std::string format_endpoint(std::string_view host, std::string_view port);

// Connects a TCP socket to `host` (addresses tried in getaddrinfo order, each
// connect bounded by 30 s) at `service` (a number or a service name).  Sets
// TCP_NODELAY, a 30 s SO_SNDTIMEO (a write without progress for that long
// fails), and with keepalive SO_KEEPALIVE and a 60 s TCP_KEEPIDLE.  `what`
// prefixes the host in messages ("" or "SOCKS5 proxy ").  Throws
// NetworkError:
//   "NAME: cannot resolve WHATHOST:PORT: REASON" (getaddrinfo's reason)
//   "NAME: cannot connect to WHATHOST:PORT: REASON" for a literal, and
//   "NAME: cannot connect to WHATHOST:PORT (ADDRESS): REASON" for a name,
//   ADDRESS and REASON those of the last address tried.
UniqueFd tcp_connect(const HostSpec& host, const std::string& service, std::string_view name, std::string_view what,
                     bool keepalive);

// A direct TCP connection to opts.host and opts.effective_port().
std::unique_ptr<SocketStream> open_tcp(const ConnectionOptions& opts);

}  // namespace interimap::detail
