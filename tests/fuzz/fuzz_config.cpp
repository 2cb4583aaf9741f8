// Fuzzes the configuration reader (include/interimap/config.hpp) and what
// reads its values: the connection options, booleans and numbers,
// list-mailbox (split_list_mailbox), log-prefix (LogPrefix) and
// deliver-method (smtp::parse_deliver_method).
//
// Input: a configuration file.  Each of its first lines is also given, as
// a value, to LogPrefix and split_list_mailbox directly (the reader trims
// values; the value parsers get any bytes here).
//
// Properties: ConfigError is the only error; Config::fail never echoes a
// password; a deliver-method accepted reads back the same from its
// to_string().
#include "fuzz_util.hpp"

#include "smtp/smtp_client.hpp"

#include <interimap/config.hpp>
#include <interimap/error.hpp>
#include <interimap/log.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

using interimap::Config;
using interimap::ConfigError;
using interimap::LogPrefix;
namespace smtp = interimap::detail::smtp;

namespace {

void log_prefix(std::string_view format) {
  try {
    const LogPrefix p(format);
    (void)p.expand("local", "INBOX");
    (void)p.expand("remote", "");
    (void)p.expand("", "Archive/2024");
    (void)p.expand("", "");
  } catch (const ConfigError&) {
  }
}

void list_mailbox(std::string_view value) {
  try {
    (void)interimap::split_list_mailbox(value);
  } catch (const ConfigError&) {
  }
}

void deliver_method(std::string_view value) {
  smtp::Endpoint e;
  try {
    e = smtp::parse_deliver_method(value);
  } catch (const ConfigError&) {
    return;
  }
  const smtp::Endpoint again = smtp::parse_deliver_method(smtp::to_string(e));
  FUZZ_CHECK(again.protocol == e.protocol && again.address == e.address && again.port == e.port);
}

// Config::fail shows a password as <redacted>.  The check holds for values
// that cannot be part of the rest of the message by chance.
void check_redacted(const Config& c, const std::string& section) {
  const auto value = c.get(section, "password");
  // (A NUL in the section name is escaped, so what() holds the whole message.)
  if (!value) return;
  std::string message;
  try {
    c.fail(section, "password", "M");
  } catch (const ConfigError& e) {
    message = e.what();
  }
  FUZZ_CHECK(message.find("<redacted>") != std::string::npos);
  if (value->size() >= 12 && value->find_first_of(" :[]()") == std::string::npos &&
      section.find(*value) == std::string::npos)
    FUZZ_CHECK(message.find(*value) == std::string::npos);
}

void read_section(const Config& c, const std::string& section) {
  for (const std::string& option : c.options(section)) {
    FUZZ_CHECK(c.get(section, option).has_value());
    (void)interimap::is_interimap_option(option);
    (void)interimap::is_pullimap_option(option);
    try {
      (void)c.get_bool(section, option);
    } catch (const ConfigError&) {
    }
    try {
      (void)c.get_uint(section, option);
    } catch (const ConfigError&) {
    }
  }
  for (bool compress : {false, true}) {
    try {
      (void)c.connection(section, compress);
    } catch (const ConfigError&) {
    }
  }
  if (auto v = c.get(section, "list-mailbox")) list_mailbox(*v);
  if (auto v = c.get(section, "log-prefix")) log_prefix(*v);
  if (auto v = c.get(section, "deliver-method")) deliver_method(*v);
  check_redacted(c, section);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const Config c = Config::parse(text, "fuzz.conf");
    std::vector<std::string> sections = c.sections();
    for (const std::string& s : sections) FUZZ_CHECK(c.has_section(s));
    sections.emplace_back();  // the default section
    for (const std::string& s : sections) read_section(c, s);
  } catch (const ConfigError&) {
  }

  // The value parsers on raw lines.
  std::string_view rest = text;
  for (int i = 0; i < 8 && !rest.empty(); ++i) {
    const size_t nl = rest.find('\n');
    const std::string_view line = rest.substr(0, nl);
    log_prefix(line);
    list_mailbox(line);
    deliver_method(line);
    rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
  }
  return 0;
}
