// TLS over any Stream with OpenSSL 3: the SSL object talks to the inner
// stream through a small BIO, so TCP and SOCKS5 sockets are handled alike,
// writes never raise SIGPIPE (the socket layer uses MSG_NOSIGNAL), and the
// inner stream's own errors reach the caller unchanged.
#include "net/socket_stream.hpp"
#include "net/stream.hpp"
#include "net/tcp.hpp"

#include <interimap/error.hpp>

#include <fmt/format.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace interimap::detail {

namespace {

struct SslCtxDeleter {
  void operator()(SSL_CTX* ctx) const noexcept { SSL_CTX_free(ctx); }
};
struct SslDeleter {
  void operator()(SSL* ssl) const noexcept { SSL_free(ssl); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;
using SslPtr = std::unique_ptr<SSL, SslDeleter>;

// Drains OpenSSL's (thread-local) error queue into one reason string.
struct SslErrors {
  std::string reason;
  bool verify_failed = false;  // SSL_R_CERTIFICATE_VERIFY_FAILED among them
};
SslErrors take_ssl_errors() {
  SslErrors out;
  while (unsigned long e = ERR_get_error()) {
    if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) out.verify_failed = true;
    std::string text;
    if (ERR_SYSTEM_ERROR(e)) {
      text = std::strerror(ERR_GET_REASON(e));
    } else if (const char* r = ERR_reason_error_string(e)) {
      text = r;
    } else {
      char buf[256];
      ERR_error_string_n(e, buf, sizeof buf);
      text = buf;
    }
    if (out.reason.find(text) != std::string::npos) continue;
    if (!out.reason.empty()) out.reason += "; ";
    out.reason += text;
  }
  return out;
}

std::string to_hex(const std::vector<unsigned char>& bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out += digits[b >> 4];
    out += digits[b & 0xF];
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// One SSL_fingerprint entry: "[ALGO$]HEX", digest of the DER SubjectPublicKeyInfo.
struct Pin {
  std::string algorithm;
  const EVP_MD* md = nullptr;
  std::vector<unsigned char> digest;
};

std::vector<Pin> parse_pins(const ConnectionOptions& opts) {
  std::vector<Pin> pins;
  for (const auto& option : opts.tls.fingerprints) {
    // The option is a space-separated list; accept entries still joined.
    size_t pos = 0;
    while (pos < option.size()) {
      size_t end = option.find_first_of(" \t", pos);
      if (end == std::string::npos) end = option.size();
      std::string entry = option.substr(pos, end - pos);
      pos = end + 1;
      if (entry.empty()) continue;
      Pin pin;
      std::string hex = entry;
      if (size_t dollar = entry.find('$'); dollar != std::string::npos) {
        pin.algorithm = entry.substr(0, dollar);
        hex = entry.substr(dollar + 1);
      } else {
        pin.algorithm = "sha256";
      }
      std::erase(hex, ':');  // the reference tolerates "ab:cd:..."
      bool ok = !hex.empty() && hex.size() % 2 == 0;
      for (size_t i = 0; ok && i < hex.size(); i += 2) {
        int hi = hex_value(hex[i]), lo = hex_value(hex[i + 1]);
        if (hi < 0 || lo < 0)
          ok = false;
        else
          pin.digest.push_back(static_cast<unsigned char>(hi << 4 | lo));
      }
      if (!ok) throw ConfigError(opts.name, fmt::format("invalid SSL_fingerprint `{}` (expected [ALGO$]HEX)", entry));
      pin.md = EVP_get_digestbyname(pin.algorithm.c_str());
      if (pin.md == nullptr)
        throw ConfigError(opts.name, fmt::format("unknown digest algorithm `{}` in SSL_fingerprint", pin.algorithm));
      pins.push_back(std::move(pin));
    }
  }
  return pins;
}

// The digest of the certificate's DER-encoded SubjectPublicKeyInfo
// (RFC 5280 4.1.2.7), as `openssl x509 -pubkey | openssl pkey -pubin
// -outform DER | openssl dgst` computes it.
std::vector<unsigned char> spki_digest(X509* cert, const EVP_MD* md) {
  unsigned char* der = nullptr;
  int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
  if (len <= 0) return {};
  std::vector<unsigned char> out(EVP_MAX_MD_SIZE);
  unsigned int out_len = 0;
  int ok = EVP_Digest(der, static_cast<size_t>(len), out.data(), &out_len, md, nullptr);
  OPENSSL_free(der);
  if (ok != 1) return {};
  out.resize(out_len);
  return out;
}

// What the verify callback needs and what it found out.
struct VerifyState {
  bool verify = true;
  std::vector<Pin> pins;
  bool peer_seen = false;  // the depth-0 certificate went through the callback
  bool pin_mismatch = false;
  std::string peer_digest;  // "ALGO$HEX" of the peer's SPKI, with the first pin's algorithm
};

int verify_state_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// SSL_CTX_set_verify callback, with the reference's semantics
// (InterIMAP.pm _ssl_verify): with SSL_verify=NO every chain error is
// accepted; with YES OpenSSL's verdict stands.  At depth 0 (first visit
// only) the SPKI pins, if any, must match or the handshake aborts before
// any IMAP byte is exchanged.  A matching pin does not turn a failed chain
// or host check into a success.
int verify_callback(int preverify_ok, X509_STORE_CTX* store) noexcept {
  auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* state = ssl != nullptr ? static_cast<VerifyState*>(SSL_get_ex_data(ssl, verify_state_index())) : nullptr;
  if (state == nullptr) return 0;
  int ok = state->verify ? preverify_ok : 1;
  if (X509_STORE_CTX_get_error_depth(store) != 0 || state->peer_seen) return ok;
  state->peer_seen = true;
  if (state->pins.empty()) return ok;
  X509* cert = X509_STORE_CTX_get_current_cert(store);
  if (cert == nullptr) return 0;
  try {
    for (const auto& pin : state->pins)
      if (spki_digest(cert, pin.md) == pin.digest) return ok;
    state->pin_mismatch = true;
    state->peer_digest = state->pins.front().algorithm + "$" + to_hex(spki_digest(cert, state->pins.front().md));
  } catch (...) {
    state->pin_mismatch = true;
  }
  X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
  return 0;
}

// SSL_protocol_min / SSL_protocol_max names (OpenSSL's protocol_from_string).
int protocol_version(const std::string& value, std::string_view option, const std::string& name) {
  if (value == "SSLv3") return SSL3_VERSION;
  if (value == "TLSv1") return TLS1_VERSION;
  if (value == "TLSv1.1") return TLS1_1_VERSION;
  if (value == "TLSv1.2") return TLS1_2_VERSION;
  if (value == "TLSv1.3") return TLS1_3_VERSION;
  throw ConfigError(std::string(name),
                    fmt::format("unknown {} `{}` (expected SSLv3, TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3)", option, value));
}

// The deprecated SSL_protocols, as the reference reads it: "!P" disables P;
// naming any P without "!" disables every protocol not named; "TLSv1.0" is
// TLSv1.  SSLv2 is accepted and means nothing (OpenSSL 3 has no SSLv2).
uint64_t protocols_to_disable(const std::string& value, const std::string& name) {
  struct Known {
    std::string_view name;
    uint64_t option;
  };
  static constexpr Known known[] = {
      {"SSLv2", SSL_OP_NO_SSLv2},     {"SSLv3", SSL_OP_NO_SSLv3},     {"TLSv1", SSL_OP_NO_TLSv1},
      {"TLSv1.1", SSL_OP_NO_TLSv1_1}, {"TLSv1.2", SSL_OP_NO_TLSv1_2}, {"TLSv1.3", SSL_OP_NO_TLSv1_3},
  };
  uint64_t include = 0, exclude = 0, all = 0;
  for (const auto& k : known) all |= k.option;
  size_t pos = 0;
  while (pos < value.size()) {
    size_t end = value.find_first_of(" \t", pos);
    if (end == std::string::npos) end = value.size();
    std::string_view token = std::string_view(value).substr(pos, end - pos);
    pos = end + 1;
    if (token.empty()) continue;
    bool negated = token.starts_with('!');
    if (negated) token.remove_prefix(1);
    if (token.ends_with(".0")) token.remove_suffix(2);
    const Known* match = nullptr;
    for (const auto& k : known)
      if (k.name == token) match = &k;
    if (match == nullptr)
      throw ConfigError(std::string(name), fmt::format("unknown protocol `{}` in SSL_protocols `{}`", token, value));
    (negated ? exclude : include) |= match->option;
  }
  if (include != 0) exclude |= all & ~include;
  return exclude;
}

SslCtxPtr make_context(const ConnectionOptions& opts) {
  const TlsOptions& tls = opts.tls;
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) throw NetworkError(opts.name, fmt::format("SSL_CTX_new: {}", take_ssl_errors().reason));

  // IGNORE_UNEXPECTED_EOF: many IMAP servers close without close_notify
  // after LOGOUT; IMAP's tagged responses already expose a truncation.
  // NO_RENEGOTIATION: the peer was checked once, in the handshake.
  uint64_t options = SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION;
  if (!tls.protocol_min.empty() || !tls.protocol_max.empty()) {
    if (!tls.protocol_min.empty()) {
      int version = protocol_version(tls.protocol_min, "SSL_protocol_min", opts.name);
      if (SSL_CTX_set_min_proto_version(ctx.get(), version) != 1)
        throw ConfigError(opts.name,
                          fmt::format("SSL_protocol_min `{}`: {}", tls.protocol_min, take_ssl_errors().reason));
    }
    if (!tls.protocol_max.empty()) {
      int version = protocol_version(tls.protocol_max, "SSL_protocol_max", opts.name);
      if (SSL_CTX_set_max_proto_version(ctx.get(), version) != 1)
        throw ConfigError(opts.name,
                          fmt::format("SSL_protocol_max `{}`: {}", tls.protocol_max, take_ssl_errors().reason));
    }
  } else if (!tls.protocols.empty()) {
    // The reference ignores SSL_protocols when either bound is set.
    options |= protocols_to_disable(tls.protocols, opts.name);
  }
  SSL_CTX_set_options(ctx.get(), options);
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_AUTO_RETRY | SSL_MODE_RELEASE_BUFFERS);

