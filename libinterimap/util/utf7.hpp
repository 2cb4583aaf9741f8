// Modified UTF-7 for mailbox names (RFC 3501 5.1.3).
#pragma once

#include <string>
#include <string_view>

namespace interimap::detail {

// UTF-8 -> modified UTF-7, in canonical form (one shift per run of
// non-printable characters, "&" as "&-").  Throws std::invalid_argument on
// invalid UTF-8 (overlong forms, encoded surrogates, beyond U+10FFFF).
std::string utf8_to_mutf7(std::string_view utf8);
// Modified UTF-7 -> UTF-8.  Throws std::invalid_argument on malformed input
// (bytes outside printable ASCII, bad base64 or padding bits, unterminated
// shift, non-minimal encoding of printable ASCII, unpaired surrogates, two
// adjacent shifts).  Whatever it accepts, utf8_to_mutf7 maps back to the
// same bytes.
std::string mutf7_to_utf8(std::string_view mutf7);

}  // namespace interimap::detail
