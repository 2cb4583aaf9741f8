// The SMTP/LMTP data encoding (libinterimap/smtp): a table of messages and
// their bytes on the wire, after DATA (RFC 5321 4.5.2: CRLF line ends,
// dot-stuffing, CRLF "." CRLF) and after BDAT (RFC 3030: the same line
// ends, no dot-stuffing, no terminator), each input split at every byte.
#include "smtp/smtp_client.hpp"

#include "test_util.hpp"

#include <doctest/doctest.h>

#include <string>
#include <string_view>

using interimap::detail::smtp::DataEncoder;

namespace {

using namespace std::string_view_literals;

struct Case {
  std::string_view in;
  std::string_view data;  // after DATA
  std::string_view bdat;  // after BDAT
};

constexpr Case kCases[] = {
    {"", "\r\n.\r\n", "\r\n"},
    {"a", "a\r\n.\r\n", "a\r\n"},
    {"a\r\n", "a\r\n.\r\n", "a\r\n"},
    {"a\nb\n", "a\r\nb\r\n.\r\n", "a\r\nb\r\n"},
    {"a\rb", "a\r\nb\r\n.\r\n", "a\r\nb\r\n"},
    {".", "..\r\n.\r\n", ".\r\n"},
    {".\r\n", "..\r\n.\r\n", ".\r\n"},
    {"x\r\n.\r\ny", "x\r\n..\r\ny\r\n.\r\n", "x\r\n.\r\ny\r\n"},
    {"x\n..two\n.", "x\r\n...two\r\n..\r\n.\r\n", "x\r\n..two\r\n.\r\n"},
    {"caf\xc3\xa9\r\n\xff\x00z"sv, "caf\xc3\xa9\r\n\xff\x00z\r\n.\r\n"sv, "caf\xc3\xa9\r\n\xff\x00z\r\n"sv},
};

std::string encode(std::string_view in, size_t step, bool dot_stuffing) {
  DataEncoder encoder(dot_stuffing);
  std::string out;
  for (std::string_view piece : test_util::pieces(in, step)) encoder.encode(piece, out);
  encoder.finish(out);
  return out;
}

}  // namespace

TEST_CASE("DATA and BDAT encodings, every split") {
  for (const Case& c : kCases) {
    for (size_t step = 1; step <= c.in.size() + 1; ++step) {
      CAPTURE(std::string(c.in));
      CAPTURE(step);
      CHECK(encode(c.in, step, true) == c.data);
      CHECK(encode(c.in, step, false) == c.bdat);
    }
  }
}

TEST_CASE("an encoder is reusable after finish()") {
  DataEncoder encoder(false);
  std::string out;
  encoder.encode(".a\n", out);
  encoder.finish(out);
  encoder.encode("b", out);
  encoder.finish(out);
  CHECK(out == ".a\r\nb\r\n");
}