  if (!tls.cipherlist.empty() && SSL_CTX_set_cipher_list(ctx.get(), tls.cipherlist.c_str()) != 1)
    throw ConfigError(opts.name,
                      fmt::format("invalid SSL_cipherlist `{}`: {}", tls.cipherlist, take_ssl_errors().reason));
  if (!tls.ciphersuites.empty() && SSL_CTX_set_ciphersuites(ctx.get(), tls.ciphersuites.c_str()) != 1)
    throw ConfigError(opts.name,
                      fmt::format("invalid SSL_ciphersuites `{}`: {}", tls.ciphersuites, take_ssl_errors().reason));

  SSL_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_SERVER);
  if (tls.verify) {
    if (!tls.ca_file.empty() || !tls.ca_path.empty()) {
      if (SSL_CTX_load_verify_locations(ctx.get(), tls.ca_file.empty() ? nullptr : tls.ca_file.c_str(),
                                        tls.ca_path.empty() ? nullptr : tls.ca_path.c_str()) != 1) {
        std::string what = !tls.ca_file.empty() && !tls.ca_path.empty()
                               ? fmt::format("SSL_CAfile `{}` or SSL_CApath `{}`", tls.ca_file, tls.ca_path)
                           : !tls.ca_file.empty() ? fmt::format("SSL_CAfile `{}`", tls.ca_file)
                                                  : fmt::format("SSL_CApath `{}`", tls.ca_path);
        throw ConfigError(opts.name, fmt::format("cannot load {}: {}", what, take_ssl_errors().reason));
      }
    } else if (SSL_CTX_set_default_verify_paths(ctx.get()) != 1) {
      throw NetworkError(opts.name,
                         fmt::format("cannot load the default trusted certificates: {}", take_ssl_errors().reason));
    }
  }
  // Always VERIFY_PEER, so the callback sees the certificate even with
  // SSL_verify=NO (to check the pins); the callback decides.
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, verify_callback);
  return ctx;
}

