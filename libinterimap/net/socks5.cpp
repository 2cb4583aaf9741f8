#include "net/socks5.hpp"

#include "net/tcp.hpp"
#include "util/redact.hpp"

#include <interimap/error.hpp>

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

namespace interimap::detail {

namespace {

// RFC 1928 3 and 4.
constexpr uint8_t kVersion = 0x05;
constexpr uint8_t kMethodNone = 0x00;
constexpr uint8_t kMethodUserPass = 0x02;
constexpr uint8_t kMethodNoneAcceptable = 0xFF;
constexpr uint8_t kCmdConnect = 0x01;
constexpr uint8_t kAtypIPv4 = 0x01;
constexpr uint8_t kAtypDomain = 0x03;
constexpr uint8_t kAtypIPv6 = 0x04;
// RFC 1929 2.
constexpr uint8_t kUserPassVersion = 0x01;

bool is_alnum(char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

// RFC 1928 6, "Replies".
std::string reply_meaning(uint8_t rep) {
  switch (rep) {
    case 0x01:
      return "general SOCKS server failure";
    case 0x02:
      return "connection not allowed by ruleset";
    case 0x03:
      return "network unreachable";
    case 0x04:
      return "host unreachable";
    case 0x05:
      return "connection refused";
    case 0x06:
      return "TTL expired";
    case 0x07:
      return "command not supported";
    case 0x08:
      return "address type not supported";
    default:
      return "unassigned reply code";
  }
}

// The negotiation over the proxy socket: exact reads, and messages that
// name the proxy.
class Negotiation {
 public:
  Negotiation(UniqueFd fd, std::string name, std::string proxy)
      : stream_(std::move(fd), name, "SOCKS5 proxy " + proxy), name_(std::move(name)), proxy_(std::move(proxy)) {}

  void send(const std::string& bytes) { stream_.write(bytes); }

  std::string receive(size_t n) {
    std::string out(n, '\0');
    size_t got = 0;
    while (got < n) {
      if (!wait_readable(stream_, kSetupTimeout)) fail(fmt::format("no reply within {} s", kSetupTimeout.count()));
      size_t r = stream_.read(std::span<char>(out.data() + got, n - got));
      if (r == 0)
        throw NetworkError(name_, fmt::format("SOCKS5 proxy {} closed the connection during the negotiation", proxy_));
      got += r;
    }
    return out;
  }
  uint8_t receive_byte() { return static_cast<uint8_t>(receive(1)[0]); }

  [[noreturn]] void fail(std::string_view what) const {
    throw NetworkError(name_, fmt::format("SOCKS5 proxy {}: {}", proxy_, what));
  }
  [[noreturn]] void invalid(std::string_view detail) const { fail(fmt::format("invalid reply ({})", detail)); }

  UniqueFd release() { return stream_.release(); }

 private:
  SocketStream stream_;
  std::string name_;
  std::string proxy_;
};

struct AddrInfoDeleter {
  void operator()(addrinfo* ai) const noexcept { freeaddrinfo(ai); }
};

// The ATYP and DST.ADDR of the CONNECT request (RFC 1928 4 and 5).
std::string destination(const HostSpec& target, bool remote_resolution, const ConnectionOptions& opts,
                        const std::string& port) {
  std::string out;
  if (!target.is_literal() && remote_resolution) {
    // RFC 1928 5: a fully-qualified domain name, its length in one octet.
    if (target.address.size() > 255)
      throw ConfigError(opts.name,
                        fmt::format("host name `{}` is too long for SOCKS5 (over 255 bytes)", target.address));
    out += static_cast<char>(kAtypDomain);
    out += static_cast<char>(target.address.size());
    out += target.address;
    return out;
  }
  if (target.is_literal()) {
    unsigned char bytes[sizeof(in6_addr)];
    inet_pton(target.family, target.address.c_str(), bytes);
    out += static_cast<char>(target.family == AF_INET ? kAtypIPv4 : kAtypIPv6);
    out.append(reinterpret_cast<const char*>(bytes), target.family == AF_INET ? 4 : 16);
    return out;
  }
  // socks5://: resolve here and hand the proxy the first address, as the
  // reference does.
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(target.address.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    std::string reason = rc == EAI_SYSTEM ? std::strerror(errno) : gai_strerror(rc);
    throw NetworkError(opts.name, fmt::format("cannot resolve {}: {}", format_endpoint(target.address, port), reason));
  }
  std::unique_ptr<addrinfo, AddrInfoDeleter> list(res);
  if (res->ai_family == AF_INET) {
    sockaddr_in sin;
    std::memcpy(&sin, res->ai_addr, sizeof sin);
    out += static_cast<char>(kAtypIPv4);
    out.append(reinterpret_cast<const char*>(&sin.sin_addr), 4);
  } else if (res->ai_family == AF_INET6) {
    sockaddr_in6 sin6;
    std::memcpy(&sin6, res->ai_addr, sizeof sin6);
    out += static_cast<char>(kAtypIPv6);
    out.append(reinterpret_cast<const char*>(&sin6.sin6_addr), 16);
  } else {
    throw NetworkError(
        opts.name, fmt::format("cannot resolve {}: no IPv4 or IPv6 address", format_endpoint(target.address, port)));
  }
  return out;
}

}  // namespace

ProxySpec parse_proxy(std::string_view uri, std::string_view name) {
  auto invalid = [&]() {
    return ConfigError(
        std::string(name),
        fmt::format("invalid proxy `{}` (expected socks5://[USER:PASSWORD@]HOST[:PORT] or socks5h://...)",
                    redact_userinfo(uri)));
  };
  if (std::any_of(uri.begin(), uri.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7F; }))
    throw invalid();
  size_t scheme_end = uri.find("://");
  if (scheme_end == std::string_view::npos || scheme_end == 0 ||
      !std::all_of(uri.begin(), uri.begin() + static_cast<ptrdiff_t>(scheme_end), is_alnum))
    throw invalid();
  std::string_view scheme = uri.substr(0, scheme_end);
  std::string_view rest = uri.substr(scheme_end + 3);

