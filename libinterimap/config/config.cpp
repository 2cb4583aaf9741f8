#include <interimap/config.hpp>
#include <interimap/error.hpp>
#include "util/ascii.hpp"
#include "util/redact.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <arpa/inet.h>
#include <netdb.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <openssl/evp.h>

namespace interimap {

namespace {

using detail::iequals;

// Perl's \s, which the reference's Config::Tiny uses to trim and to find
// comments: space, \t, \n, \v, \f, \r.
bool is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) {
    s.remove_prefix(1);
  }
  while (!s.empty() && is_space(s.back())) {
    s.remove_suffix(1);
  }
  return s;
}

bool is_control(char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }

// RFC 3501 9: ATOM-CHAR (for SASL mechanism names in "auth").
bool is_atom_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u > 0x20 && u < 0x7f && c != '(' && c != ')' && c != '{' && c != '%' && c != '*' && c != '"' &&
         c != '\\' && c != ']';
}

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_alnum(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool all_of(std::string_view s, bool (*pred)(char)) { return std::all_of(s.begin(), s.end(), pred); }

// Blank-separated words (the reference splits several options on spaces).
std::vector<std::string> words(std::string_view s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < s.size()) {
    while (pos < s.size() && is_space(s[pos])) {
      ++pos;
    }
    size_t end = pos;
    while (end < s.size() && !is_space(s[end])) {
      ++end;
    }
    if (end > pos) {
      out.emplace_back(s.substr(pos, end - pos));
    }
    pos = end;
  }
  return out;
}


// A port number or a TCP service name (the reference hands the value to
// getaddrinfo(3), which accepts both); 0 when invalid.
uint16_t parse_port(std::string_view value) {
  if (!value.empty() && all_of(value, [](char c) { return c >= '0' && c <= '9'; })) {
    unsigned port = 0;
    auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), port);
    if (ec != std::errc() || port == 0 || port > 65535) {
      return 0;
    }
    return static_cast<uint16_t>(port);
  }
  if (value.empty() || !all_of(value, is_alnum)) {
    return 0;
  }
  const std::string name(value);
  const struct servent* s = getservbyname(name.c_str(), "tcp");
  return s != nullptr ? ntohs(static_cast<uint16_t>(s->s_port)) : 0;
}

bool is_ip_literal(const std::string& ip) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, ip.c_str(), buf) == 1 || inet_pton(AF_INET6, ip.c_str(), buf) == 1;
}

// "socks5://[USER:PASSWORD@]HOST[:PORT]" or "socks5h://..." where HOST has no
// ':' unless it is a bracketed IP literal; the same grammar as the
// reference's _proxify, with the protocols it implements (RFC 1928).
// Returns an error message, or an empty string when valid.
std::string check_proxy(std::string_view proxy) {
  const size_t sep = proxy.find("://");
  if (sep == std::string_view::npos) {
    return "invalid proxy URI, expected socks5://[USER:PASSWORD@]HOST[:PORT] or socks5h://...";
  }
  const std::string_view scheme = proxy.substr(0, sep);
  if (scheme != "socks5" && scheme != "socks5h") {
    return fmt::format("unsupported proxy protocol {}", scheme);
  }
  std::string_view rest = proxy.substr(sep + 3);
  if (const size_t at = rest.rfind('@'); at != std::string_view::npos) {
    rest.remove_prefix(at + 1);  // user:password; the reference's greedy match ends at the last '@'
  }
  std::string_view host = rest, port;
  if (!rest.empty() && rest.front() == '[') {
    const size_t close = rest.find(']');
    if (close == std::string_view::npos || close == 1) {
      return "invalid proxy host";
    }
    host = rest.substr(1, close - 1);
    if (!is_ip_literal(std::string(host))) {
      return fmt::format("invalid IP literal [{}] in proxy", host);
    }
    const std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        return "invalid proxy URI";
      }
      port = after.substr(1);
      if (port.empty()) {
        return "invalid proxy port";
      }
    }
  } else {
    const size_t colon = rest.find(':');
    if (colon != std::string_view::npos) {
      host = rest.substr(0, colon);
      port = rest.substr(colon + 1);
      if (port.empty()) {
        return "invalid proxy port";
      }
    }
    if (host.empty()) {
      return "missing proxy host";
    }
  }
  if (!port.empty() && parse_port(port) == 0) {
    return fmt::format("invalid proxy port {}", port);
  }
  return {};
}