class TlsStream final : public Stream {
 public:
  TlsStream(std::unique_ptr<Stream> inner, std::string name, std::string where)
      : inner_(std::move(inner)), name_(std::move(name)), where_(std::move(where)) {}

  // Sets up the SSL object on ctx and runs the handshake; throws.
  void handshake(SSL_CTX* ctx, const ConnectionOptions& opts, const HostSpec& host, std::vector<Pin> pins);

  size_t read(std::span<char> buf) override;
  void write(std::string_view data) override;
  bool buffered() const override { return SSL_pending(ssl_.get()) > 0 || inner_->buffered(); }
  int fd() const override { return inner_->fd(); }
  void shutdown() noexcept override;
  std::string end_reason() const override { return inner_->end_reason(); }
  std::string connection_name() const override { return name_; }
  std::string peer() const override { return inner_->peer(); }

 private:
  static BIO_METHOD* bio_method();
  static int bio_read(BIO* bio, char* buf, size_t len, size_t* done) noexcept;
  static int bio_write(BIO* bio, const char* buf, size_t len, size_t* done) noexcept;
  static long bio_ctrl(BIO* bio, int cmd, long num, void* ptr) noexcept;

  // After a failed SSL call: the inner stream's exception, if it threw.
  void rethrow_inner_error();
  [[noreturn]] void fail(int ret, std::string_view doing);

