// Small ASCII helpers shared by the layers: IMAP atoms, flags and mailbox
// names compare case-insensitively in ASCII only (RFC 3501 9, "ABNF":
// case-insensitive strings), whatever the process locale.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace interimap::detail {

// The largest UID (RFC 3501 2.3.1.1: a 32-bit value); "n:*" is [n, kMaxUid].
inline constexpr uint32_t kMaxUid = std::numeric_limits<uint32_t>::max();

constexpr char ascii_lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// ASCII case-insensitive equality.
constexpr bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  return true;
}

// Whether a flag list holds `flag` (flags compare case-insensitively).
template <class String>
bool has_flag(const std::vector<String>& flags, std::string_view flag) {
  return std::any_of(flags.begin(), flags.end(), [&](const String& f) { return iequals(f, flag); });
}

// Whether s holds a control character (C0 or DEL).
constexpr bool has_control(std::string_view s) noexcept {
  return std::any_of(s.begin(), s.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return c < 0x20 || c == 0x7f;
  });
}

// s with each control character (C0, DEL) written as "\xHH": what a
// server sent (a mailbox name, a response text) cannot end a log line,
// forge another one or drive the terminal.
inline std::string escape_controls(std::string_view s) {
  if (!has_control(s)) return std::string(s);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() + 8);
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += ch;
    }
  }
  return out;
}

}  // namespace interimap::detail
