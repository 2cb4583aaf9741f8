// Modified UTF-7 (RFC 3501 5.1.3) both ways.
#include "util/utf7.hpp"

#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

using interimap::detail::mutf7_to_utf8;
using interimap::detail::utf8_to_mutf7;

namespace {

struct Pair {
  std::string utf8;
  std::string mutf7;
};

// Canonical pairs: each side maps exactly onto the other.
const Pair kPairs[] = {
    {"", ""},
    {"INBOX", "INBOX"},
    {"a b", "a b"},
    {" ~!\"#$%'()*+,-./:;<=>?@[\\]^_`{|}", " ~!\"#$%'()*+,-./:;<=>?@[\\]^_`{|}"},
    {"&", "&-"},
    {"&&", "&-&-"},
    {"A&B", "A&-B"},
    {"-&-", "-&--"},
    {"Entwürfe", "Entw&APw-rfe"},
    {"Gelöschte Elemente", "Gel&APY-schte Elemente"},
    {"Boîte d'envoi", "Bo&AO4-te d'envoi"},
    {"ä", "&AOQ-"},
    {"ää", "&AOQA5A-"},
    {"äöü", "&AOQA9gD8-"},
    {"ÿ", "&AP8-"},
    {"€", "&IKw-"},
    {"Отправленные", "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"},
    {"受信トレイ", "&U9dP4TDIMOwwpA-"},
    {"日本語", "&ZeVnLIqe-"},
    {"中文/測試", "&Ti1lhw-/&biyKZg-"},
    // The example of RFC 3501 5.1.3.
    {"~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"},
    // Beyond the BMP: surrogate pairs.
    {"😀", "&2D3eAA-"},
    {"a😀b", "a&2D3eAA-b"},
    {"📧 Mail", "&2D3c5w- Mail"},
    {"\U0010FFFF", "&2,,f,w-"},
    {"\uFFFF", "&,,8-"},
    // '&' between shifts, and a shift right after "&-".
    {"Ω&Ω", "&A6k-&-&A6k-"},
    {"ä&", "&AOQ-&-"},
    // Control characters are not printable: they are encoded.
    {std::string("\0", 1), "&AAA-"},
    {"tab\tx", "tab&AAk-x"},
    {"\x7f", "&AH8-"},
};

}  // namespace

TEST_CASE("modified UTF-7: canonical pairs both ways") {
  for (const auto& p : kPairs) {
    CAPTURE(p.utf8);
    CHECK(utf8_to_mutf7(p.utf8) == p.mutf7);
    CHECK(mutf7_to_utf8(p.mutf7) == p.utf8);
  }
}

TEST_CASE("modified UTF-7: round trip of every BMP code point and some astral ones") {
  // Encode each code point alone and between ASCII letters, then decode.
  auto utf8_of = [](uint32_t cp) {
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xc0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xe0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      s += static_cast<char>(0xf0 | (cp >> 18));
      s += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    }
    return s;
  };
  size_t failures = 0;
  for (uint32_t cp = 0; cp <= 0x10ffff; cp += (cp < 0x10000 ? 1 : 0x101)) {
    if (cp >= 0xd800 && cp <= 0xdfff) {
      continue;
    }
    // Built by appends: g++ 12 -O3 warns (-Wrestrict) on "x" + std::string.
    std::string text = "x";
    text += utf8_of(cp);
    text += utf8_of(cp);
    text += 'y';
    const std::string encoded = utf8_to_mutf7(text);
    for (char c : encoded) {
      if (c < 0x20 || c > 0x7e) {
        ++failures;
      }
    }
    if (mutf7_to_utf8(encoded) != text) {
      ++failures;
    }
  }
  CHECK(failures == 0);
}

TEST_CASE("utf8_to_mutf7 rejects invalid UTF-8") {
  const std::string cases[] = {
      "\x80",                  // lone continuation byte
      "a\xbf",                 //
      "\xc3",                  // truncated 2-byte sequence
      "\xe6\x97",              // truncated 3-byte sequence
      "\xf0\x9f\x98",          // truncated 4-byte sequence
      "\xc3(",                 // bad continuation byte
      "\xc0\xaf",              // overlong '/'
      "\xc1\xbf",              //
      "\xe0\x80\xaf",          // overlong 3-byte
      "\xf0\x80\x80\xaf",      // overlong 4-byte
      "\xed\xa0\x80",          // encoded high surrogate U+D800
      "\xed\xbf\xbf",          // encoded low surrogate U+DFFF
      "\xf4\x90\x80\x80",      // U+110000
      "\xf8\x88\x80\x80\x80",  // 5-byte form
      "\xff",                  //
      "\xfe",                  //
  };
  for (const auto& input : cases) {
    CAPTURE(input);
    CHECK_THROWS_AS(utf8_to_mutf7(input), std::invalid_argument);
  }
}

TEST_CASE("mutf7_to_utf8 rejects malformed input") {
  const std::string cases[] = {
      "&",              // unterminated shift
      "&AOQ",           // unterminated shift
      "abc&AOQ",        //
      "&AOQ=-",         // padding is not allowed
      "&AO/-",          // '/' is not in the modified alphabet
      "&AO Q-",         // blank inside a shift
      "&AOR-",          // non-zero padding bits
      "&AA-",           // 12 bits: not a UTF-16 unit
      "&AOQA-",         // a stray character after a complete unit
      "&AEE-",          // 'A' encoded: must represent itself
      "&ACA-",          // ' ' encoded
      "&ACY-",          // '&' encoded (must be "&-")
      "&AH4-",          // '~' encoded
      "&2D0-",          // lone high surrogate
      "&2D0AQQ-",       // high surrogate then 'A'-like unit (0x0041 is invalid anyway)
      "&2D0A5A-",       // high surrogate then a non-surrogate
      "&3gA-",          // lone low surrogate
      "&3gDYPQ-",       // low then high surrogate
      "&AOQ-&AOQ-",     // adjacent shifts (non-canonical "&AOQA5A-")
      "\xc3\xa4",       // raw 8-bit
      "Entw\xc3\xbcrfe",//
      "a\tb",           // control characters
      std::string("a\0b", 3),
      "\x7f",           //
  };
  for (const auto& input : cases) {
    CAPTURE(input);
    CHECK_THROWS_AS(mutf7_to_utf8(input), std::invalid_argument);
  }
}

TEST_CASE("mutf7_to_utf8 error messages quote the input and the offset") {
  try {
    mutf7_to_utf8("INBOX/&AEE-");
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    CHECK(what.find("INBOX/&AEE-") != std::string::npos);
    CHECK(what.find("offset") != std::string::npos);
  }
}
