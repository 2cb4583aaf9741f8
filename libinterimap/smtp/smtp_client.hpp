// The SMTP (RFC 5321) / LMTP (RFC 2033) client that pullimap delivers to:
// pullimap(1)'s deliver-method, deliver-ehlo and deliver-rcpt, with
// PIPELINING (RFC 2920), BODY=8BITMIME (RFC 6152) and SMTPUTF8 (RFC 6531)
// when the server offers them.
//
// One Client is one session, opened on the first delivery and reused for
// every message that follows; quit() ends it gracefully.  All I/O is
// blocking, over a plain TCP socket (net/tcp.hpp), and every wait for a
// reply is bounded by the RFC 5321 4.5.3.2 timeouts.
//
// Errors, sorted by what they abandon (doc/design.md "Errors"):
//   DeliveryError   the server refused this message (a 4xx or 5xx reply to
//                   MAIL, RCPT, DATA or the end of data); the session goes
//                   on with the next message.
//   NetworkError    the connection could not be opened or was lost; the
//                   next delivery opens a new one.
//   ProtocolError   the server broke the protocol (a malformed reply, an
//                   unexpected greeting); the session is closed.
//   ConfigError     a malformed deliver-method (parse_deliver_method).
#pragma once

#include <interimap/error.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace interimap::detail {
class Stream;
}

namespace interimap::detail::smtp {

enum class Protocol { Smtp, Lmtp };

// Where to deliver: deliver-method "PROTOCOL:[ADDRESS]:PORT".
struct Endpoint {
  Protocol protocol = Protocol::Smtp;
  // An IPv4 or IPv6 literal, without brackets: the reference never resolves
  // a name here.
  std::string address = "127.0.0.1";
  uint16_t port = 25;
};

// pullimap(1)'s defaults.
inline constexpr std::string_view kDefaultDeliverMethod = "smtp:[127.0.0.1]:25";
inline constexpr std::string_view kDefaultDeliverEhlo = "localhost.localdomain";

// Parses deliver-method as the reference does: "smtp:" or "lmtp:" (lower
// case), an IP literal in brackets (IPv6 when it holds a ':'), ':' and a
// decimal port.  Unlike the reference we also reject port 0 and ports above
// 65535 here rather than at connect time.  Throws ConfigError
// "Invalid deliver-method `VALUE`: REASON".
Endpoint parse_deliver_method(std::string_view value);

// "smtp:[127.0.0.1]:25", "lmtp:[::1]:24": the value parse_deliver_method reads.
std::string to_string(const Endpoint& endpoint);

// The RFC 5321 4.1.2 Mailbox "LOCAL@DOMAIN" pullimap gives as reverse-path
// for a message whose IMAP ENVELOPE sender address (RFC 3501 7.4.2: the
// Sender header, or From when there is none) has addr-mailbox `local` and
// addr-host `domain`.  As the reference: the local part as is when it is a
// Dot-string, double-quoted with '"' and '\' escaped when it is other
// printable ASCII, and "" (the null reverse-path "<>") when either part is
// missing (NIL, a group) or the local part holds other bytes.  Unlike the
// reference, a domain that would break the command line (empty, or holding
// a control character, a blank, one of <>()[]\",;:@ outside an address
// literal) also gives "".  8-bit bytes in the domain are kept (RFC 6531).
std::string envelope_mailbox(const std::optional<std::string>& local, const std::optional<std::string>& domain);

// One server reply (RFC 5321 4.2): the three-digit code and the text of
// each line, without the code, the separator and the line ending.
struct Reply {
  int code = 0;
  std::vector<std::string> lines;

