#include "net/socks5.hpp"
#include "net/stream.hpp"
#include "net/tcp.hpp"
#include "net/tunnel.hpp"

namespace interimap::detail {

std::unique_ptr<Stream> open_stream(const ConnectionOptions& opts, int debug) {
  if (opts.type == ConnectionOptions::Type::Tunnel) return open_tunnel(opts, debug);
  std::unique_ptr<Stream> stream;
  if (opts.proxy.empty()) {
    stream = open_tcp(opts);
  } else {
    stream = open_socks5(opts);
  }
  // imaps: TLS from the first byte (RFC 8314 3.3); type=imap upgrades
  // later, by STARTTLS, in the IMAP layer.
  if (opts.type == ConnectionOptions::Type::Imaps) stream = start_tls(std::move(stream), opts);
  return stream;
}

}  // namespace interimap::detail
