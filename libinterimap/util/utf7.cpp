#include "util/utf7.hpp"

#include <array>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

namespace interimap::detail {

namespace {

// RFC 3501 5.1.3: modified BASE64 is RFC 2045 base64 with ',' in place of '/'
// and without '=' padding.
constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

constexpr std::array<int8_t, 256> make_decode_table() {
  std::array<int8_t, 256> table{};
  for (auto& v : table) {
    v = -1;
  }
  for (size_t i = 0; i < kAlphabet.size(); ++i) {
    table[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int8_t>(i);
  }
  return table;
}
constexpr std::array<int8_t, 256> kDecode = make_decode_table();

// RFC 3501 5.1.3: "printable US-ASCII characters, except for '&', represent
// themselves"; everything else goes through a base64 shift.
bool represents_itself(uint32_t c) { return c >= 0x20 && c <= 0x7e; }

[[noreturn]] void invalid(std::string_view what, std::string_view input, size_t offset) {
  throw std::invalid_argument(fmt::format("{} at offset {} in \"{}\"", what, offset, input));
}

// Decodes the UTF-8 sequence at `pos` (RFC 3629 3: shortest form only, no
// surrogates, at most U+10FFFF) and advances `pos` past it.
uint32_t next_code_point(std::string_view s, size_t& pos) {
  const size_t start = pos;
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char b0 = byte(pos);
  if (b0 < 0x80) {
    ++pos;
    return b0;
  }
  size_t len = 0;
  uint32_t cp = 0, min = 0;
  if ((b0 & 0xe0) == 0xc0) {
    len = 2, cp = b0 & 0x1f, min = 0x80;
  } else if ((b0 & 0xf0) == 0xe0) {
    len = 3, cp = b0 & 0x0f, min = 0x800;
  } else if ((b0 & 0xf8) == 0xf0) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    invalid("invalid UTF-8 lead byte", s, start);
  }
  if (s.size() - pos < len) {
    invalid("truncated UTF-8 sequence", s, start);
  }
  for (size_t i = 1; i < len; ++i) {
    const unsigned char b = byte(pos + i);
    if ((b & 0xc0) != 0x80) {
      invalid("invalid UTF-8 continuation byte", s, start + i);
    }
    cp = (cp << 6) | (b & 0x3f);
  }
  if (cp < min) {
    invalid("overlong UTF-8 sequence", s, start);
  }
  if (cp >= 0xd800 && cp <= 0xdfff) {
    invalid("UTF-8 encoded surrogate", s, start);
  }
  if (cp > 0x10ffff) {
    invalid("code point beyond U+10FFFF", s, start);
  }
  pos += len;
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// Base64-encodes UTF-16BE units (RFC 3501 5.1.3: "modified UTF-7 [is] UTF-16
// ... encoded in modified BASE64"), without padding.
void append_shift(std::string& out, const std::vector<uint16_t>& units) {
  out += '&';
  uint32_t bits = 0;
  int nbits = 0;
  for (uint16_t u : units) {
    bits = (bits << 16) | u;
    nbits += 16;
    while (nbits >= 6) {
      nbits -= 6;
      out += kAlphabet[(bits >> nbits) & 0x3f];
    }
    bits &= (1u << nbits) - 1;
  }
  if (nbits > 0) {
    // RFC 2152: the last character is padded with zero bits.
    out += kAlphabet[(bits << (6 - nbits)) & 0x3f];
  }
  out += '-';
}

}  // namespace

std::string utf8_to_mutf7(std::string_view utf8) {
  std::string out;
  out.reserve(utf8.size());
  std::vector<uint16_t> units;  // the pending run of non-printable characters
  size_t pos = 0;
  while (pos < utf8.size()) {
    const uint32_t cp = next_code_point(utf8, pos);
    if (represents_itself(cp)) {
      // A maximal run of other characters goes into a single shift, which
      // keeps the encoding canonical (and mutf7_to_utf8 rejects adjacent shifts).
      if (!units.empty()) {
        append_shift(out, units);
        units.clear();
      }
      out += static_cast<char>(cp);
      if (cp == '&') {
        out += '-';  // RFC 3501 5.1.3: "&" is represented by "&-"
      }
    } else if (cp >= 0x10000) {
      // RFC 2781 2.1: code points beyond the BMP become surrogate pairs.
      const uint32_t v = cp - 0x10000;
      units.push_back(static_cast<uint16_t>(0xd800 | (v >> 10)));
      units.push_back(static_cast<uint16_t>(0xdc00 | (v & 0x3ff)));
    } else {
      units.push_back(static_cast<uint16_t>(cp));
    }
  }
  if (!units.empty()) {
    append_shift(out, units);
  }
  return out;
}

std::string mutf7_to_utf8(std::string_view mutf7) {
  std::string out;
  out.reserve(mutf7.size());
  size_t pos = 0;
  bool after_shift = false;  // the previous character closed a base64 shift
  while (pos < mutf7.size()) {
    const auto c = static_cast<unsigned char>(mutf7[pos]);
    if (c != '&') {
      // RFC 3501 5.1.3: only printable US-ASCII appears in modified UTF-7.
      if (!represents_itself(c)) {
        invalid(fmt::format("invalid byte 0x{:02x}", c), mutf7, pos);
      }
      out += static_cast<char>(c);
      ++pos;
      after_shift = false;
      continue;
    }
    const size_t start = pos++;
    if (pos < mutf7.size() && mutf7[pos] == '-') {
      out += '&';
      ++pos;
      after_shift = false;
      continue;
    }
    // Two adjacent shifts would encode the same name as one: only the
    // canonical (single-shift) form round-trips through utf8_to_mutf7.
    if (after_shift) {
      invalid("non-canonical adjacent base64 shifts", mutf7, start);
    }
    uint32_t bits = 0;
    int nbits = 0;
    uint16_t high = 0;  // a pending high surrogate, or 0
    while (true) {
      if (pos >= mutf7.size()) {
        invalid("unterminated base64 shift", mutf7, start);
      }
      const char d = mutf7[pos];
      if (d == '-') {
        break;
      }
      const int8_t v = kDecode[static_cast<unsigned char>(d)];
      if (v < 0) {
        invalid(fmt::format("invalid base64 character '{}'", d), mutf7, pos);
      }
      bits = (bits << 6) | static_cast<uint32_t>(v);
      nbits += 6;
      if (nbits >= 16) {
        nbits -= 16;
        const auto unit = static_cast<uint16_t>(bits >> nbits);
        bits &= (1u << nbits) - 1;
        if (high != 0) {
          // RFC 2781 2.2: a high surrogate must be followed by a low one.
          if (unit < 0xdc00 || unit > 0xdfff) {
            invalid("unpaired high surrogate", mutf7, pos);
          }
          append_utf8(out, 0x10000 + ((uint32_t{high} - 0xd800) << 10) + (unit - 0xdc00));
          high = 0;
        } else if (unit >= 0xd800 && unit <= 0xdbff) {
          high = unit;
        } else if (unit >= 0xdc00 && unit <= 0xdfff) {
          invalid("unpaired low surrogate", mutf7, pos);
        } else if (represents_itself(unit)) {
          // RFC 3501 5.1.3: "modified BASE64 MUST NOT be used to represent
          // any printing US-ASCII character which can represent itself."
          invalid(fmt::format("base64-encoded printable ASCII '{}'", static_cast<char>(unit)), mutf7, pos);
        } else {
          append_utf8(out, unit);
        }
      }
      ++pos;
    }
    if (high != 0) {
      invalid("unpaired high surrogate", mutf7, pos);
    }
    // RFC 2152: fewer than 6 leftover bits, all zero; more means a stray
    // character that cannot complete a UTF-16 unit.
    if (nbits >= 6 || bits != 0) {
      invalid("bad base64 padding", mutf7, pos);
    }
    ++pos;  // the closing '-'
    after_shift = true;
  }
  return out;
}

}  // namespace interimap::detail
