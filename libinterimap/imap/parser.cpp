// IMAP response framing and parsing (doc/design.md "Parsing responses").  Grammar references are
// to RFC 3501 section 9 unless another RFC is named.

#include "imap/parser.hpp"
#include "util/ascii.hpp"

#include <interimap/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <exception>
#include <limits>
#include <utility>

namespace interimap::detail::imap {

namespace {

// ---------------------------------------------------------------------------
// Character classes (RFC 3501 9, "Formal Syntax").

constexpr bool is_atom_special(unsigned c) {
  // atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards /
  //                 quoted-specials / resp-specials
  return c == '(' || c == ')' || c == '{' || c == ' ' || c < 0x20 || c == 0x7f || c == '%' || c == '*' ||
         c == '"' || c == '\\' || c == ']';
}

template <typename Pred>
constexpr std::array<bool, 256> make_table(Pred pred) {
  std::array<bool, 256> t{};
  for (unsigned c = 0; c < 256; ++c) t[c] = pred(c);
  return t;
}

// ATOM-CHAR.  Bytes >= 0x80 are not CHARs, but some servers send raw UTF-8
// in atoms (mailbox names, keywords); accepting them costs nothing and the
// token's end stays unambiguous.
constexpr auto kAtomChar = make_table([](unsigned c) { return !is_atom_special(c); });
// ASTRING-CHAR = ATOM-CHAR / resp-specials.  Mailbox names in LIST and
// STATUS responses are astrings; we also take list-wildcards there since
// some servers send unquoted names such as "foo*bar" (liberal in what we
// accept: the token still ends at SP, ')' or CRLF).
constexpr auto kAstringChar = make_table([](unsigned c) { return !is_atom_special(c) || c == ']'; });
constexpr auto kMailboxChar =
    make_table([](unsigned c) { return !is_atom_special(c) || c == ']' || c == '%' || c == '*'; });
// Bytes of a token skipped without interpretation (atoms, numbers, flags
// such as "\Seen", NIL) inside FETCH items we do not decode.
constexpr auto kSkipChar = make_table([](unsigned c) {
  return c > 0x20 && c != 0x7f && c != '(' && c != ')' && c != '"' && c != '{';
});

inline unsigned uc(char c) { return static_cast<unsigned char>(c); }
// kStreamedLiteral as Lexer::peek() returns it.
constexpr int kMarker = static_cast<unsigned char>(kStreamedLiteral);
inline bool is_digit(int c) { return c >= '0' && c <= '9'; }

char ascii_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

bool iends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && iequals(s.substr(s.size() - suffix.size()), suffix);
}

std::string to_upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_upper(c);
  return out;
}

// Limits of the numeric types (RFC 3501 9 "number", "nz-number": 32-bit
// unsigned; RFC 7162 7 "mod-sequence-value": 63-bit; RFC 3516 "number64").
constexpr uint64_t kMax32 = std::numeric_limits<uint32_t>::max();
constexpr uint64_t kMax63 = std::numeric_limits<int64_t>::max();

// Nesting bound for values we skip (BODYSTRUCTURE of deeply nested
// multiparts stays far below); it keeps a hostile server from exhausting
// the stack.
constexpr int kMaxNesting = 128;

// Bound on the digits of a literal size: 2^64 has 20 digits.
constexpr size_t kMaxSizeDigits = 20;

// Parses the digits of a literal size; false on overflow.
bool parse_size(std::string_view digits, uint64_t& out) {
  uint64_t v = 0;
  for (char c : digits) {
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return false;
    v = v * 10 + d;
  }
  out = v;
  return true;
}

// If `line` ends with a literal header "{N}\r\n" or "~{N}\r\n" that starts
// at or after `from`, returns the header's start and sets size.  Throws
// ProtocolError if the size does not fit in 64 bits.  Looks back only
// across the header itself (at most the line, once per line), so framing
// stays linear.
std::optional<size_t> find_literal_header(std::string_view line, size_t from, uint64_t& size) {
  // The shortest header is "{0}\r\n".
  if (line.size() < from + 5) return std::nullopt;
  size_t close = line.size() - 3;
  if (line[close] != '}' || line[close + 1] != '\r' || line[close + 2] != '\n') return std::nullopt;
  size_t first = close;
  while (first > from && is_digit(line[first - 1])) --first;
  if (first == close || first == from || line[first - 1] != '{') return std::nullopt;
  std::string_view digits = line.substr(first, close - first);
  if (digits.size() > kMaxSizeDigits || !parse_size(digits, size))
    throw ProtocolError(fmt::format("malformed response: literal size {{{}}} out of range: \"{}\"", digits,
                                    describe_response(line)));
  size_t start = first - 1;
  // RFC 3516 4.2: literal8 = "~{" number64 "}" CRLF *OCTET
  if (start > from && line[start - 1] == '~') --start;
  return start;
}

// ---------------------------------------------------------------------------
// Token layer: functions over the framed response and a position.

// A string value as it appears in the response, not yet unescaped.
struct StringToken {
  enum class Kind { Nil, Quoted, Literal, Streamed };
  Kind kind = Kind::Nil;
  std::string_view bytes;  // the content: between the quotes, or the literal's bytes
  bool escaped = false;    // Quoted with at least one backslash escape
};

class Lexer {
 public:
  // `raw` is a framed response ending with CRLF (checked by the caller).
  explicit Lexer(std::string_view raw) : raw_(raw), end_(raw.size() - 2) {}

