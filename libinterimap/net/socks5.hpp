// Private to the net layer: TCP connections through a SOCKS5 proxy
// (RFC 1928, with the username/password method of RFC 1929).
#pragma once

#include "net/socket_stream.hpp"

#include <interimap/options.hpp>

#include <memory>
#include <string>
#include <string_view>

namespace interimap::detail {

// The proxy option, "socks5://[USER:PASSWORD@]HOST[:PORT]" or "socks5h://...".
struct ProxySpec {
  bool remote_resolution = false;  // socks5h: the proxy resolves the host name
  bool has_credentials = false;    // USER:PASSWORD@ given
  std::string username;
  std::string password;       // empty when "USER@" has no colon
  std::string host;           // as written, possibly "[IP literal]"
  std::string port = "1080";  // a number or a service name
};

// Parses as the reference: the credentials run up to the last '@' and split
// at their first ':'; HOST is "[...]" or has no ':'; PORT is alphanumeric.
// Throws ConfigError naming `name` and the URI with its password hidden
// ("NAME: invalid proxy `socks5://user:***@host:x:y`", "NAME: unsupported
// proxy protocol `http` (only socks5 and socks5h)"), and for a user name or
// password over 255 bytes (RFC 1929 2).
ProxySpec parse_proxy(std::string_view uri, std::string_view name);

// Connects to opts.host and opts.effective_port() through opts.proxy.  With
// socks5 a host name is resolved here and the proxy gets the first address;
// with socks5h the proxy gets the name.  An IP literal is sent as an address
// either way.  Credentials, when given, are offered (method 0x02) beside
// "no authentication" (0x00), as the reference does; the proxy chooses.
// Throws ConfigError from parse_proxy, and NetworkError:
//   "NAME: cannot connect to SOCKS5 proxy PHOST:PPORT: REASON" (see tcp_connect)
//   "NAME: SOCKS5 proxy PHOST:PPORT: no acceptable authentication method (offered: ...)"
//   "NAME: SOCKS5 proxy PHOST:PPORT: username/password authentication failed (status 0xNN)"
//   "NAME: SOCKS5 proxy PHOST:PPORT cannot connect to HOST:PORT: MEANING (reply 0xNN)"
//      MEANING as RFC 1928 6: general SOCKS server failure, connection not
//      allowed by ruleset, network unreachable, host unreachable, connection
//      refused, TTL expired, command not supported, address type not
//      supported, unassigned reply code
//   "NAME: SOCKS5 proxy PHOST:PPORT: invalid reply (DETAIL)"
//   "NAME: SOCKS5 proxy PHOST:PPORT closed the connection during the negotiation"
std::unique_ptr<SocketStream> open_socks5(const ConnectionOptions& opts);

}  // namespace interimap::detail
