// Tables of values in -> bytes out for the IMAP command builder.

#include "imap/command.hpp"

#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <vector>

using namespace std::string_literals;
using namespace interimap::detail::imap;

namespace {

using Chunks = std::vector<std::string>;

// Every recorded literal span must cover exactly the bytes of its value.
void check_spans(const Command& c, const std::vector<std::string>& values) {
  REQUIRE(c.literals.size() == values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const Command::Span& s = c.literals[i];
    REQUIRE(s.chunk < c.chunks.size());
    REQUIRE(s.offset + s.length <= c.chunks[s.chunk].size());
    CHECK(c.chunks[s.chunk].substr(s.offset, s.length) == values[i]);
  }
}

}  // namespace

TEST_CASE("command: astring picks atom, quoted string or literal") {
  const std::string long_quotable(1023, 'a');
  const std::string too_long(1024, 'a');
  const std::string long_spaced = std::string(1022, 'b') + " ";  // 1023 bytes: the longest quoted
  struct Row {
    std::string value;
    std::string out;  // the single chunk in Plus mode
  };
  const Row rows[] = {
      {"foo", "X foo\r\n"},
      {"INBOX.Sent", "X INBOX.Sent\r\n"},
      {"foo]bar", "X foo]bar\r\n"},                  // "]" is an ASTRING-CHAR (RFC 3501 9)
      {"&AOk-t&AOk-", "X &AOk-t&AOk-\r\n"},          // modified UTF-7 is all atom chars
      {"NIL", "X NIL\r\n"},                          // an astring atom, not nil
      {"a+b=c~d!#$&'-./:;<=>?@^_`|", "X a+b=c~d!#$&'-./:;<=>?@^_`|\r\n"},
      {"", "X \"\"\r\n"},
      {"a b", "X \"a b\"\r\n"},
      {"[Gmail]/Sent Mail", "X \"[Gmail]/Sent Mail\"\r\n"},
      {"a%", "X \"a%\"\r\n"},
      {"a*", "X \"a*\"\r\n"},
      {"(", "X \"(\"\r\n"},
      {")", "X \")\"\r\n"},
      {"{", "X \"{\"\r\n"},
      {"a\tb", "X \"a\tb\"\r\n"},
      {"\x7f", "X \"\x7f\"\r\n"},
      {"say \"hi\"", "X \"say \\\"hi\\\"\"\r\n"},
      {"back\\slash", "X \"back\\\\slash\"\r\n"},
      {long_quotable, "X " + long_quotable + "\r\n"},
      {long_spaced, "X \"" + long_spaced + "\"\r\n"},
      {too_long, "X " + too_long + "\r\n"},  // an atom is never too long
      {long_quotable + " ", "X {1024+}\r\n" + long_quotable + " \r\n"},  // 1024 bytes: past the quoted bound
      {too_long + " ", "X {1025+}\r\n" + too_long + " \r\n"},
      {"a\r\nb", "X {4+}\r\na\r\nb\r\n"},
      {"line\n", "X {5+}\r\nline\n\r\n"},
      {"cr\r", "X {3+}\r\ncr\r\r\n"},
      {"caf\xc3\xa9", "X {5+}\r\ncaf\xc3\xa9\r\n"},
      {"nul\0x"s, "X {5+}\r\nnul\0x\r\n"s},
  };
  for (const Row& row : rows) {
    CAPTURE(row.value);
    const Command c = CommandBuilder("X", LiteralMode::Plus).astring(row.value).build();
    CHECK(c.chunks == Chunks{row.out});
    CHECK(c.literals.size() == (row.out.find("+}\r\n") != std::string::npos ? 1U : 0U));
  }
}

TEST_CASE("command: string is never an atom") {
  const std::pair<std::string, std::string> rows[] = {
      {"foo", "SEARCH \"foo\"\r\n"},
      {"", "SEARCH \"\"\r\n"},
      {"a\"b", "SEARCH \"a\\\"b\"\r\n"},
      {"\xe2\x82\xac", "SEARCH {3}\r\n"},
  };
  for (const auto& row : rows) {
    const auto& [value, first] = row;
    CAPTURE(row.first);
    const Command c = CommandBuilder("SEARCH").string(value).build();
    CHECK(c.chunks[0] == first);
  }
}

