// IMAP command building: the choice between atom, quoted string and
// literal (RFC 3501 4.1-4.3, 9), non-synchronizing literals (RFC 7888) and
// literal8 (RFC 3516 4.2).

#include "imap/command.hpp"
#include "util/ascii.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>

namespace interimap::detail::imap {

namespace {

// ASTRING-CHAR = ATOM-CHAR / resp-specials (RFC 3501 9): a CHAR (7-bit)
// that is not a CTL, SP, "(", ")", "{", list-wildcard ("%", "*") or
// quoted-special ('"', "\").  Unlike ATOM-CHAR it includes "]".
constexpr std::array<bool, 256> make_astring_table() {
  std::array<bool, 256> t{};
  for (unsigned c = 0x21; c < 0x7f; ++c)
    t[c] = c != '(' && c != ')' && c != '{' && c != '%' && c != '*' && c != '"' && c != '\\';
  return t;
}
constexpr auto kAstringChar = make_astring_table();

// Quoted strings longer than this go as literals: RFC 3501 puts no bound on
// a quoted string, but servers bound their line length (Dovecot's default
// is 64 KiB per command line) and a literal costs nothing with LITERAL+.
constexpr size_t kMaxQuoted = 1024;

// RFC 7888 5: with LITERAL-, non-synchronizing literals are limited to
// 4096 bytes.
constexpr size_t kLiteralMinusMax = 4096;

bool is_astring_atom(std::string_view s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](char c) { return kAstringChar[static_cast<unsigned char>(c)]; });
}

// quoted = DQUOTE *QUOTED-CHAR DQUOTE; QUOTED-CHAR = <any TEXT-CHAR except
// quoted-specials> / "\" quoted-specials; TEXT-CHAR excludes CR and LF,
// CHAR excludes NUL and 8-bit bytes (RFC 3501 9).
bool is_quotable(std::string_view s) {
  return s.size() < kMaxQuoted && std::none_of(s.begin(), s.end(), [](char c) {
           const auto u = static_cast<unsigned char>(c);
           return u == '\0' || u == '\r' || u == '\n' || u >= 0x80;
         });
}

}  // namespace

std::string quote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
  return out;
}

CommandBuilder::CommandBuilder(std::string_view name, LiteralMode mode) : mode_(mode) {
  cmd_.name = std::string(name);
  cmd_.chunks.emplace_back(name);
}

CommandBuilder& CommandBuilder::raw(std::string_view text) {
  std::string& chunk = cmd_.chunks.back();
  chunk += ' ';
  chunk += text;
  return *this;
}

CommandBuilder& CommandBuilder::astring(std::string_view value) {
  if (is_astring_atom(value)) return raw(value);
  return string(value);
}

CommandBuilder& CommandBuilder::string(std::string_view value) {
  if (is_quotable(value)) return raw(quote(value));
  return literal(value);
}

CommandBuilder& CommandBuilder::literal(std::string_view value, bool literal8) {
  // RFC 3501 4.3: "{" number "}" CRLF, then the server's "+" before the
  // bytes; RFC 7888 3: "{" number "+}" needs no "+".  RFC 4466 2.1 allows
  // the "+" in literal8 too ("~{" number64 ["+"] "}").
  const bool sync = mode_ == LiteralMode::Sync || (mode_ == LiteralMode::Minus && value.size() > kLiteralMinusMax);
  std::string& chunk = cmd_.chunks.back();
  fmt::format_to(std::back_inserter(chunk), " {}{{{}{}}}\r\n", literal8 ? "~" : "", value.size(), sync ? "" : "+");
  if (sync) {
    // The bytes open the next chunk, sent after the continuation request.
    cmd_.chunks.emplace_back(value);
    cmd_.literals.push_back({cmd_.chunks.size() - 1, 0, value.size()});
  } else {
    cmd_.literals.push_back({cmd_.chunks.size() - 1, chunk.size(), value.size()});
    chunk += value;
  }
  return *this;
}

CommandBuilder& CommandBuilder::literal_moved(std::string&& value, bool literal8) {
  const bool sync = mode_ == LiteralMode::Sync || (mode_ == LiteralMode::Minus && value.size() > kLiteralMinusMax);
  if (sync) return literal(std::string_view(value), literal8);
  fmt::format_to(std::back_inserter(cmd_.chunks.back()), " {}{{{}+}}\r\n", literal8 ? "~" : "", value.size());
  const size_t size = value.size();
  cmd_.chunks.push_back(std::move(value));
  cmd_.inline_chunks.push_back(cmd_.chunks.size() - 1);
  cmd_.literals.push_back({cmd_.chunks.size() - 1, 0, size});
  // What follows goes into a new chunk, sent with it.
  cmd_.chunks.emplace_back();
  cmd_.inline_chunks.push_back(cmd_.chunks.size() - 1);
  return *this;
}

bool Command::waits(size_t i) const {
  return i > 0 && !std::binary_search(inline_chunks.begin(), inline_chunks.end(), i);
}

CommandBuilder& CommandBuilder::mailbox(std::string_view wire_name) {
  // RFC 3501 5.1: "INBOX" is case-insensitive; send the canonical form so
  // every server sees the same name.
  if (iequals(wire_name, "INBOX")) return raw("INBOX");
  return astring(wire_name);
}

CommandBuilder& CommandBuilder::reserve(size_t bytes) {
  std::string& chunk = cmd_.chunks.back();
  chunk.reserve(chunk.size() + bytes);
  return *this;
}

CommandBuilder& CommandBuilder::sensitive() {
  cmd_.sensitive = true;
  return *this;
}

Command CommandBuilder::build() {
  cmd_.chunks.back() += "\r\n";
  return std::move(cmd_);
}

}  // namespace interimap::detail::imap