// The versions OpenSSL's protocol_from_string() knows, in increasing order
// (the reference's %SSL_protocol_versions).
constexpr std::string_view kProtocolVersions[] = {"SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"};

int protocol_rank(std::string_view v) {
  for (size_t i = 0; i < std::size(kProtocolVersions); ++i) {
    if (kProtocolVersions[i] == v) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

[[noreturn]] void list_mailbox_error(std::string_view value, std::string_view what, size_t pos,
                                     std::string_view reason) {
  throw ConfigError(fmt::format("Invalid value for {}: {} ({} at offset {})", what, value, reason, pos));
}

// The options of every IMAP connection (Net::IMAP::InterIMAP's, read by
// Config::connection()), then each program's own.
constexpr std::string_view kConnectionOptions[] = {
    "host", "port", "proxy", "type", "STARTTLS", "username", "password", "auth", "command", "null-stderr",
    "username-command", "password-command", "password-command-timeout", "auth-cleartext",
    "compress", "SSL_protocols", "SSL_protocol_min", "SSL_protocol_max", "SSL_fingerprint", "SSL_cipherlist",
    "SSL_ciphersuites", "SSL_hostname", "SSL_verify", "SSL_CApath", "SSL_CAfile"};
constexpr std::string_view kInterimapOptions[] = {"database",       "logfile",          "log-prefix",
                                                  "list-reference", "list-mailbox",     "list-select-opts",
                                                  "ignore-mailbox", "change-tracking", "max-connections",
                                                  // ours: the mass-deletion guard (issue 15)
                                                  "mass-deletion-share", "mass-deletion-minimum",
                                                  "mailbox-deletion-share", "mailbox-deletion-minimum"};
constexpr std::string_view kPullimapOptions[] = {"statefile",    "mailbox",      "deliver-method",
                                                 "deliver-ehlo", "deliver-rcpt", "purge-after"};

template <size_t N>
bool listed(const std::string_view (&names)[N], std::string_view name) {
  return std::find(std::begin(names), std::end(names), name) != std::end(names);
}

std::string home_dir() {
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    return home;
  }
  if (const struct passwd* pw = getpwuid(getuid()); pw != nullptr && pw->pw_dir != nullptr) {
    return pw->pw_dir;
  }
  return {};
}

std::string xdg_dir(const char* variable, const char* fallback) {
  // XDG Base Directory Specification: an unset or empty variable means the
  // default under $HOME.
  if (const char* dir = std::getenv(variable); dir != nullptr && *dir != '\0') {
    return dir;
  }
  return home_dir() + "/" + fallback;
}

}  // namespace

Config Config::load(const std::string& path) {
  // The reference's check and message ("-f and -r" before reading).
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw ConfigError(fmt::format("No such config file {}", path));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw ConfigError(fmt::format("Can't open config file {}: {}", path, std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    throw ConfigError(fmt::format("Can't read config file {}: {}", path, std::strerror(errno)));
  }
  return parse(text.str(), path);
}

Config Config::parse(std::string_view text, std::string origin) {
  // The reference reads its files with Config::Tiny; we accept the same
  // lines and give them the same meaning.
  Config config;
  config.origin_ = std::move(origin);
  std::string section;  // "" is the default section (Config::Tiny's "_")
  size_t line_number = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    // Config::Tiny splits on \r{1,2}\n, \r or \n.
    size_t end = text.find_first_of("\r\n", pos);
    std::string_view raw = text.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    if (end == std::string_view::npos) {
      pos = text.size();
    } else if (text.compare(end, 3, "\r\r\n") == 0) {
      pos = end + 3;
    } else if (text.compare(end, 2, "\r\n") == 0) {
      pos = end + 2;
    } else {
      pos = end + 1;
    }
    ++line_number;

    std::string_view line = trim(raw);
    if (line.empty() || line.front() == '#' || line.front() == ';') {
      continue;
    }
    // Inline comments: " ; " followed by at least one character, from the
    // first such occurrence to the end of the line.
    for (size_t i = 0; i + 3 < raw.size(); ++i) {
      if (is_space(raw[i]) && raw[i + 1] == ';' && is_space(raw[i + 2])) {
        line = trim(raw.substr(0, i));
        break;
      }
    }
    if (line.size() >= 2 && line.front() == '[' && line.back() == ']') {
      const std::string_view name = trim(line.substr(1, line.size() - 2));
      if (!name.empty()) {
        section = name == "_" ? std::string() : std::string(name);
        // A repeated section merges into the first, as in Config::Tiny.
        if (!section.empty() && config.values_.find(section) == config.values_.end()) {
          config.order_.push_back(section);
        }
        config.values_[section];
        continue;
      }
    } else if (const size_t eq = line.find('='); eq != std::string_view::npos) {
      const std::string_view key = trim(line.substr(0, eq));
      if (!key.empty()) {
        // A repeated option: the last value wins (Config::Tiny assigns to a hash).
        config.values_[section][std::string(key)] = std::string(trim(line.substr(eq + 1)));
        continue;
      }
    }
    throw ConfigError(fmt::format("{}:{}: syntax error: '{}'", config.origin_, line_number, raw));
  }
  return config;
}