  size_t pos() const { return pos_; }
  bool at_end() const { return pos_ >= end_; }
  // The next byte, or -1 at the end of the response.
  int peek() const { return pos_ < end_ ? static_cast<int>(uc(raw_[pos_])) : -1; }
  int peek_at(size_t ahead) const { return pos_ + ahead < end_ ? static_cast<int>(uc(raw_[pos_ + ahead])) : -1; }
  bool accept(char c) {
    if (pos_ < end_ && raw_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c, std::string_view what) {
    if (!accept(c)) fail(what);
  }
  void sp() { expect(' ', "expected space"); }
  void expect_end() {
    if (!at_end()) fail("expected end of response");
  }
  // The bytes up to (not including) `stop` or the end.
  std::string_view until(char stop) {
    const size_t start = pos_;
    while (pos_ < end_ && raw_[pos_] != stop) ++pos_;
    return raw_.substr(start, pos_ - start);
  }
  // The rest of the line (resp-text "text").
  std::string_view rest() {
    std::string_view r = raw_.substr(pos_, end_ - pos_);
    pos_ = end_;
    return r;
  }

  [[noreturn]] void fail(std::string_view what) const { fail_at(pos_, what); }
  [[noreturn]] void fail_at(size_t at, std::string_view what) const {
    std::string msg = fmt::format("malformed response at offset {}: {}: \"{}\"", at, what, describe_response(raw_));
    // A long response is abbreviated in the quote above; show where it broke.
    if (raw_.size() > 128) {
      const size_t from = at > 40 ? at - 40 : 0;
      msg += fmt::format(" near \"{}\"", describe_response(raw_.substr(from, 80), 160));
    }
    throw ProtocolError(msg);
  }

  // 1*<chars of `table`>.
  std::string_view run(const std::array<bool, 256>& table, std::string_view what) {
    const size_t start = pos_;
    while (pos_ < end_ && table[uc(raw_[pos_])]) ++pos_;
    if (pos_ == start) fail(what);
    return raw_.substr(start, pos_ - start);
  }
  std::string_view atom() { return run(kAtomChar, "expected atom"); }

  // number (RFC 3501 9) and nz-number: 32-bit unsigned.
  uint32_t number32(bool nonzero) {
    const size_t start = pos_;
    const uint64_t v = digits(kMax32);
    if (nonzero && v == 0) fail_at(start, "expected non-zero number");
    return static_cast<uint32_t>(v);
  }
  // mod-sequence-valzer (RFC 7162 7) and number64 (RFC 3516 4.2): 63 bits.
  uint64_t number63() { return digits(kMax63); }

  // flag = "\" atom / atom (RFC 3501 9 "flag", "flag-keyword",
  // "flag-extension"); with allow_star, also "\*" (flag-perm).  Case is kept.
  std::string_view flag(bool allow_star) {
    const size_t start = pos_;
    if (accept('\\')) {
      if (allow_star && accept('*')) return raw_.substr(start, 2);
      atom();
    } else {
      run(kAtomChar, "expected flag");
    }
    return raw_.substr(start, pos_ - start);
  }

  // string / nstring / literal8 / streamed marker.  `what` names the
  // expected token in error messages.
  StringToken string_token(bool allow_nil, bool allow_literal8, bool allow_streamed, std::string_view what) {
    StringToken t;
    const int c = peek();
    if (c == '"') {
      quoted(t);
    } else if (c == '{') {
      literal(t);
    } else if (c == '~' && peek_at(1) == '{' && allow_literal8) {
      ++pos_;
      literal(t);
    } else if (c == kMarker && allow_streamed) {
      ++pos_;
      t.kind = StringToken::Kind::Streamed;
    } else if (allow_nil && accept_nil()) {
      t.kind = StringToken::Kind::Nil;
    } else {
      fail(what);
    }
    return t;
  }

  // astring = 1*ASTRING-CHAR / string
  std::string astring(const std::array<bool, 256>& atom_table = kAstringChar) {
    const int c = peek();
    if (c == '"' || c == '{') return to_string(string_token(false, false, false, "expected string"));
    return std::string(run(atom_table, "expected atom or string"));
  }
  // string = quoted / literal
  std::string string() { return to_string(string_token(false, false, false, "expected string")); }
  // nstring = string / nil
  std::optional<std::string> nstring() {
    StringToken t = string_token(true, false, false, "expected string or NIL");
    if (t.kind == StringToken::Kind::Nil) return std::nullopt;
    return to_string(t);
  }

  static std::string to_string(const StringToken& t) {
    if (!t.escaped) return std::string(t.bytes);
    std::string out;
    out.reserve(t.bytes.size());
    for (size_t i = 0; i < t.bytes.size(); ++i) {
      if (t.bytes[i] == '\\') ++i;  // validated by quoted(): an escape is always complete
      out += t.bytes[i];
    }
    return out;
  }

  // sequence-set as servers send it (no "*"), e.g. "1:5,7" (RFC 3501 9,
  // RFC 4315 "uid-set").
  UidSet uid_set() {
    static constexpr auto kSetChar =
        make_table([](unsigned c) { return (c >= '0' && c <= '9') || c == ':' || c == ','; });
    const size_t start = pos_;
    std::string_view text = run(kSetChar, "expected sequence set");
    try {
      return UidSet::parse(text);
    } catch (const std::exception& e) {
      fail_at(start, fmt::format("invalid sequence set ({})", e.what()));
    }
  }

  // In a parenthesized list whose "(" was consumed: false (and ")"
  // consumed) at the end, true when an item follows.  A space before ")"
  // is tolerated; some servers send "(\Seen )".
  bool list_more(bool first) {
    if (accept(')')) return false;
    if (!first) {
      sp();
      if (accept(')')) return false;
    }
    if (at_end()) fail("unterminated list");
    return true;
  }

  // Skips one value of any shape: atom, number, NIL, quoted, literal,
  // literal8, streamed marker, or a parenthesized list of values nested to
  // any depth (BODYSTRUCTURE, X-GM-LABELS, extension data).
  void skip_value(int depth = 0) {
    if (depth > kMaxNesting) fail("too deeply nested");
    const int c = peek();
    if (c == '(') {
      // body-type-mpart = 1*body SP media-subtype (RFC 3501 9): nested
      // lists may follow each other with no space, so the separator is
      // optional here.
      ++pos_;
      while (!accept(')')) {
        if (at_end()) fail("unterminated list");
        skip_value(depth + 1);
        accept(' ');
      }
    } else if (c == '"' || c == '{' || (c == '~' && peek_at(1) == '{') || c == kMarker) {
      string_token(false, true, true, "expected value");
    } else {
      run(kSkipChar, "expected value");
    }
  }

  // Skips a FETCH section spec up to (not including) its closing "]":
  // "HEADER.FIELDS (From {4}\r\nX-Id)" may hold lists and strings
  // (RFC 3501 9 "section", "header-list").
  void skip_section() {
    const size_t start = pos_;
    int depth = 0;
    for (;;) {
      const int c = peek();
      if (c < 0) fail_at(start, "unterminated section");
      if (c == ']' && depth == 0) return;
      if (c == '"' || c == '{') {
        string_token(false, false, false, "expected string");
        continue;
      }
      if (c == '(' && ++depth > kMaxNesting) fail("too deeply nested");
      if (c == ')' && --depth < 0) fail("unbalanced parenthesis in section");
      ++pos_;
    }
  }

  // nil = "NIL" (case-insensitive), not followed by more atom.
  bool accept_nil() {
    if (pos_ + 3 <= end_ && (raw_[pos_] | 0x20) == 'n' && (raw_[pos_ + 1] | 0x20) == 'i' &&
        (raw_[pos_ + 2] | 0x20) == 'l' && (pos_ + 3 == end_ || !kAtomChar[uc(raw_[pos_ + 3])])) {
      pos_ += 3;
      return true;
    }
    return false;
  }

  std::string_view view(size_t from, size_t to) const { return raw_.substr(from, to - from); }

 private:
  uint64_t digits(uint64_t max) {
    const size_t start = pos_;
    uint64_t v = 0;
    while (pos_ < end_ && is_digit(raw_[pos_])) {
      const auto d = static_cast<uint64_t>(raw_[pos_] - '0');
      // Checked before multiplying: v * 10 itself may wrap past 2^64.
      if (v > (max - d) / 10) fail_at(start, "number out of range");
      v = v * 10 + d;
      ++pos_;
    }
    if (pos_ == start) fail("expected number");
    return v;
  }

  // quoted = DQUOTE *QUOTED-CHAR DQUOTE; QUOTED-CHAR = <any TEXT-CHAR
  // except quoted-specials> / "\" quoted-specials (RFC 3501 9).
  void quoted(StringToken& t) {
    const size_t open = pos_++;
    const size_t start = pos_;
    for (;;) {
      if (pos_ >= end_) fail_at(open, "unterminated quoted string");
      const char c = raw_[pos_];
      if (c == '"') break;
      if (c == '\\') {
        const int n = peek_at(1);
        if (n != '"' && n != '\\') fail("invalid escape in quoted string");
        t.escaped = true;
        pos_ += 2;
        continue;
      }
      if (c == '\r' || c == '\n' || c == '\0') fail("invalid character in quoted string");
      ++pos_;
    }
    t.kind = StringToken::Kind::Quoted;
    t.bytes = raw_.substr(start, pos_ - start);
    ++pos_;
  }

  // literal = "{" number "}" CRLF *CHAR8 (RFC 3501 9), pos_ on "{".
  void literal(StringToken& t) {
    const size_t open = pos_++;
    const size_t dstart = pos_;
    while (pos_ < end_ && is_digit(raw_[pos_])) ++pos_;
    uint64_t size = 0;
    if (pos_ == dstart || !parse_size(raw_.substr(dstart, pos_ - dstart), size)) fail("invalid literal size");
    if (!accept('}')) fail("expected \"}\" in literal");
    if (!(pos_ + 2 <= raw_.size() && raw_[pos_] == '\r' && raw_[pos_ + 1] == '\n'))
      fail("expected CRLF after literal size");
    pos_ += 2;
    // The framer always continues the line after a literal, so its bytes
    // end before the final CRLF.
    if (size > end_ - std::min(pos_, end_)) fail_at(open, "literal longer than the response");
    t.kind = StringToken::Kind::Literal;
    t.bytes = raw_.substr(pos_, size);
    pos_ += size;
  }

  std::string_view raw_;
  size_t end_;  // the final CRLF
  size_t pos_ = 0;
};

// ---------------------------------------------------------------------------
// Typed responses.

std::vector<std::string> flag_list(Lexer& lex, bool allow_star) {
  std::vector<std::string> flags;
  lex.expect('(', "expected \"(\"");
  for (bool first = true; lex.list_more(first); first = false) flags.emplace_back(lex.flag(allow_star));
  return flags;
}

// resp-text-code (RFC 3501 9, RFC 4315 3, RFC 7162 7), after "[".
ResponseCode response_code(Lexer& lex) {
  using Kind = ResponseCode::Kind;
  static constexpr std::pair<std::string_view, Kind> kCodes[] = {
      {"ALERT", Kind::Alert},
      {"CAPABILITY", Kind::Capability},
      {"UIDVALIDITY", Kind::UidValidity},
      {"UIDNEXT", Kind::UidNext},
      {"HIGHESTMODSEQ", Kind::HighestModSeq},
      {"NOMODSEQ", Kind::NoModSeq},
      {"PERMANENTFLAGS", Kind::PermanentFlags},
      {"APPENDUID", Kind::AppendUid},
      {"COPYUID", Kind::CopyUid},
      {"CLOSED", Kind::Closed},
      {"READ-ONLY", Kind::ReadOnly},
      {"READ-WRITE", Kind::ReadWrite},
      {"TRYCREATE", Kind::TryCreate},
  };
  ResponseCode code;
  code.name = to_upper(lex.atom());
  code.kind = Kind::Other;
  for (const auto& [name, kind] : kCodes)
    if (code.name == name) code.kind = kind;

  switch (code.kind) {
    case Kind::Capability:
      while (lex.accept(' ') && lex.peek() != ']') code.list.emplace_back(lex.atom());
      break;
    case Kind::UidValidity:
    case Kind::UidNext:
      lex.sp();
      code.number = lex.number32(true);
      break;
    case Kind::HighestModSeq:
      lex.sp();
      code.number = lex.number63();
      break;
    case Kind::PermanentFlags:
      lex.sp();
      code.list = flag_list(lex, true);
      break;
    case Kind::AppendUid:
      // RFC 4315 3: "APPENDUID" SP nz-number SP append-uid, where
      // append-uid is a uid-set after a MULTIAPPEND (RFC 3502).
      lex.sp();
      code.number = lex.number32(true);
      lex.sp();
      code.uids = lex.uid_set();
      break;
    case Kind::CopyUid:
      // RFC 4315 3: "COPYUID" SP nz-number SP uid-set SP uid-set
      lex.sp();
      code.number = lex.number32(true);
      lex.sp();
      code.source_uids = lex.uid_set();
      lex.sp();
      code.uids = lex.uid_set();
      break;
    case Kind::Other: {
      // atom [SP 1*<any TEXT-CHAR except "]">]
      if (lex.accept(' ')) code.raw = std::string(lex.until(']'));
      break;
    }
    default:
      break;  // codes without arguments
  }
  lex.expect(']', "expected \"]\" after response code");
  return code;
}


std::optional<StatusResponse::Kind> status_kind(std::string_view name) {
  using Kind = StatusResponse::Kind;
  if (iequals(name, "OK")) return Kind::Ok;
  if (iequals(name, "NO")) return Kind::No;
  if (iequals(name, "BAD")) return Kind::Bad;
  if (iequals(name, "BYE")) return Kind::Bye;
  if (iequals(name, "PREAUTH")) return Kind::Preauth;
  return std::nullopt;
}

// resp-text = ["[" resp-text-code "]" SP] text (RFC 3501 9), after the
// status atom.  Liberal: the text may be empty or missing ("A1 OK",
// "* OK [READ-WRITE]"), as several servers send.
void resp_text(Lexer& lex, StatusResponse& st) {
  if (lex.at_end()) return;
  lex.sp();
  if (lex.accept('[')) {
    st.code = response_code(lex);
    if (!lex.accept(' ')) {
      lex.expect_end();
      return;
    }
  }
  st.text = std::string(lex.rest());
}

// Space-separated atoms up to the end: CAPABILITY (RFC 3501 7.2.1) and
// ENABLED (RFC 5161 3.2).  A trailing space is tolerated.
std::vector<std::string> atom_list(Lexer& lex) {
  std::vector<std::string> atoms;
  while (lex.accept(' ')) {
    if (lex.at_end()) break;
    atoms.emplace_back(lex.atom());
  }
  lex.expect_end();
  return atoms;
}

// RFC 3501 7.2.2, RFC 5258 9 (mbox-list-extended), RFC 5465 5.4 (OLDNAME):
//   "LIST" SP "(" [mbx-list-flags] ")" SP (DQUOTE QUOTED-CHAR DQUOTE / nil)
//   SP mailbox [SP "(" [mbox-list-extended-item *(SP ...)] ")"]
ListData list_data(Lexer& lex, bool lsub) {
  ListData d;
  d.lsub = lsub;
  lex.sp();
  d.flags = flag_list(lex, false);
  lex.sp();
  const size_t delim_at = lex.pos();
  StringToken delim = lex.string_token(true, false, false, "expected hierarchy delimiter");
  if (delim.kind == StringToken::Kind::Quoted) {
    std::string s = Lexer::to_string(delim);
    if (s.size() != 1) lex.fail_at(delim_at, "invalid hierarchy delimiter");
    d.delimiter = s[0];
  } else if (delim.kind != StringToken::Kind::Nil) {
    lex.fail_at(delim_at, "invalid hierarchy delimiter");
  }
  lex.sp();
  d.mailbox = lex.astring(kMailboxChar);
  if (lex.accept(' ')) {
    lex.expect('(', "expected \"(\" before extended items");
    for (bool first = true; lex.list_more(first); first = false) {
      const std::string tag = lex.astring();
      lex.sp();
      if (iequals(tag, "CHILDINFO")) {
        // RFC 5258 9: childinfo-extended-item = "CHILDINFO" SP "(" list-select-base-opt-quoted ...")"
        lex.expect('(', "expected \"(\" after CHILDINFO");
        for (bool f = true; lex.list_more(f); f = false) d.childinfo.push_back(lex.astring());
      } else if (iequals(tag, "OLDNAME")) {
        // RFC 5465 5.4: "OLDNAME" SP "(" mailbox ")"
        lex.expect('(', "expected \"(\" after OLDNAME");
        d.oldname = lex.astring(kMailboxChar);
        lex.expect(')', "expected \")\" after OLDNAME mailbox");
      } else {
        lex.skip_value();
      }
    }
  }
  lex.expect_end();
  return d;
}

// RFC 3501 7.2.4, RFC 7162 3.1.3 (HIGHESTMODSEQ):
//   "STATUS" SP mailbox SP "(" [status-att-val *(SP status-att-val)] ")"
StatusData status_data(Lexer& lex) {
  StatusData d;
  lex.sp();
  d.mailbox = lex.astring(kMailboxChar);
  lex.sp();
  lex.expect('(', "expected \"(\" before status items");
  for (bool first = true; lex.list_more(first); first = false) {
    const std::string_view item = lex.atom();
    lex.sp();
    if (iequals(item, "MESSAGES")) {
      d.messages = lex.number32(false);
    } else if (iequals(item, "RECENT")) {
      d.recent = lex.number32(false);
    } else if (iequals(item, "UIDNEXT")) {
      d.uidnext = lex.number32(true);
    } else if (iequals(item, "UIDVALIDITY")) {
      d.uidvalidity = lex.number32(true);
    } else if (iequals(item, "UNSEEN")) {
      d.unseen = lex.number32(false);
    } else if (iequals(item, "HIGHESTMODSEQ")) {
      // RFC 7162 7: mod-sequence-valzer (0 when the mailbox has no
      // persistent mod-sequences)
      d.highestmodseq = lex.number63();
    } else {
      lex.skip_value();  // SIZE, APPENDLIMIT, MAILBOXID, DELETED, ...
    }
  }
  lex.expect_end();
  return d;
}

// env-from etc. = "(" 1*address ")" / nil;
// address = "(" addr-name SP addr-adl SP addr-mailbox SP addr-host ")"
// (RFC 3501 9).  The grammar puts no space between addresses; some servers
// do, so one is tolerated.
std::vector<Address> address_list(Lexer& lex) {
  std::vector<Address> out;
  if (lex.accept_nil()) return out;
  lex.expect('(', "expected address list or NIL");
  while (!lex.accept(')')) {
    if (!out.empty()) lex.accept(' ');
    lex.expect('(', "expected address");
    Address& a = out.emplace_back();
    a.name = lex.nstring();
    lex.sp();
    a.adl = lex.nstring();
    lex.sp();
    a.mailbox = lex.nstring();
    lex.sp();
    a.host = lex.nstring();
    lex.expect(')', "expected \")\" after address");
  }
  return out;
}

// RFC 3501 7.4.2 ENVELOPE; 9 "envelope".
Envelope envelope(Lexer& lex) {
  Envelope e;
  lex.expect('(', "expected \"(\" before envelope");
  e.date = lex.nstring();
  lex.sp();
  e.subject = lex.nstring();
  for (auto* list : {&e.from, &e.sender, &e.reply_to, &e.to, &e.cc, &e.bcc}) {
    lex.sp();
    *list = address_list(lex);
  }
  lex.sp();
  e.in_reply_to = lex.nstring();
  lex.sp();
  e.message_id = lex.nstring();
  lex.expect(')', "expected \")\" after envelope");
  return e;
}

// A FETCH item name: "UID", "BODY[HEADER.FIELDS (X)]<0>", "BINARY.SIZE[1]".
struct FetchItem {
  std::string_view name;
  bool has_section = false;
  std::string_view section;
  bool has_origin = false;
  uint32_t origin = 0;
};

FetchItem fetch_item(Lexer& lex) {
  // ATOM-CHAR includes "[": stop there to read the section.
  static constexpr auto kItemChar = make_table([](unsigned c) { return !is_atom_special(c) && c != '['; });
  FetchItem item;
  item.name = lex.run(kItemChar, "expected FETCH item");
  if (lex.accept('[')) {
    item.has_section = true;
    const size_t start = lex.pos();
    lex.skip_section();
    item.section = lex.view(start, lex.pos());
    lex.expect(']', "expected \"]\" after section");
    // RFC 3501 7.4.2: BODY[<section>]<<origin octet>>
    if (lex.accept('<')) {
      item.has_origin = true;
      item.origin = lex.number32(false);
      lex.expect('>', "expected \">\" after origin");
    }
  }
  return item;
}

// The items whose value is the whole message: BODY[] (or BODY[]<0>, a
// partial fetch from the start), BINARY[] (RFC 3516 4.2, literal8) and
// RFC822 (RFC 3501 7.4.2).  BODY.PEEK[] is never sent back by a compliant
// server (7.4.2 says BODY[]), but some echo it.
bool is_whole_message(const FetchItem& item) {
  if (!item.has_section) return iequals(item.name, "RFC822");
  return item.section.empty() && (!item.has_origin || item.origin == 0) &&
         (iequals(item.name, "BODY") || iequals(item.name, "BINARY") || iequals(item.name, "BODY.PEEK"));
}

// BODY[HEADER] or BODY[HEADER.FIELDS (...)] from the start (RFC 3501
// 6.4.5), which Mailbox::fetch_headers asks for; not HEADER.FIELDS.NOT.
bool is_header(const FetchItem& item) {
  if (!item.has_section || item.has_origin || !(iequals(item.name, "BODY") || iequals(item.name, "BODY.PEEK")))
    return false;
  if (iequals(item.section, "HEADER")) return true;
  constexpr std::string_view kFields = "HEADER.FIELDS ";
  return item.section.size() > kFields.size() && iequals(item.section.substr(0, kFields.size()), kFields);
}

// RFC 3501 7.4.2: nz-number SP "FETCH" SP "(" msg-att ")", after "FETCH".
FetchData fetch_data(Lexer& lex, uint32_t seq) {
  FetchData d;
  d.seq = seq;
  lex.sp();
  lex.expect('(', "expected \"(\" after FETCH");
  for (bool first = true; lex.list_more(first); first = false) {
    const FetchItem item = fetch_item(lex);
    lex.sp();
    if (is_whole_message(item)) {
      const StringToken t = lex.string_token(true, true, true, "expected message body");
      d.body_streamed = t.kind == StringToken::Kind::Streamed;
      d.body = (t.kind == StringToken::Kind::Quoted || t.kind == StringToken::Kind::Literal)
                   ? Lexer::to_string(t)
                   : std::string();
    } else if (is_header(item)) {
      d.header = lex.nstring().value_or(std::string());
    } else if (item.has_section) {
      lex.skip_value();  // BODY[1.MIME], BINARY.SIZE[], BODY[]<100>, ...
    } else if (iequals(item.name, "UID")) {
      d.uid = lex.number32(true);
    } else if (iequals(item.name, "FLAGS")) {
      d.flags = flag_list(lex, false);
    } else if (iequals(item.name, "MODSEQ")) {
      // RFC 7162 3.1.4.1: "MODSEQ" SP "(" permsg-modsequence ")"
      lex.expect('(', "expected \"(\" after MODSEQ");
      d.modseq = lex.number63();
      lex.expect(')', "expected \")\" after MODSEQ value");
    } else if (iequals(item.name, "INTERNALDATE")) {
      d.internaldate = lex.string();
    } else if (iequals(item.name, "RFC822.SIZE")) {
      // "number" in RFC 3501, "number64" in RFC 9051: take 63 bits.
      d.size = lex.number63();
    } else if (iequals(item.name, "ENVELOPE")) {
      d.envelope = envelope(lex);
    } else {
      lex.skip_value();  // BODYSTRUCTURE, BODY, X-GM-*, EMAILID, SAVEDATE, ...
    }
  }
  lex.expect_end();
  return d;
}

// RFC 3501 7.2.5, RFC 7162 3.1.5: "SEARCH" *(SP nz-number)
// [SP "(" "MODSEQ" SP mod-sequence-value ")"].  Some servers end an empty
// result with a space ("* SEARCH "); tolerated.
SearchData search_data(Lexer& lex) {
  SearchData d;
  while (lex.accept(' ')) {
    if (lex.at_end()) break;
    if (lex.accept('(')) {
      const size_t at = lex.pos();
      if (!iequals(lex.atom(), "MODSEQ")) lex.fail_at(at, "expected MODSEQ");
      lex.sp();
      d.modseq = lex.number63();
      lex.expect(')', "expected \")\" after MODSEQ value");
      break;
    }
    d.numbers.push_back(lex.number32(true));
  }
  lex.expect_end();
  return d;
}

// RFC 4731 3.1: "ESEARCH" [search-correlator] [SP "UID"] *(SP search-return-data)
//   search-correlator = SP "(" "TAG" SP tag-string ")"
// RFC 7162 3.1.5 adds MODSEQ.  Unknown return data (search-ret-data-ext:
// name SP value) is skipped.
EsearchData esearch_data(Lexer& lex) {
  EsearchData d;
  bool first = true;
  while (lex.accept(' ')) {
    if (lex.at_end()) break;
    if (first && lex.accept('(')) {
      const size_t at = lex.pos();
      if (!iequals(lex.atom(), "TAG")) lex.fail_at(at, "expected TAG");
      lex.sp();
      d.tag = lex.string();
      lex.expect(')', "expected \")\" after search correlator");
      first = false;
      continue;
    }
    first = false;
    const std::string_view name = lex.atom();
    if (iequals(name, "UID")) {
      d.uid = true;
      continue;
    }
    lex.sp();
    if (iequals(name, "MIN")) {
      d.min = lex.number32(true);
    } else if (iequals(name, "MAX")) {
      d.max = lex.number32(true);
    } else if (iequals(name, "COUNT")) {
      d.count = lex.number32(false);
    } else if (iequals(name, "ALL")) {
      d.all = lex.uid_set();
    } else if (iequals(name, "MODSEQ")) {
      d.modseq = lex.number63();
    } else {
      lex.skip_value();
    }
  }
  lex.expect_end();
  return d;
}

// RFC 7162 3.2.10: "VANISHED" [SP "(EARLIER)"] SP known-uids
VanishedData vanished_data(Lexer& lex) {
  VanishedData d;
  lex.sp();
  if (lex.accept('(')) {
    const size_t at = lex.pos();
    if (!iequals(lex.atom(), "EARLIER")) lex.fail_at(at, "expected EARLIER");
    lex.expect(')', "expected \")\" after EARLIER");
    lex.sp();
    d.earlier = true;
  }
  d.uids = lex.uid_set();
  lex.expect_end();
  return d;
}

using ResponseData = decltype(Response::data);

// RFC 3501 7: response-data = "*" SP (resp-cond-state / resp-cond-bye /
// mailbox-data / message-data / capability-data) CRLF, after "* ".
ResponseData untagged(Lexer& lex, std::string_view raw) {
  if (is_digit(lex.peek())) {
    // message-data = nz-number SP ("EXPUNGE" / ("FETCH" SP msg-att)), and
    // mailbox-data's number SP "EXISTS" / number SP "RECENT".
    const size_t num_at = lex.pos();
    const uint32_t n = lex.number32(false);
    lex.sp();
    const std::string_view name = lex.atom();
    if (iequals(name, "FETCH")) {
      if (n == 0) lex.fail_at(num_at, "expected non-zero number");
      return fetch_data(lex, n);
    }
    if (iequals(name, "EXISTS")) {
      lex.expect_end();
      return ExistsData{n};
    }
    if (iequals(name, "EXPUNGE")) {
      if (n == 0) lex.fail_at(num_at, "expected non-zero number");
      lex.expect_end();
      return ExpungeData{n};
    }
    if (iequals(name, "RECENT")) {
      lex.expect_end();
      return RecentData{n};
    }
    return OtherData{to_upper(name), std::string(raw)};
  }

  const std::string_view name = lex.atom();
  if (auto kind = status_kind(name)) {
    // resp-cond-state, resp-cond-bye, resp-cond-auth (PREAUTH greeting)
    StatusResponse st;
    st.kind = *kind;
    resp_text(lex, st);
    return st;
  }
  if (iequals(name, "LIST")) return list_data(lex, false);
  if (iequals(name, "LSUB")) return list_data(lex, true);
  if (iequals(name, "STATUS")) return status_data(lex);
  if (iequals(name, "VANISHED")) return vanished_data(lex);
  if (iequals(name, "SEARCH")) return search_data(lex);
  if (iequals(name, "ESEARCH")) return esearch_data(lex);
  if (iequals(name, "FLAGS")) {
    lex.sp();
    FlagsData d{flag_list(lex, false)};
    lex.expect_end();
    return d;
  }
  if (iequals(name, "CAPABILITY")) return CapabilityData{atom_list(lex)};
  if (iequals(name, "ENABLED")) return EnabledData{atom_list(lex)};
  return OtherData{to_upper(name), std::string(raw)};
}

}  // namespace