  bool positive() const { return code >= 200 && code < 300; }
  bool intermediate() const { return code >= 300 && code < 400; }
  // "550 5.1.1 no such user" (further lines joined with " / ").
  std::string to_string() const;
};

// The server refused a message.  what() reads
// "NAME: PROTO server ADDRESS:PORT: STAGE refused: REPLY", e.g.
// "work: LMTP server 127.0.0.1:24: RCPT TO:<bob> refused: 550 5.1.1 <bob> User doesn't exist",
// with " (delivered to N other recipient(s))" appended when an LMTP server
// refused the data for some recipients only.
class DeliveryError : public Error {
 public:
  DeliveryError(std::string component, const std::string& message, std::string stage, Reply reply)
      : Error(std::move(component), message), stage_(std::move(stage)), reply_(std::move(reply)) {}
  // The command refused: "MAIL FROM:<a@b>", "RCPT TO:<c@d>", "DATA",
  // "end of data" (SMTP) or "end of data for <c@d>" (LMTP).
  const std::string& stage() const noexcept { return stage_; }
  const Reply& reply() const noexcept { return reply_; }
  // A 5xx reply: the server will refuse the message again.
  bool permanent() const noexcept { return reply_.code >= 500; }

 private:
  std::string stage_;
  Reply reply_;
};

struct ClientOptions {
  // deliver-method.  Default smtp:[127.0.0.1]:25.
  Endpoint endpoint;
  // deliver-ehlo: the domain of EHLO/LHLO.  Default localhost.localdomain.
  std::string helo_name = std::string(kDefaultDeliverEhlo);
  // Prefix of error messages (the pullimap section); empty: "smtp"/"lmtp".
  std::string name;
  // Receives the protocol trace in the reference's --debug form: "C: LINE"
  // for a command, "S: LINE" for a reply line, "C: [...]" for message data.
  std::function<void(std::string_view)> trace;
};

// The message encoder of the DATA phase: dot-stuffing (RFC 5321 4.5.2) and
// line ending normalization (RFC 5321 2.3.8: CR and LF travel only as CRLF;
// a bare LF and a bare CR each become CRLF), then the end of data
// "CRLF.CRLF" (RFC 5321 4.1.1.4), a CRLF first when the message does not
// end with a line ending (an empty message is sent as one empty line, as
// the reference does).  The message may come in chunks split anywhere.
class DataEncoder {
 public:
  // dot_stuffing false: for BDAT (RFC 3030), which sends the data as it
  // is: line ends still become CRLF, no "." is added, and finish() only
  // ends the last line.
  explicit DataEncoder(bool dot_stuffing = true) : dot_stuffing_(dot_stuffing) {}
  // Appends the encoding of `chunk` to `out`: at most 2 * chunk.size() + 2
  // bytes.
  void encode(std::string_view chunk, std::string& out);
  // Appends what ends the data ("\r\n" when needed, then ".\r\n") and
  // resets the encoder for the next message.
  void finish(std::string& out);

 private:
  bool dot_stuffing_ = true;
  bool at_line_start_ = true;
  bool pending_cr_ = false;
  bool empty_ = true;  // nothing encoded since the last finish()
};

// True when `data` holds a byte >= 0x80.
bool has_8bit(std::string_view data) noexcept;

class Client {
 public:
  // Nothing is opened until the first delivery.  Throws
  // std::invalid_argument for a helo_name that is empty or holds CR or LF.
  explicit Client(ClientOptions options);
  // Closes the socket without QUIT (call quit() for a graceful end).
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Delivers one message in one mail transaction: MAIL FROM:<reverse_path>,
  // RCPT TO:<r> for each recipient, DATA, the encoded message, the end of
  // data; pipelined (RFC 2920) when the server advertises PIPELINING.
  // Connects first (greeting, EHLO/LHLO) when no session is open, or when
  // the open session was closed by the server in the meantime (a 421 or the
  // end of the stream while idle, RFC 5321 4.5.3.2).
  //
  // reverse_path: a Mailbox (see envelope_mailbox) or "" for "<>".
  // recipients: at least one; each is sent as is between angle brackets
  // (deliver-rcpt: a local part alone is fine for LMTP and most MTAs).
  // Neither may hold CR, LF, '<' or '>' (std::invalid_argument).
  //
  // Returns once the server accepted the message for every recipient: one
  // 2xx reply after the end of data (SMTP), one per recipient (LMTP,
  // RFC 2033 4.2).  With one recipient and a server offering PIPELINING
  // and CHUNKING (RFC 3030), the whole transaction (MAIL, RCPT, BDAT LAST
  // and the data) goes in one write and costs one round trip instead of
  // two; a refused envelope makes the server refuse the BDAT too, so
  // nothing is delivered.  All-or-nothing at the envelope: if any recipient is
  // refused, no data is sent (and when a pipelined DATA was already
  // answered 354, the connection is closed, which aborts the transaction,
  // RFC 5321 3.8).  Throws DeliveryError on a refusal, after which the
  // session is ready for the next message (RSET was sent, or the next call
  // reconnects); NetworkError or ProtocolError when the session is lost (it
  // is closed; the next call opens a new one).  With LMTP, a DeliveryError
  // at the end of data may come after other recipients accepted the
  // message: what() says how many.
  void deliver(std::string_view reverse_path, std::span<const std::string> recipients, std::string_view message);

