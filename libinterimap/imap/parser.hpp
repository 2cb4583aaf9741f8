// IMAP response parsing in two layers without I/O (doc/design.md
// "Parsing responses"):
//  - ResponseReader frames a byte stream, fed in any split, into complete
//    responses (a line plus its literals), optionally streaming large
//    literals to a sink;
//  - parse_response() turns one framed response into a typed Response.
#pragma once

#include "imap/response.hpp"

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace interimap::detail::imap {

// Receives a literal's bytes instead of the framed response holding them.
class LiteralSink {
 public:
  virtual ~LiteralSink() = default;
  virtual void begin(uint64_t size) = 0;
  virtual void data(std::string_view chunk) = 0;
  virtual void end() = 0;
};

// In a framed response, a streamed literal is replaced by this single byte
// (NUL cannot occur outside a literal in IMAP, RFC 3501 9 "CHAR8"); the
// tokenizer reads it as a string that was streamed.
inline constexpr char kStreamedLiteral = '\0';

class ResponseReader {
 public:
  // Called when a literal of `size` bytes starts; `line` is the response so
  // far (up to and including "{size}\r\n" / "~{size}\r\n").  Returning a sink
  // streams the literal to it; nullptr keeps it in the framed response.
  using SinkChooser = std::function<LiteralSink*(std::string_view line, uint64_t size)>;

  // The default bound on a response's bytes outside streamed literals.
  // Message bodies are streamed (Mailbox's sink); what remains is at most
  // a SEARCH or VANISHED answer, about 8 bytes a UID: 64 MiB holds one
  // for 8 million messages.  A server sending an endless line is stopped
  // there instead of growing the buffer to 2 GiB.
  static constexpr size_t kDefaultMaxLine = size_t{64} << 20;

  // max_line bounds a response's bytes outside streamed literals; past it,
  // feed() throws ProtocolError.
  explicit ResponseReader(size_t max_line = kDefaultMaxLine) : max_line_(max_line) {}

  void set_sink_chooser(SinkChooser chooser) { chooser_ = std::move(chooser); }

  // Consumes bytes (any split, a byte at a time included).  Complete
  // responses become available through next().  Throws ProtocolError for a
  // literal size that does not fit in 64 bits or an oversized response;
  // exceptions from the chooser or a sink propagate.  After any exception
  // the reader's state is unspecified: drop the connection.
  // Only "{digits}" / "~{digits}" just before a line's CRLF opens a literal;
  // other text ("{12x}") stays in the line for parse_response() to judge.
  // A bare LF ends a line like CRLF does and is rewritten as CRLF in the
  // framed response (RFC 3501 2.2 requires CRLF; being liberal here costs
  // nothing and keeps a sloppy server usable).
  //
  // Sink protocol: for a literal the chooser streams, sink->begin(size) is
  // called once the header is complete, then data() with the literal's
  // bytes in order (non-empty chunks, `size` bytes in all), then end() after
  // the last byte, possibly before the rest of the response has arrived.
  // A zero-length literal gets begin(0) and end() at once.
  void feed(std::string_view bytes);
  // The next complete response: its line(s) with CRLF kept, literals inline
  // ("* 1 FETCH (BODY[] {5}\r\nhello)\r\n"), a streamed literal replaced
  // with its header by kStreamedLiteral ("* 1 FETCH (BODY[] \0)\r\n"), or
  // nullopt.
  std::optional<std::string> next();
  // True when no partial response is buffered.
  bool idle() const;

 private:
  void end_line();
  void end_literal();
  [[noreturn]] void too_long() const;

  enum class State { Line, Literal };
  State state_ = State::Line;
  std::string current_;
  size_t line_start_ = 0;  // where the line after the last literal starts in current_
  uint64_t literal_left_ = 0;
  LiteralSink* sink_ = nullptr;
  size_t max_line_;
  SinkChooser chooser_;
  std::deque<std::string> ready_;
};

// Parses one framed response (as ResponseReader::next() returns it,
// ending with CRLF).  Throws ProtocolError whose message quotes the
// response (printable, long ones abbreviated) and gives the byte offset of
// the error: `malformed response at offset 2: expected atom: "* (x)"`.
// Unknown untagged responses become OtherData; unknown response codes,
// STATUS items, LIST extended items and FETCH items are skipped or kept raw.
Response parse_response(std::string_view raw);

// True if `line`, as passed to a SinkChooser, ends with the literal header
// of a whole message in an untagged FETCH: "* 12 FETCH (UID 7 BODY[] {N}\r\n"
// (also BODY[]<0>, BINARY[] with literal8, RFC822).  A chooser streams
// those and keeps the rest (ENVELOPE strings, header fields) inline.
bool is_body_literal(std::string_view line);

// Formats a response for debug logs and errors: CR/LF stripped at the end,
// literal contents elided as "{N}...", a streamed literal shown as
// "{streamed}", control and 8-bit bytes escaped ("\r", "\x1b"), output cut
// with "..." once it reaches `max` characters.  Linear in the input.
std::string describe_response(std::string_view raw, size_t max = 256);

}  // namespace interimap::detail::imap