  std::unique_ptr<Stream> inner_;  // outlives ssl_, whose BIO points to it
  std::string name_;
  std::string where_;
  VerifyState verify_;
  SslPtr ssl_;
  std::exception_ptr inner_error_;
  bool inner_eof_ = false;
  bool handshaking_ = false;
  bool shut_down_ = false;
};

BIO_METHOD* TlsStream::bio_method() {
  // One method table for the process, never freed.
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "interimap stream");
    if (m != nullptr) {
      BIO_meth_set_read_ex(m, bio_read);
      BIO_meth_set_write_ex(m, bio_write);
      BIO_meth_set_ctrl(m, bio_ctrl);
      BIO_meth_set_create(m, [](BIO* bio) noexcept {
        BIO_set_init(bio, 1);
        return 1;
      });
    }
    return m;
  }();
  return method;
}

int TlsStream::bio_read(BIO* bio, char* buf, size_t len, size_t* done) noexcept {
  auto* self = static_cast<TlsStream*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  *done = 0;
  if (self->inner_eof_ || len == 0) return 0;
  try {
    // The handshake must not wait forever on a server that says nothing
    // (e.g. a plain-text port): each read is bounded, as the reference's
    // SO_RCVTIMEO did.
    if (self->handshaking_ && !wait_readable(*self->inner_, kSetupTimeout))
      throw NetworkError(self->name_, fmt::format("TLS handshake with {} timed out (no data for {} s)", self->where_,
                                                  kSetupTimeout.count()));
    *done = self->inner_->read(std::span<char>(buf, len));
  } catch (...) {
    self->inner_error_ = std::current_exception();
    return 0;
  }
  if (*done == 0) self->inner_eof_ = true;  // BIO_CTRL_EOF tells OpenSSL it is EOF
  return *done > 0 ? 1 : 0;
}

int TlsStream::bio_write(BIO* bio, const char* buf, size_t len, size_t* done) noexcept {
  auto* self = static_cast<TlsStream*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  *done = 0;
  try {
    self->inner_->write(std::string_view(buf, len));
  } catch (...) {
    self->inner_error_ = std::current_exception();
    return 0;
  }
  *done = len;
  return 1;
}

long TlsStream::bio_ctrl(BIO* bio, int cmd, long, void*) noexcept {
  auto* self = static_cast<TlsStream*>(BIO_get_data(bio));
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;  // inner writes are unbuffered
    case BIO_CTRL_EOF:
      return self->inner_eof_ ? 1 : 0;
    default:
      return 0;
  }
}

void TlsStream::rethrow_inner_error() {
  if (inner_error_) std::rethrow_exception(std::exchange(inner_error_, nullptr));
}

void TlsStream::fail(int ret, std::string_view doing) {
  int code = SSL_get_error(ssl_.get(), ret);
  int saved_errno = errno;
  rethrow_inner_error();
  std::string reason = take_ssl_errors().reason;
  if (reason.empty())
    reason =
        code == SSL_ERROR_SYSCALL && saved_errno != 0 ? std::strerror(saved_errno) : "connection closed by the server";
  throw NetworkError(name_, fmt::format("TLS error {} {}: {}", doing, where_, reason));
}

