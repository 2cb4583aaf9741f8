// Byte streams stacked on a file descriptor: tunnel, TCP (optionally through
// SOCKS5), TLS, DEFLATE.  All I/O is blocking; poll() on fd() (after checking
// buffered()) tells whether read() would block.
#pragma once

#include <interimap/options.hpp>

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace interimap::detail {

class Stream {
 public:
  virtual ~Stream() = default;
  Stream() = default;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Reads at least one byte, blocking until some is available.  Returns 0 at
  // end of stream.  Throws NetworkError (for a tunnel whose child exited,
  // the message gives the command and its exit status).
  virtual size_t read(std::span<char> buf) = 0;
  // Writes all of data and delivers it to the peer before returning (the
  // DEFLATE layer ends each write with Z_SYNC_FLUSH, so no command waits in
  // the compressor).  Throws NetworkError.
  virtual void write(std::string_view data) = 0;
  // True when read() would return without waiting on fd() (TLS records or
  // inflated bytes already buffered).
  virtual bool buffered() const { return false; }
  // The descriptor to poll for readability.
  virtual int fd() const = 0;
  // Sends what the peer needs to see the stream end cleanly (TLS
  // close_notify); best effort, never throws.
  virtual void shutdown() noexcept {}
};

// Opens the transport for `opts`: a tunnel for type=tunnel, else a TCP
// connection (through opts.proxy when set), wrapped in TLS for type=imaps.
// `debug` > 0 keeps the tunnel command's stderr even with null-stderr.
// Throws NetworkError naming opts.name, the host/port or command, and the reason.
std::unique_ptr<Stream> open_stream(const ConnectionOptions& opts, int debug);

// Wraps a TCP stream in TLS (for STARTTLS and imaps): certificate chain and
// host name verification per opts.tls.verify, SPKI fingerprint pinning
// during the handshake, SNI, protocol bounds, ciphers.  Throws NetworkError.
std::unique_ptr<Stream> start_tls(std::unique_ptr<Stream> inner, const ConnectionOptions& opts);

// Wraps a stream in COMPRESS=DEFLATE (RFC 4978): raw deflate both ways,
// each write() ending with Z_SYNC_FLUSH.
std::unique_ptr<Stream> start_deflate(std::unique_ptr<Stream> inner);

}  // namespace interimap::detail