TEST_CASE("command: quote") {
  CHECK(quote("") == "\"\"");
  CHECK(quote("abc") == "\"abc\"");
  CHECK(quote("a\"b") == "\"a\\\"b\"");
  CHECK(quote("a\\b") == "\"a\\\\b\"");
  CHECK(quote("\\\"") == "\"\\\\\\\"\"");
}

TEST_CASE("command: literal modes and chunks") {
  const std::string small = "hello";
  const std::string big(4097, 'z');
  const std::string limit(4096, 'y');
  struct Row {
    LiteralMode mode;
    std::string value;
    Chunks chunks;
    size_t span_chunk, span_offset;
  };
  const Row rows[] = {
      {LiteralMode::Sync, small, {"APPEND INBOX (\\Seen) {5}\r\n", "hello\r\n"}, 1, 0},
      {LiteralMode::Plus, small, {"APPEND INBOX (\\Seen) {5+}\r\nhello\r\n"}, 0, 27},
      {LiteralMode::Minus, small, {"APPEND INBOX (\\Seen) {5+}\r\nhello\r\n"}, 0, 27},
      // RFC 7888 5: LITERAL- allows {N+} up to 4096 bytes only.
      {LiteralMode::Minus, limit, {"APPEND INBOX (\\Seen) {4096+}\r\n" + limit + "\r\n"}, 0, 30},
      {LiteralMode::Minus, big, {"APPEND INBOX (\\Seen) {4097}\r\n", big + "\r\n"}, 1, 0},
      {LiteralMode::Plus, big, {"APPEND INBOX (\\Seen) {4097+}\r\n" + big + "\r\n"}, 0, 30},
      {LiteralMode::Sync, "", {"APPEND INBOX (\\Seen) {0}\r\n", "\r\n"}, 1, 0},
  };
  for (const Row& row : rows) {
    CAPTURE(static_cast<int>(row.mode));
    CAPTURE(row.value.size());
    const Command c = CommandBuilder("APPEND", row.mode).mailbox("inbox").raw("(\\Seen)").literal(row.value).build();
    CHECK(c.name == "APPEND");
    CHECK(c.chunks == row.chunks);
    REQUIRE(c.literals.size() == 1);
    CHECK(c.literals[0].chunk == row.span_chunk);
    CHECK(c.literals[0].offset == row.span_offset);
    CHECK(c.literals[0].length == row.value.size());
    check_spans(c, {row.value});
  }
}

TEST_CASE("command: several synchronizing literals split the command at each") {
  const std::string user = "us\xc3\xa9r";
  const std::string pass = "p\"a\nss\0"s;
  const Command c = CommandBuilder("LOGIN").astring(user).astring(pass).sensitive().build();
  CHECK(c.name == "LOGIN");
  CHECK(c.sensitive);
  CHECK(c.chunks == Chunks{"LOGIN {5}\r\n", user + " {7}\r\n", pass + "\r\n"});
  check_spans(c, {user, pass});

  // With LITERAL+ the same command is one chunk.
  const Command p = CommandBuilder("LOGIN", LiteralMode::Plus).astring(user).astring(pass).sensitive().build();
  CHECK(p.chunks == Chunks{"LOGIN {5+}\r\n" + user + " {7+}\r\n" + pass + "\r\n"});
  check_spans(p, {user, pass});

  // Text after a literal goes into the chunk that starts with its bytes.
  const Command m = CommandBuilder("APPEND", LiteralMode::Sync)
                        .mailbox("a b")
                        .literal("one")
                        .raw("(\\Flagged)")
                        .literal("two\r\n")
                        .build();
  CHECK(m.chunks == Chunks{"APPEND \"a b\" {3}\r\n", "one (\\Flagged) {5}\r\n", "two\r\n\r\n"});
  check_spans(m, {"one", "two\r\n"});
}