std::vector<std::string> Config::sections() const { return order_; }

bool Config::has_section(std::string_view section) const { return values_.find(section) != values_.end(); }

std::vector<std::string> Config::options(std::string_view section) const {
  std::vector<std::string> names;
  for (std::string_view s : {section, std::string_view()})
    if (auto it = values_.find(s); it != values_.end())
      for (const auto& [name, value] : it->second) names.push_back(name);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

std::optional<std::string> Config::get(std::string_view section, std::string_view option) const {
  // The reference copies the default section, then lays the section over it.
  for (std::string_view s : {section, std::string_view()}) {
    if (auto it = values_.find(s); it != values_.end()) {
      if (auto v = it->second.find(option); v != it->second.end()) {
        return v->second;
      }
    }
    if (s.empty()) {
      break;
    }
  }
  return std::nullopt;
}

void Config::fail(std::string_view section, std::string_view option, std::string_view message) const {
  // Name the section that holds the value: one inherited from the default
  // section is reported there, where the user has to fix it.
  std::string_view where = section;
  std::optional<std::string> value;
  if (auto it = values_.find(section); it != values_.end() && it->second.count(option) != 0) {
    value = it->second.find(option)->second;
  } else if (auto d = values_.find(std::string_view()); d != values_.end() && d->second.count(option) != 0) {
    where = {};
    value = d->second.find(option)->second;
  }
  std::string text = where.empty() ? fmt::format("{}: {}: {}", origin_, option, message)
                                   : fmt::format("{}: [{}] {}: {}", origin_, where, option, message);
  if (value) {
    // Never echo a password into logs, nor a proxy's.
    fmt::format_to(std::back_inserter(text), " (value: {})",
                   option == "password" ? std::string("<redacted>")
                   : option == "proxy"  ? detail::redact_userinfo(*value)
                                        : *value);
  }
  // A NUL would cut what() short: control characters are escaped here already.
  throw ConfigError(detail::escape_controls(text));
}

std::optional<bool> Config::get_bool(std::string_view section, std::string_view option) const {
  auto value = get(section, option);
  if (!value) {
    return std::nullopt;
  }
  // The reference validates booleans with /\A(YES|NO)\z/i: nothing else.
  if (iequals(*value, "YES")) {
    return true;
  }
  if (iequals(*value, "NO")) {
    return false;
  }
  fail(section, option, "invalid boolean, expected YES or NO");
}

std::optional<uint64_t> Config::get_uint(std::string_view section, std::string_view option) const {
  auto value = get(section, option);
  if (!value) {
    return std::nullopt;
  }
  uint64_t n = 0;
  const char* end = value->data() + value->size();
  auto [ptr, ec] = std::from_chars(value->data(), end, n);
  if (value->empty() || value->front() < '0' || value->front() > '9' || ec != std::errc() || ptr != end) {
    fail(section, option, "invalid non-negative integer");
  }
  return n;
}

ConnectionOptions Config::connection(std::string_view section, bool compress_default) const {
  if (!section.empty() && !has_section(section)) {
    throw ConfigError(fmt::format("{}: no such section [{}]", origin_, section));
  }
  // A string option: the reference's \P{Control}+ (or * when empty is allowed).
  auto text = [&](std::string_view option, bool allow_empty = false) -> std::optional<std::string> {
    auto value = get(section, option);
    if (value) {
      if (value->empty() && !allow_empty) {
        fail(section, option, "empty value");
      }
      if (std::any_of(value->begin(), value->end(), is_control)) {
        fail(section, option, "control character in value");
      }
    }
    return value;
  };

  ConnectionOptions opts;
  opts.name = std::string(section);

  if (auto type = get(section, "type")) {
    if (*type == "imap") {
      opts.type = ConnectionOptions::Type::Imap;
    } else if (*type == "imaps") {
      opts.type = ConnectionOptions::Type::Imaps;
    } else if (*type == "tunnel") {
      opts.type = ConnectionOptions::Type::Tunnel;
    } else {
      fail(section, "type", "invalid type, expected imap, imaps or tunnel");
    }
  }

  if (auto host = text("host")) {
    if (host->front() == '[') {
      // interimap(1): brackets force an IP literal, which must then be one.
      if (host->size() < 2 || host->back() != ']' || !is_ip_literal(host->substr(1, host->size() - 2))) {
        fail(section, "host", "invalid IP literal");
      }
    }
    opts.host = std::move(*host);
  }
  if (auto port = text("port")) {
    opts.port = parse_port(*port);
    if (opts.port == 0) {
      fail(section, "port", "invalid port, expected 1 to 65535 or a service name");
    }
  }
  if (auto proxy = text("proxy")) {
    if (std::string error = check_proxy(*proxy); !error.empty()) {
      fail(section, "proxy", error);
    }
    opts.proxy = std::move(*proxy);
  }
  if (auto command = text("command")) {
    opts.command = std::move(*command);
  } else if (opts.type == ConnectionOptions::Type::Tunnel) {
    fail(section, "command", "missing, required for type=tunnel");
  }
  opts.null_stderr = get_bool(section, "null-stderr").value_or(false);
  opts.starttls = get_bool(section, "STARTTLS").value_or(true);

  if (auto auth = text("auth")) {
    opts.auth = words(*auth);
    if (opts.auth.empty()) {
      fail(section, "auth", "empty value");
    }
    for (auto& mech : opts.auth) {
      if (!all_of(mech, is_atom_char)) {
        fail(section, "auth", fmt::format("invalid mechanism name {}", mech));
      }
      // The reference compares mechanisms upper-cased (RFC 4422 3.1 names
      // are upper-case).
      std::transform(mech.begin(), mech.end(), mech.begin(), [](char c) { return c >= 'a' && c <= 'z' ? c - 32 : c; });
    }
  }
  // username and password: the reference accepts [\x01-\x7F]+ (ASCII).
  for (std::string_view option : {"username", "password"}) {
    if (auto value = get(section, option)) {
      if (value->empty()) {
        fail(section, option, "empty value");
      }
      if (std::any_of(value->begin(), value->end(), [](char c) { return c == '\0' || static_cast<unsigned char>(c) > 0x7f; })) {
        fail(section, option, "non-ASCII value");
      }
      (option == "username" ? opts.username : opts.password) = std::move(*value);
    }
  }
  if (auto command = text("username-command")) opts.username_command = std::move(*command);
  if (auto command = text("password-command")) opts.password_command = std::move(*command);
  if (auto timeout = get_uint(section, "password-command-timeout")) {
    if (*timeout == 0 || *timeout > 86400) fail(section, "password-command-timeout", "expected 1 to 86400 seconds");
    opts.command_timeout = static_cast<unsigned>(*timeout);
  }
  opts.auth_cleartext = get_bool(section, "auth-cleartext").value_or(false);
  opts.compress = get_bool(section, "compress").value_or(compress_default);

  TlsOptions& tls = opts.tls;
  tls.verify = get_bool(section, "SSL_verify").value_or(true);
  tls.ca_file = text("SSL_CAfile").value_or("");
  tls.ca_path = text("SSL_CApath").value_or("");
  if (auto fprs = text("SSL_fingerprint")) {
    for (auto& fpr : words(*fprs)) {
      // "[ALGO$]HEX": ALGO an OpenSSL digest name (default sha256), HEX the
      // digest of the SubjectPublicKeyInfo, so its length is fixed by ALGO.
      const size_t dollar = fpr.find('$');
      const std::string algo = dollar == std::string::npos ? "sha256" : fpr.substr(0, dollar);
      const std::string_view hex = dollar == std::string::npos ? std::string_view(fpr) : std::string_view(fpr).substr(dollar + 1);
      if (algo.empty() || !all_of(algo, is_alnum) || hex.empty() || !all_of(hex, is_hex)) {
        fail(section, "SSL_fingerprint", fmt::format("invalid fingerprint {}, expected [ALGO$]HEX", fpr));
      }
      const EVP_MD* md = EVP_get_digestbyname(algo.c_str());
      if (md == nullptr) {
        fail(section, "SSL_fingerprint", fmt::format("unknown digest algorithm {}", algo));
      }
      if (hex.size() != 2 * static_cast<size_t>(EVP_MD_size(md))) {
        fail(section, "SSL_fingerprint",
             fmt::format("fingerprint {} has {} hex digits, {} expects {}", fpr, hex.size(), algo, 2 * EVP_MD_size(md)));
      }
      tls.fingerprints.push_back(std::move(fpr));
    }
    if (tls.fingerprints.empty()) {
      fail(section, "SSL_fingerprint", "empty value");
    }
  }
  // Present but empty disables SNI, hence optional<string>.
  tls.hostname = text("SSL_hostname", true);
  for (auto [option, field] : {std::pair{"SSL_protocol_min", &tls.protocol_min}, std::pair{"SSL_protocol_max", &tls.protocol_max}}) {
    if (auto v = text(option)) {
      if (protocol_rank(*v) < 0) {
        fail(section, option, "unknown protocol version, expected SSLv3, TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3");
      }
      *field = std::move(*v);
    }
  }
  if (!tls.protocol_min.empty() && !tls.protocol_max.empty() &&
      protocol_rank(tls.protocol_min) > protocol_rank(tls.protocol_max)) {
    fail(section, "SSL_protocol_max", fmt::format("lower than SSL_protocol_min ({})", tls.protocol_min));
  }
  if (auto protocols = text("SSL_protocols")) {
    // The reference's !?(SSLv[23]|TLSv1|TLSv1\.[0-3]) list.
    static constexpr std::string_view kKnown[] = {"SSLv2", "SSLv3", "TLSv1", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"};
    const auto list = words(*protocols);
    for (const auto& w : list) {
      const std::string_view name = w.front() == '!' ? std::string_view(w).substr(1) : std::string_view(w);
      if (std::find(std::begin(kKnown), std::end(kKnown), name) == std::end(kKnown)) {
        fail(section, "SSL_protocols", fmt::format("unknown protocol {}", w));
      }
    }
    if (list.empty()) {
      fail(section, "SSL_protocols", "empty value");
    }
    tls.protocols = std::move(*protocols);
  }
  tls.cipherlist = text("SSL_cipherlist").value_or("");
  // "An empty list is permissible" (SSL_CTX_set_ciphersuites(3)), but
  // TlsOptions cannot tell it from unset: it means OpenSSL's default here.
  tls.ciphersuites = text("SSL_ciphersuites", true).value_or("");
  return opts;
}

std::vector<std::string> split_list_mailbox(std::string_view value, std::string_view what) {
  auto fail = [&](size_t pos, std::string_view reason) { list_mailbox_error(value, what, pos, reason); };
  // The reference's unquoted words: RFC 3501 list-char minus '"', '(', ')',
  // '\' and '{'; its quoted strings: printable ASCII with C-like escapes.
  auto word_char = [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x21 && u <= 0x7e && c != '"' && c != '(' && c != ')' && c != '\\' && c != '{';
  };
  if (value.empty()) {
    fail(0, "empty value");
  }
  std::vector<std::string> out;
  size_t pos = 0;
  while (true) {
    if (word_char(value[pos])) {
      const size_t start = pos;
      while (pos < value.size() && word_char(value[pos])) {
        ++pos;
      }
      out.emplace_back(value.substr(start, pos - start));
    } else if (value[pos] == '"') {
      const size_t start = pos++;
      std::string s;
      while (true) {
        if (pos >= value.size()) {
          fail(start, "unterminated quoted string");
        }
        const char c = value[pos];
        if (c == '"') {
          break;
        }
        if (c != '\\') {
          if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) {
            fail(pos, "invalid character in quoted string");
          }
          s += c;
          ++pos;
          continue;
        }
        if (pos + 1 >= value.size()) {
          fail(pos, "unterminated escape");
        }
        const char e = value[pos + 1];
        pos += 2;
        switch (e) {
          case '"': s += '"'; break;
          case '\\': s += '\\'; break;
          case '0': s += '\0'; break;  // one digit only: "\012" is NUL, '1', '2'
          case 'a': s += '\a'; break;
          case 'b': s += '\b'; break;
          case 't': s += '\t'; break;
          case 'n': s += '\n'; break;
          case 'f': s += '\f'; break;
          case 'r': s += '\r'; break;
          // The reference accepts "\v" but evaluates it as a Perl string,
          // where it is a plain 'v': do the same so patterns match alike.
          case 'v': s += 'v'; break;
          case 'x':
            if (pos + 2 > value.size() || !is_hex(value[pos]) || !is_hex(value[pos + 1])) {
              fail(pos - 2, "\\x needs two hex digits");
            }
            s += static_cast<char>(std::stoi(std::string(value.substr(pos, 2)), nullptr, 16));
            pos += 2;
            break;
          default:
            fail(pos - 2, fmt::format("invalid escape \\{}", e));
        }
      }
      if (pos == start + 1) {
        fail(start, "empty quoted string");
      }
      ++pos;  // closing quote
      out.push_back(std::move(s));
    } else {
      fail(pos, fmt::format("unexpected character '{}'", value[pos]));
    }
    if (pos == value.size()) {
      break;
    }
    if (!is_space(value[pos])) {
      fail(pos, "missing blank between patterns");
    }
    while (pos < value.size() && is_space(value[pos])) {
      ++pos;
    }
    if (pos == value.size()) {
      break;
    }
  }
  return out;
}

bool is_interimap_option(std::string_view name) {
  return listed(kConnectionOptions, name) || listed(kInterimapOptions, name);
}

bool is_pullimap_option(std::string_view name) {
  return listed(kConnectionOptions, name) || listed(kPullimapOptions, name);
}

std::string auth_options_help(std::string_view program) {
  return fmt::format(
      "\n"
      "Authentication options of a connection section (README.md, \"Authentication\"):\n"
      "  auth = MECH...          preferred mechanisms, the first both sides support wins;\n"
      "                          default SCRAM-SHA-256 SCRAM-SHA-1 PLAIN LOGIN, also CRAM-MD5,\n"
      "                          XOAUTH2 and OAUTHBEARER (the password is an access token)\n"
      "  username-command = CMD  /bin/sh -c CMD prints the username\n"
      "  password-command = CMD  /bin/sh -c CMD prints the password or access token; run at\n"
      "                          every (re)connection, without a terminal\n"
      "  password-command-timeout = SECONDS   time limit of both commands (default 30)\n"
      "  auth-cleartext = YES    allow LOGIN, PLAIN, XOAUTH2, OAUTHBEARER without TLS\n"
      "Gmail:          host = imap.gmail.com  auth = XOAUTH2\n"
      "                password-command = mutt_oauth2.py ~/.config/{0}/gmail.tokens\n"
      "Microsoft 365:  host = outlook.office365.com  auth = XOAUTH2\n"
      "                password-command = mutt_oauth2.py ~/.config/{0}/m365.tokens\n",
      program);
}

std::string xdg_config_home() { return xdg_dir("XDG_CONFIG_HOME", ".config"); }

std::string xdg_data_home() { return xdg_dir("XDG_DATA_HOME", ".local/share"); }

std::string resolve_path(const std::string& base, const std::string& path) {
  if (!path.empty() && path.front() == '/') {
    return path;
  }
  if (base.empty() || base.back() == '/') {
    return base + path;
  }
  return base + "/" + path;
}

std::string xdg_basedir(std::string_view program, const std::string& base, const std::string& path) {
  if (!path.empty() && path.front() == '/') return path;
  // The reference dies unless the base is a directory; it creates the
  // program's subdirectory, private, when missing.
  struct stat st {};
  if (base.empty() || ::stat(base.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw Error(fmt::format("No such directory: {}", base));
  const std::string dir = fmt::format("{}/{}", base, program);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    throw Error(fmt::format("Couldn't create {}: {}", dir, std::strerror(errno)));
  return dir + "/" + path;
}

std::string config_path(std::string_view program, const std::optional<std::string>& file) {
  return resolve_path(fmt::format("{}/{}", xdg_config_home(), program), file.value_or("config"));
}

}  // namespace interimap
