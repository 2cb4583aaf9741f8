// Secrets kept out of messages.
#pragma once

#include <string>
#include <string_view>

namespace interimap::detail {

// A URI with the password of its userinfo replaced by "***"
// ("socks5://user:***@host:1080"), for messages and logs.  Works with or
// without a scheme; the userinfo ends at the last '@' (as the reference
// reads proxy URIs).  Without a password, the URI as it is.
inline std::string redact_userinfo(std::string_view uri) {
  const size_t scheme = uri.find("://");
  const size_t start = scheme == std::string_view::npos ? 0 : scheme + 3;
  const size_t at = uri.rfind('@');
  if (at == std::string_view::npos || at < start) return std::string(uri);
  const size_t colon = uri.find(':', start);
  if (colon == std::string_view::npos || colon > at) return std::string(uri);
  std::string out(uri.substr(0, colon + 1));
  out += "***";
  out += uri.substr(at);
  return out;
}

}  // namespace interimap::detail
