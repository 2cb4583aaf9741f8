#include "smtp/smtp_client.hpp"

#include "net/socket_stream.hpp"
#include "net/tcp.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <stdexcept>

namespace interimap::detail::smtp {

namespace {

using std::chrono::seconds;

// RFC 5321 4.5.3.2: how long a client waits for each reply.
constexpr seconds kGreetingTimeout{300};     // 4.5.3.2.1 initial 220 message: 5 minutes
constexpr seconds kMailTimeout{300};         // 4.5.3.2.2 MAIL: 5 minutes
constexpr seconds kRcptTimeout{300};         // 4.5.3.2.3 RCPT: 5 minutes
constexpr seconds kDataTimeout{120};         // 4.5.3.2.4 DATA initiation: 2 minutes
constexpr int kDataBlockTimeoutSeconds = 180;  // 4.5.3.2.5 data block: 3 minutes (a send without progress)
constexpr seconds kDataEndTimeout{600};      // 4.5.3.2.6 DATA termination: 10 minutes
constexpr seconds kCommandTimeout{300};      // EHLO, RSET, QUIT: not given; as MAIL
// After a failed send, how long to look for the reply that explains it.
constexpr seconds kLastWordsTimeout{2};

// Message data goes out in writes of about this size: the message is
// copied once, slice by slice, into a buffer of this order (at most twice
// as large after dot-stuffing and CRLF normalization).
constexpr size_t kDataChunk = 64 * 1024;
// RFC 5321 4.5.3.1.5 bounds a reply line to 512 octets; we accept far
// longer ones but not an endless line.
constexpr size_t kMaxReplyLine = 64 * 1024;
// And a whole reply, however many lines it has (an EHLO reply is about a
// dozen short lines): a server sending "250-" lines for ever is stopped.
constexpr size_t kMaxReply = 1024 * 1024;

bool is_atext(unsigned char c) {
  // RFC 5321 4.1.2 atext (RFC 5322 3.2.3): ALPHA / DIGIT / "!#$%&'*+-/=?^_`{|}~".
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-/=?^_`{|}~").find(static_cast<char>(c)) != std::string_view::npos;
}

bool is_dot_string(std::string_view s) {
  // Dot-string = Atom *("." Atom)
  if (s.empty() || s.front() == '.' || s.back() == '.') return false;
  for (size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '.') {
      if (s[i + 1] == '.') return false;
    } else if (!is_atext(c)) {
      return false;
    }
  }
  return true;
}

bool is_printable_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c <= 0x7e; });
}

// A domain that cannot break "MAIL FROM:<...>": see envelope_mailbox().
bool is_safe_domain(std::string_view d) {
  if (d.empty()) return false;
  if (d.front() == '[') {
    // RFC 5321 4.1.3 address-literal: "[" 1*dcontent "]", dcontent = %d33-90 / %d94-126.
    if (d.size() < 3 || d.back() != ']') return false;
    return std::all_of(d.begin() + 1, d.end() - 1, [](char ch) {
      auto c = static_cast<unsigned char>(ch);
      return (c >= 33 && c <= 90) || (c >= 94 && c <= 126);
    });
  }
  return std::all_of(d.begin(), d.end(), [](char ch) {
    auto c = static_cast<unsigned char>(ch);
    if (c >= 0x80) return true;  // U-labels (RFC 6531 3.3)
    if (c <= 0x20 || c == 0x7f) return false;
    return std::string_view("<>()[]\\\",;:@").find(ch) == std::string_view::npos;
  });
}

// A path argument must not escape its angle brackets nor the command line.
void check_path(std::string_view path, std::string_view what) {
  if (path.find_first_of("\r\n<>") != std::string_view::npos || path.find('\0') != std::string_view::npos)
    throw std::invalid_argument(fmt::format("{} `{}` holds CR, LF, NUL, '<' or '>'", what, path));
}

}  // namespace

// ---------------------------------------------------------------------------
// deliver-method and addresses

Endpoint parse_deliver_method(std::string_view value) {
  auto fail = [&](std::string_view reason) -> Endpoint {
    throw ConfigError(fmt::format("Invalid deliver-method `{}`: {} (expected smtp:[ADDRESS]:PORT or lmtp:[ADDRESS]:PORT)",
                                  value, reason));
  };
  Endpoint ep;
  std::string_view rest = value;
  // The reference's /\A([ls]mtp:\[.*\]:\d+)\z/: the protocol in lower case.
  if (rest.starts_with("smtp:")) {
    ep.protocol = Protocol::Smtp;
  } else if (rest.starts_with("lmtp:")) {
    ep.protocol = Protocol::Lmtp;
  } else {
    return fail("unknown protocol");
  }
  rest.remove_prefix(5);
  size_t colon = rest.rfind(':');
  if (colon == std::string_view::npos) return fail("no port");
  std::string_view host = rest.substr(0, colon), port = rest.substr(colon + 1);
  if (host.size() < 2 || host.front() != '[' || host.back() != ']') return fail("the address must be in brackets");
  if (port.empty() || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return fail("the port must be a decimal number");
  unsigned long p = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc() || end != port.data() + port.size() || p == 0 || p > 65535)
    return fail("the port must be between 1 and 65535");
  ep.port = static_cast<uint16_t>(p);
  ep.address = std::string(host.substr(1, host.size() - 2));
  // As the reference: an IP literal (inet_pton), IPv6 when it holds a ':';
  // no name resolution.
  try {
    if (!parse_host(host, "deliver-method").is_literal()) return fail("not an IP address");
  } catch (const ConfigError&) {
    return fail("not an IP address");
  }
  return ep;
}

std::string to_string(const Endpoint& endpoint) {
  return fmt::format("{}:[{}]:{}", endpoint.protocol == Protocol::Lmtp ? "lmtp" : "smtp", endpoint.address,
                     endpoint.port);
}

std::string envelope_mailbox(const std::optional<std::string>& local, const std::optional<std::string>& domain) {
  if (!local || !domain || !is_safe_domain(*domain)) return {};
  if (is_dot_string(*local)) return fmt::format("{}@{}", *local, *domain);
  if (!is_printable_ascii(*local)) return {};
  // RFC 5321 4.1.2 Quoted-string: quoted-pairSMTP = %d92 %d32-126, used
  // for '"' and '\' (the reference escapes those two only).
  std::string quoted = "\"";
  for (char c : *local) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return fmt::format("{}\"@{}", quoted, *domain);
}

std::string Reply::to_string() const {
  bool no_text = std::all_of(lines.begin(), lines.end(), [](const std::string& l) { return l.empty(); });
  if (no_text) return fmt::format("{}", code);
  return fmt::format("{} {}", code, fmt::join(lines, " / "));
}

bool has_8bit(std::string_view data) noexcept {
  return std::any_of(data.begin(), data.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

// ---------------------------------------------------------------------------
// DataEncoder

void DataEncoder::encode(std::string_view chunk, std::string& out) {
  if (!chunk.empty()) empty_ = false;
  size_t i = 0;
  const size_t n = chunk.size();
  while (i < n) {
    if (pending_cr_) {
      // A CR ended the previous chunk or run: CRLF, or a bare CR that we
      // send as a line ending too (RFC 5321 2.3.8: no bare CR or LF on the
      // wire; left bare, "CR . CRLF" is read as the end of data by some
      // servers and not by others, the "SMTP smuggling" ambiguity).
      pending_cr_ = false;
      out += "\r\n";
      at_line_start_ = true;
      if (chunk[i] == '\n') {
        ++i;
        continue;
      }
    }
    // RFC 5321 4.5.2: a line starting with "." gets one more.
    if (dot_stuffing_ && at_line_start_ && chunk[i] == '.') out += '.';
    size_t j = chunk.find_first_of("\r\n", i);
    if (j == std::string_view::npos) j = n;
    if (j > i) {
      out.append(chunk.data() + i, j - i);
      at_line_start_ = false;
    }
    if (j == n) break;
    if (chunk[j] == '\n') {
      out += "\r\n";  // a bare LF
      at_line_start_ = true;
    } else {
      pending_cr_ = true;  // CRLF or bare CR: known with the next byte
    }
    i = j + 1;
  }
}

void DataEncoder::finish(std::string& out) {
  if (pending_cr_) {
    out += "\r\n";
    at_line_start_ = true;
    pending_cr_ = false;
  }
  // RFC 5321 4.1.1.4: the end of data is CRLF "." CRLF, whose first CRLF
  // ends the last line; a message not ending with one gets it added.  An
  // empty message goes as one empty line, as the reference sends it: the
  // bare "." CRLF right after the 354 is valid too, but some servers
  // (Python's smtpd) only look for CRLF "." CRLF.
  if (!at_line_start_ || empty_) out += "\r\n";
  if (dot_stuffing_) out += ".\r\n";
  at_line_start_ = true;
  empty_ = true;
}

// ---------------------------------------------------------------------------
// Client

Client::Client(ClientOptions options) : options_(std::move(options)) {
  if (options_.helo_name.empty() || options_.helo_name.find_first_of("\r\n") != std::string::npos)
    throw std::invalid_argument(fmt::format("deliver-ehlo `{}` is empty or holds CR or LF", options_.helo_name));
  if (options_.name.empty()) options_.name = options_.endpoint.protocol == Protocol::Lmtp ? "lmtp" : "smtp";
  peer_ = format_endpoint(options_.endpoint.address, std::to_string(options_.endpoint.port));
}

Client::~Client() { close(); }

std::string_view Client::protocol_name() const {
  return options_.endpoint.protocol == Protocol::Lmtp ? "LMTP" : "SMTP";
}

std::string Client::where() const { return fmt::format("{} server {}", protocol_name(), peer_); }

void Client::close() noexcept {
  stream_.reset();
  extensions_.clear();
  inbuf_.clear();
  inpos_ = 0;
  state_ = State::Idle;
  outbuf_.clear();
  accepted_.clear();
}

void Client::fail_protocol(std::string_view message) {
  close();
  throw ProtocolError(options_.name, fmt::format("{}: {}", where(), message));
}

void Client::fail_delivery(std::string stage, Reply reply, std::string_view note) {
  std::string message = fmt::format("{}: {} refused: {}{}", where(), stage, reply.to_string(), note);
  throw DeliveryError(options_.name, message, std::move(stage), std::move(reply));
}

void Client::connect() {
  const std::string& name = options_.name;
  HostSpec host = parse_host("[" + options_.endpoint.address + "]", name);
  const std::string what = fmt::format("{} server ", protocol_name());
  // NetworkError "NAME: cannot connect to SMTP server 127.0.0.1:25: REASON".
  UniqueFd fd = tcp_connect(host, std::to_string(options_.endpoint.port), name, what, false);
  // tcp_connect bounds a send without progress by 30 s; a message may meet
  // a slower server: RFC 5321 4.5.3.2.5 gives a data block 3 minutes.
  timeval tv = {kDataBlockTimeoutSeconds, 0};
  if (setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
    throw NetworkError(options_.name, fmt::format("{}: setsockopt SO_SNDTIMEO: {}", where(), std::strerror(errno)));
  stream_ = std::make_unique<SocketStream>(std::move(fd), name, what + peer_);
  try {
    greet();
  } catch (...) {
    close();
    throw;
  }
}

void Client::greet() {
  Reply greeting = read_reply(kGreetingTimeout, "the greeting");
  if (greeting.code != 220) {
    // RFC 5321 3.1: a 554 greeting means "no service here"; anything else
    // but 220 is as final for us.
    close();
    throw NetworkError(options_.name, fmt::format("{}: refused the session: {}", where(), greeting.to_string()));
  }
  const bool lmtp = options_.endpoint.protocol == Protocol::Lmtp;
  // RFC 2033 4.1: LMTP has LHLO and no HELO; RFC 5321 4.1.1.1 for EHLO.
  const std::string hello = fmt::format("{} {}", lmtp ? "LHLO" : "EHLO", options_.helo_name);
  send_line(hello);
  Reply reply = read_reply(kCommandTimeout, lmtp ? "the LHLO reply" : "the EHLO reply");
  if (reply.code == 250) {
    // RFC 5321 4.1.1.1: the first line names the server, each further line
    // starts with an extension keyword, case-insensitive.
    for (size_t i = 1; i < reply.lines.size(); ++i) {
      std::string keyword = reply.lines[i].substr(0, reply.lines[i].find(' '));
      std::transform(keyword.begin(), keyword.end(), keyword.begin(),
                     [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
      if (!keyword.empty()) extensions_.insert(std::move(keyword));
    }
    return;
  }
  if (!lmtp && (reply.code == 500 || reply.code == 502 || reply.code == 504 || reply.code == 550)) {
    // RFC 5321 3.2 / 4.1.4: a server that does not know EHLO gets HELO,
    // and we use no extension.
    send_line(fmt::format("HELO {}", options_.helo_name));
    Reply helo = read_reply(kCommandTimeout, "the HELO reply");
    if (helo.code == 250) return;
    close();
    throw NetworkError(options_.name, fmt::format("{}: {} refused: {}; HELO refused: {}", where(), hello,
                                                  reply.to_string(), helo.to_string()));
  }
  close();
  throw NetworkError(options_.name, fmt::format("{}: {} refused: {}", where(), hello, reply.to_string()));
}

bool Client::session_went_away() {
  // Between transactions the server speaks only to end the session: a 421
  // (RFC 5321 3.8, e.g. after its 4.5.3.2.7 idle timeout) or a plain close.
  // Either way a fresh session is needed, and no message was in flight.
  pollfd pfd = {stream_->fd(), POLLIN, 0};
  int r;
  do {
    r = ::poll(&pfd, 1, 0);
  } while (r < 0 && errno == EINTR);
  if (r == 0 && !stream_->buffered() && inpos_ == inbuf_.size()) return false;
  if (options_.trace) options_.trace("(the server spoke while idle: opening a new session)");
  try {
    (void)read_line(kLastWordsTimeout, "its last words");
  } catch (const Error&) {
  }
  close();
  return true;
}

void Client::send_raw(std::string_view data) {
  // SocketStream::write sends with MSG_NOSIGNAL: a closed peer is EPIPE.
  stream_->write(data);
}

void Client::send_line(std::string_view line) {
  if (options_.trace) options_.trace(fmt::format("C: {}", line));
  std::string buf;
  buf.reserve(line.size() + 2);
  buf.append(line).append("\r\n");
  send_raw(buf);
}

std::optional<std::string> Client::read_line(seconds timeout, std::string_view waiting_for) {
  while (true) {
    size_t nl = inbuf_.find('\n', inpos_);
    if (nl != std::string::npos) {
      std::string line = inbuf_.substr(inpos_, nl - inpos_);
      inpos_ = nl + 1;
      // RFC 5321 2.3.8: replies end with CRLF; a bare LF is tolerated.
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return line;
    }
    if (inbuf_.size() - inpos_ > kMaxReplyLine)
      fail_protocol(fmt::format("reply line longer than {} bytes while waiting for {}", kMaxReplyLine, waiting_for));
    if (inpos_ > 0) {
      inbuf_.erase(0, inpos_);
      inpos_ = 0;
    }
    if (!wait_readable(*stream_, timeout)) {
      close();
      throw NetworkError(options_.name,
                         fmt::format("{}: timed out after {} s waiting for {}", where(), timeout.count(), waiting_for));
    }
    char buf[4096];
    size_t n = stream_->read(buf);
    if (n == 0) return std::nullopt;
    inbuf_.append(buf, n);
  }
}

Reply Client::read_reply(seconds timeout, std::string_view waiting_for) {
  Reply reply;
  size_t reply_bytes = 0;
  while (true) {
    std::optional<std::string> line = read_line(timeout, waiting_for);
    if (!line) {
      close();
      throw NetworkError(options_.name,
                         fmt::format("{}: connection closed by the server while waiting for {}", where(), waiting_for));
    }
    if (options_.trace) options_.trace(fmt::format("S: {}", *line));
    // RFC 5321 4.2: Reply-line = *( Reply-code "-" [ textstring ] CRLF )
    //                            Reply-code [ SP textstring ] CRLF,
    // Reply-code = %x32-35 %x30-35 %x30-39, the same on every line.
    const std::string& l = *line;
    bool code_ok = l.size() >= 3 && l[0] >= '2' && l[0] <= '5' && l[1] >= '0' && l[1] <= '5' && l[2] >= '0' &&
                   l[2] <= '9' && (l.size() == 3 || l[3] == ' ' || l[3] == '-');
    if (!code_ok) fail_protocol(fmt::format("malformed reply line `{}` while waiting for {}", l, waiting_for));
    int code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
    if (reply.code != 0 && code != reply.code)
      fail_protocol(fmt::format("reply code changed from {} to {} within a multiline reply (`{}`)", reply.code, code, l));
    reply.code = code;
    reply_bytes += l.size() + 2;
    if (reply_bytes > kMaxReply)
      fail_protocol(fmt::format("reply longer than {} bytes ({} lines) while waiting for {}", kMaxReply,
                                reply.lines.size() + 1, waiting_for));
    reply.lines.push_back(l.size() > 4 ? l.substr(4) : std::string());
    if (l.size() == 3 || l[3] == ' ') return reply;
  }
}

void Client::reset_transaction(std::string_view after) {
  // RFC 5321 4.1.1.5: RSET aborts the transaction so the session can carry
  // the next message.  A server refusing RSET cannot go on: start afresh.
  send_line("RSET");
  Reply reply = read_reply(kCommandTimeout, fmt::format("the RSET reply (after {})", after));
  if (!reply.positive()) {
    close();
    if (options_.trace) options_.trace(fmt::format("(RSET refused: {}; closing the session)", reply.to_string()));
  }
}

void Client::begin(std::string_view reverse_path, std::span<const std::string> recipients, bool eight_bit) {
  if (state_ != State::Idle) throw std::logic_error("smtp::Client::begin: a transaction is already open");
  if (recipients.empty()) throw std::invalid_argument("smtp::Client::begin: no recipient");
  check_path(reverse_path, "reverse-path");
  for (const std::string& r : recipients) {
    check_path(r, "recipient");
    if (r.empty()) throw std::invalid_argument("smtp::Client::begin: empty recipient");
  }

  try {
    // A session the server ended while idle (RFC 5321 4.5.3.2.7: servers
    // time idle clients out) is closed here and replaced below.
    if (stream_) session_went_away();
    if (!stream_) connect();

    // The envelope (RFC 5321 3.3).  BODY=8BITMIME (RFC 6152 3) declares
    // 8-bit content to a server that offers it; to one that does not we
    // send it as is, as the reference does (we cannot convert a signed
    // message).  SMTPUTF8 (RFC 6531 3.4) when an address is not ASCII.
    std::string mail = fmt::format("MAIL FROM:<{}>", reverse_path);
    if (eight_bit && has_extension("8BITMIME")) mail += " BODY=8BITMIME";
    bool utf8 = has_8bit(reverse_path) ||
                std::any_of(recipients.begin(), recipients.end(), [](const std::string& r) { return has_8bit(r); });
    if (utf8 && has_extension("SMTPUTF8")) mail += " SMTPUTF8";
    std::vector<std::string> commands;
    commands.reserve(recipients.size() + 2);
    commands.push_back(std::move(mail));
    for (const std::string& r : recipients) commands.push_back(fmt::format("RCPT TO:<{}>", r));
    commands.emplace_back("DATA");

    // RFC 2920 3.1: with PIPELINING, MAIL, the RCPTs and DATA (the last
    // command of a group, as it changes state) go in one write, and the
    // replies are read afterwards, in order.  Without it, one at a time,
    // stopping at the first refusal.
    const bool pipelining = has_extension("PIPELINING");
    if (pipelining) {
      std::string batch;
      for (const std::string& c : commands) {
        if (options_.trace) options_.trace(fmt::format("C: {}", c));
        batch.append(c).append("\r\n");
      }
      send_raw(batch);
    }
    std::optional<std::pair<std::string, Reply>> refused;
    bool data_accepted = false;
    for (size_t i = 0; i < commands.size(); ++i) {
      const bool is_mail = i == 0, is_data = i + 1 == commands.size();
      if (!pipelining) {
        if (refused) break;
        send_line(commands[i]);
      }
      Reply reply = read_reply(is_mail ? kMailTimeout : is_data ? kDataTimeout : kRcptTimeout,
                               fmt::format("the reply to {}", commands[i]));
      // RFC 5321 4.3.2: MAIL and RCPT succeed with 2xx (250, 251, 252),
      // DATA with 354.
      bool ok = is_data ? reply.code == 354 : reply.positive();
      if (is_data) data_accepted = reply.code == 354;
      if (!ok && !refused) refused.emplace(commands[i], std::move(reply));
    }
    if (refused) {
      if (data_accepted) {
        // A pipelined DATA got its 354 although the envelope was refused in
        // part: RSET is not possible in the DATA phase, and sending the
        // message would deliver it to part of the recipients.  Closing the
        // connection aborts the transaction (RFC 5321 3.8).
        if (options_.trace) options_.trace("(closing the connection to abort the transaction)");
        close();
      } else {
        reset_transaction(refused->first);
      }
      fail_delivery(std::move(refused->first), std::move(refused->second));
    }
    if (options_.trace) options_.trace("C: [...]");
    accepted_.assign(recipients.begin(), recipients.end());
    encoder_ = DataEncoder{};
    outbuf_.clear();
    state_ = State::Data;
  } catch (const DeliveryError&) {
    throw;
  } catch (...) {
    close();
    throw;
  }
}

void Client::flush_data() {
  if (outbuf_.empty()) return;
  try {
    send_raw(outbuf_);
  } catch (const NetworkError&) {
    // A server may refuse in the middle of the data (say 552 when the
    // message grows too large) and close: its reply says more than EPIPE.
    std::optional<Reply> last;
    try {
      if (stream_ && wait_readable(*stream_, kLastWordsTimeout)) last = read_reply(kLastWordsTimeout, "its reply");
    } catch (const Error&) {
    }
    close();
    if (last && !last->positive()) fail_delivery("message data", std::move(*last));
    throw;
  }
  outbuf_.clear();
}

void Client::write(std::string_view chunk) {
  if (state_ != State::Data) throw std::logic_error("smtp::Client::write: no transaction in the DATA phase");
  try {
    while (!chunk.empty()) {
      std::string_view slice = chunk.substr(0, kDataChunk);
      chunk.remove_prefix(slice.size());
      encoder_.encode(slice, outbuf_);
      if (outbuf_.size() >= kDataChunk) flush_data();
    }
  } catch (const DeliveryError&) {
    throw;
  } catch (...) {
    close();
    throw;
  }
}

void Client::end() {
  if (state_ != State::Data) throw std::logic_error("smtp::Client::end: no transaction in the DATA phase");
  try {
    encoder_.finish(outbuf_);
    flush_data();
    state_ = State::Idle;
    std::vector<std::string> recipients = std::move(accepted_);
    accepted_.clear();
    if (options_.endpoint.protocol == Protocol::Smtp) {
      // RFC 5321 4.1.1.4: the reply ends the transaction, refused or not,
      // so no RSET is needed.
      Reply reply = read_reply(kDataEndTimeout, "the reply to the end of data");
      if (!reply.positive()) fail_delivery("end of data", std::move(reply));
    } else {
      // RFC 2033 4.2: one reply per recipient whose RCPT succeeded, in the
      // order of the RCPTs.  Read them all before reporting, so that the
      // session stays in step.
      std::optional<std::pair<std::string, Reply>> refused;
      size_t accepted = 0;
      for (const std::string& r : recipients) {
        Reply reply = read_reply(kDataEndTimeout, fmt::format("the reply to the end of data for <{}>", r));
        if (reply.positive()) {
          ++accepted;
        } else if (!refused) {
          refused.emplace(fmt::format("end of data for <{}>", r), std::move(reply));
        }
      }
      if (refused) {
        std::string note = accepted > 0 ? fmt::format(" (delivered to {} other recipient(s))", accepted) : "";
        fail_delivery(std::move(refused->first), std::move(refused->second), note);
      }
    }
    ++delivered_;
  } catch (const DeliveryError&) {
    throw;
  } catch (...) {
    close();
    throw;
  }
}

void Client::deliver(std::string_view reverse_path, std::span<const std::string> recipients, std::string_view message) {
  if (state_ != State::Idle) throw std::logic_error("smtp::Client::deliver: a transaction is already open");
  if (recipients.size() == 1) {
    // The extensions are those of the session the message will go to.
    try {
      if (stream_) session_went_away();
      if (!stream_) connect();
    } catch (...) {
      close();
      throw;
    }
    if (has_extension("CHUNKING") && has_extension("PIPELINING")) {
      deliver_chunked(reverse_path, recipients.front(), message);
      return;
    }
  }
  begin(reverse_path, recipients, has_8bit(message));
  write(message);
  end();
}

void Client::deliver_chunked(std::string_view reverse_path, const std::string& recipient, std::string_view message) {
  check_path(reverse_path, "reverse-path");
  check_path(recipient, "recipient");
  if (recipient.empty()) throw std::invalid_argument("smtp::Client::deliver: empty recipient");
  // The same bytes as through DATA (CRLF line ends, the last line ended),
  // without the dot-stuffing: BDAT counts octets (RFC 3030 2).
  std::string data;
  data.reserve(message.size() + message.size() / 32 + 2);
  DataEncoder encoder(false);
  encoder.encode(message, data);
  encoder.finish(data);

  std::string mail = fmt::format("MAIL FROM:<{}>", reverse_path);
  if (has_8bit(message) && has_extension("8BITMIME")) mail += " BODY=8BITMIME";
  if ((has_8bit(reverse_path) || has_8bit(recipient)) && has_extension("SMTPUTF8")) mail += " SMTPUTF8";
  const std::string commands[] = {std::move(mail), fmt::format("RCPT TO:<{}>", recipient),
                                  fmt::format("BDAT {} LAST", data.size())};
  std::string batch;
  for (const std::string& c : commands) {
    if (options_.trace) options_.trace(fmt::format("C: {}", c));
    batch.append(c).append("\r\n");
  }
  if (options_.trace) options_.trace("C: [...]");
  try {
    // RFC 2920 3.1 and RFC 3030 4.2: BDAT may follow the envelope in the
    // same group, its data right after it.  Small messages go in one write.
    if (data.size() <= kDataChunk) {
      batch += data;
      send_raw(batch);
    } else {
      send_raw(batch);
      outbuf_ = std::move(data);
      flush_data();
    }
    // One reply each to MAIL and RCPT, then to BDAT LAST: one (SMTP) or,
    // for LMTP, one per accepted recipient (RFC 2033 4.2); with the
    // recipient refused, the server refuses the BDAT (no valid recipient)
    // and delivers nothing.
    std::optional<std::pair<std::string, Reply>> refused;
    const std::string data_stage = options_.endpoint.protocol == Protocol::Lmtp
                                       ? fmt::format("end of data for <{}>", recipient)
                                       : std::string("end of data");
    for (size_t i = 0; i < 3; ++i) {
      const bool is_mail = i == 0, is_bdat = i == 2;
      Reply reply = read_reply(is_mail ? kMailTimeout : is_bdat ? kDataEndTimeout : kRcptTimeout,
                               fmt::format("the reply to {}", is_bdat ? "BDAT LAST" : commands[i]));
      if (!reply.positive() && !refused) refused.emplace(is_bdat ? data_stage : commands[i], std::move(reply));
    }
    if (refused) {
      // RFC 3030 2: after a failed BDAT the transaction state is unknown:
      // RSET before the next one.
      reset_transaction(refused->first);
      fail_delivery(std::move(refused->first), std::move(refused->second));
    }
    ++delivered_;
  } catch (const DeliveryError&) {
    throw;
  } catch (...) {
    close();
    throw;
  }
}

void Client::quit() {
  if (!stream_) return;
  if (state_ != State::Idle) {
    // The transaction cannot end cleanly: closing aborts it (RFC 5321 3.8).
    close();
    return;
  }
  // A server that already ended the session (421 or close while idle)
  // needs no QUIT.
  if (session_went_away()) return;
  try {
    // RFC 5321 4.1.1.10: QUIT is answered 221, then the server closes.
    // A 421 (RFC 5321 3.8: the server is closing anyway) ends the session
    // as well as a 221 does.
    send_line("QUIT");
    Reply reply = read_reply(kCommandTimeout, "the reply to QUIT");
    if (reply.code != 221 && reply.code != 421)
      fail_protocol(fmt::format("QUIT answered {} (expected 221)", reply.to_string()));
  } catch (...) {
    close();
    throw;
  }
  close();
}

}  // namespace interimap::detail::smtp