// ---------------------------------------------------------------------------

Response parse_response(std::string_view raw) {
  if (raw.size() < 2 || raw[raw.size() - 2] != '\r' || raw[raw.size() - 1] != '\n')
    throw ProtocolError(fmt::format("malformed response at offset {}: expected CRLF: \"{}\"", raw.size(),
                                    describe_response(raw)));
  Lexer lex(raw);
  Response r;
  if (lex.accept('+')) {
    // RFC 3501 7.5: continue-req = "+" SP (resp-text / base64) CRLF.  Some
    // servers send a bare "+" when there is no text.
    r.type = Response::Type::Continuation;
    lex.accept(' ');
    r.data = ContinuationData{std::string(lex.rest())};
    return r;
  }
  if (lex.accept('*')) {
    r.type = Response::Type::Untagged;
    lex.sp();
    r.data = untagged(lex, raw);
    return r;
  }
  // RFC 3501 9: response-tagged = tag SP resp-cond-state CRLF;
  // tag = 1*<any ASTRING-CHAR except "+">
  static constexpr auto kTagChar = make_table([](unsigned c) { return kAstringChar[c] && c != '+'; });
  r.type = Response::Type::Tagged;
  r.tag = std::string(lex.run(kTagChar, "expected tag"));
  lex.sp();
  const size_t at = lex.pos();
  const auto kind = status_kind(lex.atom());
  if (!kind || *kind == StatusResponse::Kind::Bye || *kind == StatusResponse::Kind::Preauth)
    lex.fail_at(at, "expected OK, NO or BAD");
  StatusResponse st;
  st.kind = *kind;
  resp_text(lex, st);
  r.data = std::move(st);
  return r;
}

