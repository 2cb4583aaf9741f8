// Fuzzes modified UTF-7 (libinterimap/util/utf7.hpp), the mailbox name
// encoding of RFC 3501 5.1.3, both ways, with the input as each side.
//
// Properties:
//  - utf8_to_mutf7 accepts exactly the valid UTF-8 (RFC 3629, checked here
//    by a validator of its own), gives printable ASCII, and
//    mutf7_to_utf8 maps the result back to the input;
//  - whatever mutf7_to_utf8 accepts is valid UTF-8, and utf8_to_mutf7 maps
//    it back to the same bytes (the encoding is canonical);
//  - std::invalid_argument is the only error.
#include "fuzz_util.hpp"

#include "util/utf7.hpp"

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

using interimap::detail::mutf7_to_utf8;
using interimap::detail::utf8_to_mutf7;

namespace {

// RFC 3629 4 (UTF8-octets), written out independently of the library.
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n;
    unsigned lo = 0x80, hi = 0xbf;  // bounds of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      if (c == 0xe0) lo = 0xa0;  // no overlong forms
      if (c == 0xed) hi = 0x9f;  // no surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      if (c == 0xf0) lo = 0x90;  // no overlong forms
      if (c == 0xf4) hi = 0x8f;  // nothing beyond U+10FFFF
    } else {
      return false;
    }
    if (s.size() - i - 1 < n) return false;
    for (size_t k = 1; k <= n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf)) return false;
    }
    i += n + 1;
  }
  return true;
}

bool printable_ascii(std::string_view s) {
  for (char c : s)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  // The input as UTF-8.
  const bool valid = valid_utf8(input);
  try {
    const std::string encoded = utf8_to_mutf7(input);
    FUZZ_CHECK(valid);
    FUZZ_CHECK(printable_ascii(encoded));
    FUZZ_CHECK(mutf7_to_utf8(encoded) == input);
  } catch (const std::invalid_argument&) {
    FUZZ_CHECK(!valid);
  }

  // The input as modified UTF-7.
  std::string decoded;
  try {
    decoded = mutf7_to_utf8(input);
  } catch (const std::invalid_argument&) {
    return 0;
  }
  FUZZ_CHECK(printable_ascii(input));
  FUZZ_CHECK(valid_utf8(decoded));
  FUZZ_CHECK(utf8_to_mutf7(decoded) == input);
  return 0;
}