void TlsStream::handshake(SSL_CTX* ctx, const ConnectionOptions& opts, const HostSpec& host, std::vector<Pin> pins) {
  verify_.verify = opts.tls.verify;
  verify_.pins = std::move(pins);
  ssl_.reset(SSL_new(ctx));
  BIO_METHOD* method = bio_method();
  BIO* bio = method != nullptr ? BIO_new(method) : nullptr;
  if (!ssl_ || bio == nullptr) {
    BIO_free(bio);
    throw NetworkError(name_, fmt::format("cannot set up TLS: {}", take_ssl_errors().reason));
  }
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_.get(), bio, bio);  // ssl_ owns the BIO now
  SSL_set_ex_data(ssl_.get(), verify_state_index(), &verify_);

  if (opts.tls.verify) {
    // RFC 6125 6: the reference identity is the host option, an IP literal
    // being matched against iPAddress subjectAltNames.
    int ok = host.is_literal() ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_.get()), host.address.c_str())
                               : SSL_set1_host(ssl_.get(), host.address.c_str());
    if (ok != 1)
      throw NetworkError(
          name_, fmt::format("cannot set the TLS reference identity `{}`: {}", host.address, take_ssl_errors().reason));
  }
  // RFC 6066 3: SNI carries a host name, never an IP literal.  SSL_hostname
  // overrides it, and its empty value disables SNI.
  std::string sni = opts.tls.hostname ? *opts.tls.hostname : host.is_literal() ? std::string() : host.address;
  if (!sni.empty() && SSL_set_tlsext_host_name(ssl_.get(), sni.c_str()) != 1)
    throw ConfigError(name_, fmt::format("invalid SSL_hostname `{}`: {}", sni, take_ssl_errors().reason));

  ERR_clear_error();
  handshaking_ = true;
  int ret = SSL_connect(ssl_.get());
  handshaking_ = false;
  if (ret != 1) {
    int code = SSL_get_error(ssl_.get(), ret);
    int saved_errno = errno;
    rethrow_inner_error();
    SslErrors errors = take_ssl_errors();
    if (verify_.pin_mismatch)
      throw NetworkError(name_,
                         fmt::format("SPKI fingerprint of {} does not match (got {})", where_, verify_.peer_digest));
    std::string reason = errors.reason;
    if (reason.empty())
      reason = code == SSL_ERROR_SYSCALL && saved_errno != 0 ? std::strerror(saved_errno)
                                                             : "connection closed by the server";
    long result = SSL_get_verify_result(ssl_.get());
    if (errors.verify_failed && result != X509_V_OK)
      reason += fmt::format(" ({})", X509_verify_cert_error_string(result));
    throw NetworkError(name_, fmt::format("TLS handshake with {} failed: {}", where_, reason));
  }
  // Sanity checks, as the reference's: a certificate was seen and, when
  // verifying, verified.
  if (!verify_.pins.empty() && !verify_.peer_seen)
    throw NetworkError(name_, fmt::format("SPKI fingerprint of {} cannot be checked: no server certificate", where_));
  if (opts.tls.verify) {
    long result = SSL_get_verify_result(ssl_.get());
    if (SSL_get0_peer_certificate(ssl_.get()) == nullptr)
      throw NetworkError(name_, fmt::format("TLS handshake with {} failed: no server certificate", where_));
    if (result != X509_V_OK)
      throw NetworkError(name_, fmt::format("TLS handshake with {} failed: certificate verify failed ({})", where_,
                                            X509_verify_cert_error_string(result)));
  }
}

size_t TlsStream::read(std::span<char> buf) {
  while (true) {
    ERR_clear_error();
    size_t n = 0;
    int ret = SSL_read_ex(ssl_.get(), buf.data(), buf.size(), &n);
    if (ret == 1) return n;
    switch (SSL_get_error(ssl_.get(), ret)) {
      case SSL_ERROR_ZERO_RETURN:
        return 0;  // close_notify, or EOF (SSL_OP_IGNORE_UNEXPECTED_EOF)
      case SSL_ERROR_WANT_READ:
      case SSL_ERROR_WANT_WRITE:
        // Only after a record without application data; the BIO blocks, so retry.
        if (!inner_error_) continue;
        break;
      default:
        break;
    }
    fail(ret, "reading from");
  }
}

void TlsStream::write(std::string_view data) {
  while (!data.empty()) {
    ERR_clear_error();
    size_t n = 0;
    int ret = SSL_write_ex(ssl_.get(), data.data(), data.size(), &n);
    if (ret == 1) {
      data.remove_prefix(n);
      continue;
    }
    int code = SSL_get_error(ssl_.get(), ret);
    if ((code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE) && !inner_error_) continue;
    fail(ret, "writing to");
  }
}

void TlsStream::shutdown() noexcept {
  if (!shut_down_ && ssl_ && SSL_is_init_finished(ssl_.get())) {
    shut_down_ = true;
    // RFC 8446 6.1: send close_notify; not waiting for the server's.
    ERR_clear_error();
    SSL_shutdown(ssl_.get());
    ERR_clear_error();
    inner_error_ = nullptr;
  }
  inner_->shutdown();
}

}  // namespace

std::unique_ptr<Stream> start_tls(std::unique_ptr<Stream> inner, const ConnectionOptions& opts) {
  HostSpec host = parse_host(opts.host, opts.name);
  std::vector<Pin> pins = parse_pins(opts);
  SslCtxPtr ctx = make_context(opts);
  auto stream = std::make_unique<TlsStream>(std::move(inner), opts.name,
                                            format_endpoint(host.address, std::to_string(opts.effective_port())));
  stream->handshake(ctx.get(), opts, host, std::move(pins));
  return stream;
}

}  // namespace interimap::detail