std::string describe_response(std::string_view raw, size_t max) {
  if (raw.size() >= 2 && raw.substr(raw.size() - 2) == "\r\n")
    raw.remove_suffix(2);
  else if (!raw.empty() && raw.back() == '\n')
    raw.remove_suffix(1);
  std::string out;
  out.reserve(std::min(raw.size(), max) + 8);
  for (size_t i = 0; i < raw.size();) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    const char c = raw[i];
    if (c == '{' || (c == '~' && i + 1 < raw.size() && raw[i + 1] == '{')) {
      // A literal: keep "{N}", elide the CRLF and the N bytes.
      size_t j = i + (c == '~' ? 2 : 1);
      const size_t dstart = j;
      while (j < raw.size() && is_digit(raw[j]) && j - dstart <= kMaxSizeDigits) ++j;
      uint64_t size = 0;
      if (j > dstart && j + 3 <= raw.size() && raw[j] == '}' && raw[j + 1] == '\r' && raw[j + 2] == '\n' &&
          parse_size(raw.substr(dstart, j - dstart), size) && size <= raw.size() - (j + 3)) {
        out.append(raw.substr(i, j + 1 - i));
        out += "...";
        i = j + 3 + static_cast<size_t>(size);
        continue;
      }
    }
    if (c == kStreamedLiteral) {
      out += "{streamed}";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (uc(c) < 0x20 || uc(c) >= 0x7f) {
      out += fmt::format("\\x{:02x}", uc(c));
    } else {
      out += c;
    }
    ++i;
  }
  return out;
}