  ProxySpec spec;
  size_t at = rest.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view userinfo = rest.substr(0, at);
    rest.remove_prefix(at + 1);
    size_t colon = userinfo.find(':');
    spec.has_credentials = true;
    spec.username = std::string(userinfo.substr(0, colon));
    if (colon != std::string_view::npos) spec.password = std::string(userinfo.substr(colon + 1));
  }
  std::string_view hostpart = rest;
  std::string_view port;
  if (rest.starts_with('[')) {
    size_t close = rest.find(']');
    if (close == std::string_view::npos || close == 1) throw invalid();
    hostpart = rest.substr(0, close + 1);
    rest.remove_prefix(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') throw invalid();
      port = rest.substr(1);
      if (port.empty()) throw invalid();
    }
  } else {
    size_t colon = rest.find(':');
    if (colon != std::string_view::npos) {
      hostpart = rest.substr(0, colon);
      port = rest.substr(colon + 1);
      if (port.empty()) throw invalid();
    }
    if (hostpart.empty()) throw invalid();
  }
  if (!std::all_of(port.begin(), port.end(), is_alnum)) throw invalid();
  spec.host = std::string(hostpart);
  if (!port.empty()) spec.port = std::string(port);

  if (scheme == "socks5h") {
    spec.remote_resolution = true;
  } else if (scheme != "socks5") {
    throw ConfigError(std::string(name),
                      fmt::format("unsupported proxy protocol `{}` (only socks5 and socks5h)", scheme));
  }
  // RFC 1929 2: ULEN and PLEN are one octet each.
  if (spec.username.size() > 255 || spec.password.size() > 255)
    throw ConfigError(std::string(name),
                      fmt::format("proxy user name or password over 255 bytes in `{}`", redact_userinfo(uri)));
  return spec;
}

