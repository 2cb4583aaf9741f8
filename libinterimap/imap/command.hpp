// Building IMAP commands: quoting, literals (RFC 3501 4.3, RFC 7888
// LITERAL+/LITERAL-), mailbox names in modified UTF-7.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace interimap::detail::imap {

enum class LiteralMode {
  Sync,   // {N}: wait for '+' before each literal
  Plus,   // LITERAL+: {N+} always
  Minus,  // LITERAL-: {N+} up to 4096 bytes, {N} above
};

// A command ready to send, without its tag.  chunks[0] follows "TAG "; each
// later chunk is sent after the server's continuation request, unless it
// is listed in `inline_chunks` (a moved non-synchronizing literal and the
// text after it: sent right after the chunk before); the last chunk ends
// with CRLF.  A command without waiting chunk needs no round trip.
struct Command {
  std::string name;                 // e.g. "UID FETCH" (for logs and errors)
  std::vector<std::string> chunks;
  std::vector<size_t> inline_chunks;  // ascending
  bool sensitive = false;           // LOGIN/AUTHENTICATE: redact in logs
  // Byte ranges of literal contents inside the chunks, elided in debug logs:
  // (chunk index, offset, length).
  struct Span { size_t chunk, offset, length; };
  std::vector<Span> literals;

  // Whether chunk i waits for a continuation request.
  bool waits(size_t i) const;
};

class CommandBuilder {
 public:
  // `name` is the command verb(s), written first as atoms: "UID FETCH".
  explicit CommandBuilder(std::string_view name, LiteralMode mode = LiteralMode::Sync);

  // A space then the text as is (atoms, numbers, sets, parenthesized lists
  // built by the caller).
  CommandBuilder& raw(std::string_view text);
  // A space then an astring: atom if every byte is an ASTRING-CHAR, else a
  // quoted string if it has no CR, LF, NUL or 8-bit byte and is short, else a literal.
  CommandBuilder& astring(std::string_view value);
  // A space then a string: quoted if possible, else a literal (never an atom).
  CommandBuilder& string(std::string_view value);
  // A space then a literal of value ({N} / {N+} per the mode); literal8
  // writes "~{N}" (RFC 3516).
  CommandBuilder& literal(std::string_view value, bool literal8 = false);
  // The same, taking the bytes over: a non-synchronizing literal becomes a
  // chunk of its own (no copy into the command text), written with the
  // rest in one gathered write.
  CommandBuilder& literal_moved(std::string&& value, bool literal8 = false);
  // A space then a mailbox name as it goes on the wire (modified UTF-7,
  // see util/utf7.hpp), as an astring; "INBOX" in any case is sent as INBOX.
  CommandBuilder& mailbox(std::string_view wire_name);
  // Makes room for `bytes` more in the chunk being written (a MULTIAPPEND
  // of many literals then grows its buffer once, not by doubling).
  CommandBuilder& reserve(size_t bytes);
  // Marks the command as carrying credentials.
  CommandBuilder& sensitive();
  // Ends the command with CRLF and hands it over; the builder is spent.
  Command build();

 private:
  Command cmd_;
  LiteralMode mode_;
};

// The quoted form of s ("..." with \ and " escaped).  Precondition: s has
// no CR, LF, NUL or 8-bit byte.
std::string quote(std::string_view s);

}  // namespace interimap::detail::imap