bool is_body_literal(std::string_view line) {
  uint64_t size = 0;
  const auto start = find_literal_header(line, 0, size);
  if (!start || *start == 0 || line[*start - 1] != ' ') return false;
  // "* " nz-number SP "FETCH" SP "(" (RFC 3501 7.4.2)
  size_t i = 2;
  if (!line.starts_with("* ")) return false;
  while (i < line.size() && is_digit(line[i])) ++i;
  if (i == 2 || !iequals(line.substr(i, 8), " FETCH (")) return false;
  const std::string_view head = line.substr(0, *start - 1);
  for (std::string_view item : {"BODY[]", "BODY[]<0>", "BINARY[]", "BINARY[]<0>", "RFC822", "BODY.PEEK[]"}) {
    if (head.size() > item.size() && iends_with(head, item)) {
      const char before = head[head.size() - item.size() - 1];
      if (before == ' ' || before == '(') return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------
// ResponseReader

namespace {
// A finished response's buffer is copied out (keeping current_'s capacity
// for the next one) unless it grew past this, when it is moved out so a
// large non-streamed literal does not pin its memory.
constexpr size_t kKeepCapacity = 64 * 1024;
}  // namespace

void ResponseReader::feed(std::string_view bytes) {
  while (!bytes.empty()) {
    if (state_ == State::Literal) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(literal_left_, bytes.size()));
      if (sink_ != nullptr)
        sink_->data(bytes.substr(0, n));
      else
        current_.append(bytes.data(), n);
      literal_left_ -= n;
      bytes.remove_prefix(n);
      if (literal_left_ == 0) end_literal();
      continue;
    }
    // Only the new bytes are searched, so the cost is linear in the input
    // whatever the split.
    const auto* lf = static_cast<const char*>(std::memchr(bytes.data(), '\n', bytes.size()));
    const size_t n = lf != nullptr ? static_cast<size_t>(lf - bytes.data()) + 1 : bytes.size();
    if (n > max_line_ - std::min(current_.size(), max_line_)) too_long();
    current_.append(bytes.data(), n);
    bytes.remove_prefix(n);
    if (lf != nullptr) end_line();
  }
}

void ResponseReader::end_line() {
  // RFC 3501 2.2: lines end with CRLF.  A bare LF is accepted as a line end
  // (liberal: some proxies and broken servers send one) and rewritten as
  // CRLF, so parse_response() and the literal header test see one form.
  // The byte before must belong to this line, not to a preceding literal.
  const size_t lf = current_.size() - 1;
  if (lf == line_start_ || current_[lf - 1] != '\r') {
    current_.back() = '\r';
    current_ += '\n';
  }

  uint64_t size = 0;
  // RFC 3501 4.3, RFC 3516 4.2: a line ending in "{N}" / "~{N}" goes on
  // with N bytes of literal and then more line.
  if (const auto header = find_literal_header(current_, line_start_, size)) {
    LiteralSink* sink = chooser_ ? chooser_(current_, size) : nullptr;
    if (sink != nullptr) {
      // The header goes too: the marker stands where the string would be.
      current_.resize(*header);
      current_ += kStreamedLiteral;
      sink_ = sink;
      sink->begin(size);
    } else if (current_.size() > max_line_ || size > max_line_ - current_.size()) {
      throw ProtocolError(fmt::format("response longer than {} bytes (literal of {} bytes): \"{}\"", max_line_,
                                      size, describe_response(std::string_view(current_).substr(0, 256))));
    }
    literal_left_ = size;
    if (size == 0)
      end_literal();
    else
      state_ = State::Literal;
    return;
  }

  if (current_.capacity() > kKeepCapacity) {
    ready_.push_back(std::move(current_));
    current_ = std::string();
  } else {
    ready_.emplace_back(current_);
    current_.clear();
  }
  line_start_ = 0;
}

void ResponseReader::end_literal() {
  state_ = State::Line;
  line_start_ = current_.size();
  if (LiteralSink* sink = std::exchange(sink_, nullptr)) sink->end();
}

void ResponseReader::too_long() const {
  throw ProtocolError(fmt::format("response longer than {} bytes: \"{}\"", max_line_,
                                  describe_response(std::string_view(current_).substr(0, 256))));
}

std::optional<std::string> ResponseReader::next() {
  if (ready_.empty()) return std::nullopt;
  std::string r = std::move(ready_.front());
  ready_.pop_front();
  return r;
}

bool ResponseReader::idle() const { return state_ == State::Line && current_.empty(); }

}  // namespace interimap::detail::imap