std::unique_ptr<SocketStream> open_socks5(const ConnectionOptions& opts) {
  ProxySpec proxy = parse_proxy(opts.proxy, opts.name);
  HostSpec proxy_host = parse_host(proxy.host, opts.name);
  HostSpec target = parse_host(opts.host, opts.name);
  const std::string port = std::to_string(opts.effective_port());
  const std::string target_endpoint = format_endpoint(target.address, port);
  const std::string proxy_endpoint = format_endpoint(proxy_host.address, proxy.port);

  Negotiation n(tcp_connect(proxy_host, proxy.port, opts.name, "SOCKS5 proxy ", opts.keepalive), opts.name,
                proxy_endpoint);

  // RFC 1928 3: version identifier / method selection.
  std::string hello{static_cast<char>(kVersion)};
  if (proxy.has_credentials) {
    hello += static_cast<char>(2);
    hello += static_cast<char>(kMethodNone);
    hello += static_cast<char>(kMethodUserPass);
  } else {
    hello += static_cast<char>(1);
    hello += static_cast<char>(kMethodNone);
  }
  n.send(hello);
  std::string choice = n.receive(2);
  if (static_cast<uint8_t>(choice[0]) != kVersion)
    n.invalid(fmt::format("version 0x{:02x}, expected 0x05", static_cast<uint8_t>(choice[0])));
  uint8_t method = static_cast<uint8_t>(choice[1]);
  if (method == kMethodNoneAcceptable) {
    n.fail(fmt::format("no acceptable authentication method (offered: {})",
                       proxy.has_credentials ? "no authentication, username/password" : "no authentication"));
  } else if (method == kMethodUserPass && proxy.has_credentials) {
    // RFC 1929 2: VER ULEN UNAME PLEN PASSWD; the reply is VER STATUS, 0 = success.
    std::string auth{static_cast<char>(kUserPassVersion)};
    auth += static_cast<char>(proxy.username.size());
    auth += proxy.username;
    auth += static_cast<char>(proxy.password.size());
    auth += proxy.password;
    n.send(auth);
    std::string status = n.receive(2);
    if (static_cast<uint8_t>(status[0]) != kUserPassVersion)
      n.invalid(fmt::format("authentication version 0x{:02x}, expected 0x01", static_cast<uint8_t>(status[0])));
    if (status[1] != 0)
      n.fail(fmt::format("username/password authentication failed (status 0x{:02x})", static_cast<uint8_t>(status[1])));
  } else if (method != kMethodNone) {
    n.invalid(fmt::format("method 0x{:02x} was not offered", method));
  }

  // RFC 1928 4: VER CMD RSV ATYP DST.ADDR DST.PORT (network order).
  std::string request{static_cast<char>(kVersion), static_cast<char>(kCmdConnect), '\0'};
  request += destination(target, proxy.remote_resolution, opts, port);
  uint16_t p = opts.effective_port();
  request += static_cast<char>(p >> 8);
  request += static_cast<char>(p & 0xFF);
  n.send(request);

  // RFC 1928 6: VER REP RSV ATYP BND.ADDR BND.PORT.
  std::string reply = n.receive(4);
  uint8_t version = static_cast<uint8_t>(reply[0]);
  uint8_t rep = static_cast<uint8_t>(reply[1]);
  if (version != kVersion) n.invalid(fmt::format("version 0x{:02x}, expected 0x05", version));
  if (rep != 0x00)
    throw NetworkError(opts.name, fmt::format("SOCKS5 proxy {} cannot connect to {}: {} (reply 0x{:02x})",
                                              proxy_endpoint, target_endpoint, reply_meaning(rep), rep));
  if (reply[2] != 0) n.invalid(fmt::format("reserved byte 0x{:02x}", static_cast<uint8_t>(reply[2])));
  size_t address_length;
  switch (static_cast<uint8_t>(reply[3])) {
    case kAtypIPv4:
      address_length = 4;
      break;
    case kAtypIPv6:
      address_length = 16;
      break;
    case kAtypDomain:
      address_length = n.receive_byte();
      break;
    default:
      n.invalid(fmt::format("address type 0x{:02x}", static_cast<uint8_t>(reply[3])));
  }
  n.receive(address_length + 2);  // BND.ADDR and BND.PORT: of no use to a client

  return std::make_unique<SocketStream>(n.release(), opts.name,
                                        fmt::format("{} via SOCKS5 proxy {}", target_endpoint, proxy_endpoint));
}

}  // namespace interimap::detail
