// ignore-mailbox: a PCRE2 pattern (Perl syntax, as the reference's qr//).
#pragma once

#include <interimap/error.hpp>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <fmt/format.h>
#include <pcre2.h>

#include <string>
#include <string_view>

namespace interimap::detail::sync {

class Regex {
 public:
  // Throws ConfigError "Invalid value for ignore-mailbox: ..." when the
  // pattern does not compile.
  explicit Regex(const std::string& pattern) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), 0, &err, &offset, nullptr);
    if (code_ == nullptr) {
      PCRE2_UCHAR buf[256];
      pcre2_get_error_message(err, buf, sizeof buf);
      throw ConfigError(fmt::format("Invalid value for ignore-mailbox: {} ({} at offset {})", pattern,
                                    reinterpret_cast<const char*>(buf), offset));
    }
    data_ = pcre2_match_data_create_from_pattern(code_, nullptr);
  }
  ~Regex() {
    pcre2_match_data_free(data_);
    pcre2_code_free(code_);
  }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Whether the pattern matches somewhere in s (Perl's =~).
  bool search(std::string_view s) const {
    return pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0, 0, data_, nullptr) >= 0;
  }

 private:
  pcre2_code* code_ = nullptr;
  pcre2_match_data* data_ = nullptr;
};

}  // namespace interimap::detail::sync
