// Byte streams stacked on a file descriptor: tunnel, TCP (optionally through
// SOCKS5), TLS, DEFLATE.  All I/O is blocking; poll() on fd() (after checking
// buffered()) tells whether read() would block.
#pragma once

#include <interimap/options.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace interimap::detail {

class Stream {
 public:
  virtual ~Stream() = default;
  Stream() = default;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Reads at least one byte into buf (not empty), blocking until some is
  // available.  Returns 0 at end of stream (a TCP FIN, a TLS close_notify or
  // a TLS EOF without close_notify: IMAP frames its own data, so truncation
  // shows as a missing tagged response); end_reason() then says what more is
  // known.  Throws NetworkError on a read error; when a tunnel's socket is
  // reset (ECONNRESET) and its command has exited, the message is
  // "NAME: tunnel command `CMD` exited with status N" (or "killed by signal N").
  // A TLS record without application data (a session ticket, a key update)
  // is consumed silently, so after fd() polled readable, read() may still
  // wait for the next record.
  virtual size_t read(std::span<char> buf) = 0;
  // Writes all of data and delivers it to the peer before returning (the
  // DEFLATE layer ends each write with Z_SYNC_FLUSH, so no command waits in
  // the compressor).  Throws NetworkError, for a tunnel whose command exited
  // (EPIPE) with the same message as read().  Never raises SIGPIPE.  On TCP,
  // a write that makes no progress for 30 s fails ("timed out").
  virtual void write(std::string_view data) = 0;
  // write() of the parts one after the other, as one write: a socket hands
  // them to the kernel without copying them together first (a MULTIAPPEND
  // batch's messages); other layers (TLS, DEFLATE) join them.
  virtual void write_parts(std::span<const std::string_view> parts) {
    std::string joined;
    size_t n = 0;
    for (std::string_view p : parts) n += p.size();
    joined.reserve(n);
    for (std::string_view p : parts) joined += p;
    write(joined);
  }
  // True when read() would return without waiting on fd() (TLS records or
  // inflated bytes already buffered).
  virtual bool buffered() const { return false; }
  // The descriptor to poll for readability.
  virtual int fd() const = 0;
  // Sends what the peer needs to see the stream end cleanly (TLS
  // close_notify); best effort, never throws.
  virtual void shutdown() noexcept {}
  // After read() returned 0: why the stream ended, when the layer knows more
  // than "closed by the peer", e.g. "tunnel command `imapd` exited with
  // status 1", "tunnel command `imapd` killed by signal 9"; empty otherwise
  // (TCP, TLS).  A tunnel waits up to 0.5 s at end of stream for its command
  // to exit, so the status is usually known.
  virtual std::string end_reason() const { return {}; }
  // For the messages of the layers above: the connection's name
  // (opts.name) and the peer ("imap.example.net:993", "[::1]:143 via SOCKS5
  // proxy 127.0.0.1:1080", "tunnel command `CMD`"); empty for a stream
  // that does not know them.
  virtual std::string connection_name() const { return {}; }
  // The DEFLATE layer: the compressed bytes read from and written to the
  // layer below so far (received, sent); nullopt for other layers.
  virtual std::optional<std::pair<uint64_t, uint64_t>> compressed_counts() const { return std::nullopt; }
  virtual std::string peer() const { return {}; }
};

// Opens the transport for `opts`: a tunnel for type=tunnel, else a TCP
// connection (through opts.proxy when set), wrapped in TLS for type=imaps.
// `debug` > 0 keeps the tunnel command's stderr even with null-stderr.
// Throws NetworkError naming opts.name, the host/port or command, and the
// reason; ConfigError for a value that cannot work (a malformed proxy URI,
// "[not an IP]" as host, an empty tunnel command, the TLS values of
// start_tls).
//
// Tunnel: the command runs with a socket as its standard input and output,
// SIGINT blocked (so a ^C on the terminal reaches us, not it, and we can
// still log out) and SIGPIPE at its default.  Like Perl's exec (the
// reference), it runs under `/bin/sh -c` when it starts with ". " or
// "exec ", begins with an assignment "WORD=", or holds one of
// $ & * ( ) { } [ ] ' " ; \ | ? < > ~ ` or a newline (other than one
// trailing newline); otherwise it is split on blanks and run through the
// PATH, and through the shell only if the kernel cannot execute it.  The
// stream owns the child: destroying it closes the socket, then waits 1 s for
// the child to exit, sends SIGTERM, waits 2 s more, then SIGKILL, and always
// reaps it.
//
// TCP: every address of the host, in getaddrinfo order; TCP_NODELAY; with
// opts.keepalive, SO_KEEPALIVE and a 60 s TCP_KEEPIDLE as the reference.
// As the reference's 30 s socket timeouts: each connect, each read of the
// SOCKS5 negotiation and of the TLS handshake, and each write without
// progress give up after 30 s.  Reads after set-up block (poll first).
std::unique_ptr<Stream> open_stream(const ConnectionOptions& opts, int debug);

// Wraps a TCP stream in TLS (for STARTTLS and imaps): certificate chain and
// host name verification per opts.tls.verify, SPKI fingerprint pinning
// during the handshake, SNI, protocol bounds, ciphers.  Throws NetworkError
// for a failed handshake; ConfigError for a value OpenSSL rejects (unknown
// protocol name, cipher list, CA file or path, fingerprint syntax or
// digest).  As the reference: with SSL_verify=YES a matching fingerprint
// does not excuse a failed chain or host check; with SSL_verify=NO only
// the fingerprints (if any) are checked; SSL_protocols is ignored when
// SSL_protocol_min or SSL_protocol_max is set.
std::unique_ptr<Stream> start_tls(std::unique_ptr<Stream> inner, const ConnectionOptions& opts);

// Wraps a stream in COMPRESS=DEFLATE (RFC 4978): raw deflate both ways,
// each write() ending with Z_SYNC_FLUSH.  Corrupt input throws NetworkError.
std::unique_ptr<Stream> start_deflate(std::unique_ptr<Stream> inner);

}  // namespace interimap::detail