  // The same in three steps, for a message that arrives in chunks: begin()
  // sends the envelope and DATA and returns after the 354 (declaring
  // BODY=8BITMIME when eight_bit and the server offers it; pass true when
  // unknown); write() sends message bytes (any split); end() sends the end
  // of data and reads the replies.  Errors as for deliver(); after an error
  // the transaction is over.
  void begin(std::string_view reverse_path, std::span<const std::string> recipients, bool eight_bit);
  void write(std::string_view chunk);
  void end();

  // QUIT and its 221 (RFC 5321 4.1.1.10; a 421 will do), then closes the
  // socket; nothing is sent when no session is open or the server already
  // ended it (421 or close while idle); in the middle of a transaction the
  // socket is closed, which aborts it.  The next delivery opens a new
  // session.  Throws ProtocolError on another reply, NetworkError on a
  // lost connection; the socket is closed either way.
  void quit();

  bool connected() const { return stream_ != nullptr; }
  const ClientOptions& options() const { return options_; }
  // The EHLO/LHLO keywords of the current session, upper-cased (e.g.
  // "PIPELINING", "8BITMIME"); empty before the first connection or after
  // a HELO fallback.
  const std::set<std::string, std::less<>>& extensions() const { return extensions_; }
  bool has_extension(std::string_view keyword) const { return extensions_.contains(keyword); }
  // Mail transactions completed (the message accepted) in this object's life.
  uint64_t delivered() const { return delivered_; }

 private:
  enum class State { Idle, Data };

  void connect();
  void close() noexcept;
  bool session_went_away();
  void greet();
  void send_line(std::string_view line);
  void send_raw(std::string_view data);
  Reply read_reply(std::chrono::seconds timeout, std::string_view waiting_for);
  std::optional<std::string> read_line(std::chrono::seconds timeout, std::string_view waiting_for);
  void reset_transaction(std::string_view after);
  void flush_data();
  // deliver() in one round trip: RFC 3030 BDAT, pipelined (RFC 2920).
  void deliver_chunked(std::string_view reverse_path, const std::string& recipient, std::string_view message);
  [[noreturn]] void fail_delivery(std::string stage, Reply reply, std::string_view note = {});
  [[noreturn]] void fail_protocol(std::string_view message);
  // "PROTO server ADDRESS:PORT", after the component (options_.name) in messages.
  std::string where() const;
  std::string_view protocol_name() const;

  ClientOptions options_;
  std::string peer_;  // "127.0.0.1:25", "[::1]:24"
  std::unique_ptr<Stream> stream_;
  std::set<std::string, std::less<>> extensions_;
  std::string inbuf_;
  size_t inpos_ = 0;
  // The DATA phase of the current transaction.
  State state_ = State::Idle;
  DataEncoder encoder_;
  std::string outbuf_;
  std::vector<std::string> accepted_;  // recipients of the current transaction
  uint64_t delivered_ = 0;
};

}  // namespace interimap::detail::smtp