TEST_CASE("command: a moved non-synchronizing literal is a chunk of its own, sent inline") {
  auto joined = [](const Command& c) {
    std::string all;
    for (const auto& chunk : c.chunks) all += chunk;
    return all;
  };
  std::string one = "one\r\n", two(5000, 'x');
  const Command p = CommandBuilder("APPEND", LiteralMode::Plus)
                        .mailbox("INBOX")
                        .raw("(\\Seen)")
                        .literal_moved(std::move(one))
                        .raw("()")
                        .literal_moved(std::string(two))
                        .build();
  CHECK(p.chunks == Chunks{"APPEND INBOX (\\Seen) {5+}\r\n", "one\r\n", " () {5000+}\r\n", two, "\r\n"});
  CHECK(p.inline_chunks == std::vector<size_t>{1, 2, 3, 4});
  for (size_t i = 0; i < p.chunks.size(); ++i) CHECK_FALSE(p.waits(i));
  check_spans(p, {"one\r\n", two});
  // The bytes on the wire are those of the copying form.
  const Command c =
      CommandBuilder("APPEND", LiteralMode::Plus).mailbox("INBOX").raw("(\\Seen)").literal("one\r\n").raw("()").literal(two).build();
  CHECK(joined(p) == joined(c));

  // LITERAL-: above 4096 bytes the literal waits for '+', as literal() does.
  const Command m = CommandBuilder("APPEND", LiteralMode::Minus)
                        .mailbox("INBOX")
                        .literal_moved("small"s)
                        .literal_moved(std::string(two))
                        .build();
  CHECK(m.chunks == Chunks{"APPEND INBOX {5+}\r\n", "small", " {5000}\r\n", two + "\r\n"});
  CHECK_FALSE(m.waits(1));
  CHECK_FALSE(m.waits(2));
  CHECK(m.waits(3));
}

TEST_CASE("command: literal8 for binary bodies (RFC 3516)") {
  const std::string body = "a\0b\xff\r\n"s;
  const Command s = CommandBuilder("APPEND", LiteralMode::Sync).mailbox("INBOX").literal(body, true).build();
  CHECK(s.chunks == Chunks{"APPEND INBOX ~{6}\r\n", body + "\r\n"});
  check_spans(s, {body});
  const Command p = CommandBuilder("APPEND", LiteralMode::Plus).mailbox("INBOX").literal(body, true).build();
  CHECK(p.chunks == Chunks{"APPEND INBOX ~{6+}\r\n" + body + "\r\n"});
  check_spans(p, {body});
  const Command m = CommandBuilder("APPEND", LiteralMode::Minus).mailbox("INBOX").literal(body, true).build();
  CHECK(m.chunks == p.chunks);
}

TEST_CASE("command: mailbox names, INBOX normalized") {
  const std::pair<std::string, std::string> rows[] = {
      {"INBOX", "SELECT INBOX\r\n"},
      {"inbox", "SELECT INBOX\r\n"},
      {"InBoX", "SELECT INBOX\r\n"},
      {"INBOX/foo", "SELECT INBOX/foo\r\n"},
      {"inbox.sub", "SELECT inbox.sub\r\n"},
      {"inbox2", "SELECT inbox2\r\n"},
      {"&AOk-t&AOk-", "SELECT &AOk-t&AOk-\r\n"},
      {"My Folder", "SELECT \"My Folder\"\r\n"},
      {"[Gmail]/Sent Mail", "SELECT \"[Gmail]/Sent Mail\"\r\n"},
      {"a\"b", "SELECT \"a\\\"b\"\r\n"},
  };
  for (const auto& row : rows) {
    const auto& [name, out] = row;
    CAPTURE(row.first);
    CHECK(CommandBuilder("SELECT").mailbox(name).build().chunks == Chunks{out});
  }
}

TEST_CASE("command: raw text, verbs and flags") {
  const Command c = CommandBuilder("UID FETCH").raw("1:5,7").raw("(UID FLAGS MODSEQ)").raw("(CHANGEDSINCE 42)").build();
  CHECK(c.name == "UID FETCH");
  CHECK(c.chunks == Chunks{"UID FETCH 1:5,7 (UID FLAGS MODSEQ) (CHANGEDSINCE 42)\r\n"});
  CHECK_FALSE(c.sensitive);
  CHECK(c.literals.empty());
  CHECK(CommandBuilder("NOOP").build().chunks == Chunks{"NOOP\r\n"});
}
