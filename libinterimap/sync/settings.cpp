// SyncSettings::from_config: the reference's read_config for interimap
// (the options it knows, the values it accepts), and the logger settings.
#include <interimap/syncsession.hpp>

#include "sync/flags.hpp"
#include "sync/guard.hpp"
#include "util/ascii.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>

namespace interimap {

namespace {

using detail::has_control;

constexpr std::array<const char*, 3> kSections = {"", "local", "remote"};

// The reference's value patterns (its read_config), checked in every
// section that sets the option.
void check_values(const Config& config) {
  auto check = [&](std::string_view option, bool allow_empty, auto&& ok) {
    for (const char* section : kSections) {
      const auto v = config.get(section, option);
      if (v && ((!allow_empty && v->empty()) || !ok(*v)))
        throw ConfigError(fmt::format("Invalid option {} = {}", option, *v));
    }
  };
  const auto ascii_line = [](const std::string& v) {
    return std::all_of(v.begin(), v.end(), [](unsigned char ch) { return ch >= 1 && ch <= 0x7f && ch != '\n' && ch != '\r'; });
  };
  check("database", false, [](const std::string& v) { return !has_control(v); });
  check("logfile", false, [](const std::string& v) { return v.starts_with('/') && !has_control(v); });
  check("log-prefix", true, [](const std::string& v) { return !has_control(v); });
  check("list-reference", true, ascii_line);
  check("list-mailbox", false, ascii_line);
  check("ignore-mailbox", false, ascii_line);
  check("list-select-opts", true, [](const std::string& v) {
    return std::all_of(v.begin(), v.end(), [](unsigned char ch) {
      return ch >= 0x20 && ch <= 0x7e && std::string_view("\"%()*\\]{").find(static_cast<char>(ch)) == std::string_view::npos;
    });
  });
}

// list-select-opts: blank-separated words, upper-cased as the reference's uc().
std::vector<std::string> upper_words(std::string_view s) {
  std::vector<std::string> words = detail::sync::split_flags(s);
  for (auto& w : words)
    std::transform(w.begin(), w.end(), w.begin(), [](unsigned char ch) { return static_cast<char>(std::toupper(ch)); });
  return words;
}

}  // namespace

SyncSettings SyncSettings::from_config(const Config& config) {
  for (const char* section : kSections) {
    if (*section != '\0' && !config.has_section(section))
      throw ConfigError(fmt::format("No such section {}", section));
    for (const auto& name : config.options(section))
      if (!is_interimap_option(name)) throw ConfigError(fmt::format("Invalid option {}", name));
  }
  check_values(config);

  SyncSettings s;
  s.log_prefix = LogPrefix(config.get_default("log-prefix").value_or(std::string(LogPrefix::kDefault)));
  s.logfile = config.get_default("logfile").value_or("");
  s.database = StateDB::default_path(config.get_default("database"), config.get("remote", "host").value_or("localhost"),
                                     xdg_data_home());
  for (Side side : {Side::Local, Side::Remote}) {
    const std::string section(to_string(side));
    s.connections[index(side)] = config.connection(section, side == Side::Remote);
    s.connections[index(side)].name = section;
    s.list_reference[index(side)] = config.get(section, "list-reference").value_or("");
    const std::string tracking = config.get(section, "change-tracking").value_or("auto");
    if (tracking == "auto")
      s.change_tracking[index(side)] = ChangeTracking::Auto;
    else if (tracking == "qresync")
      s.change_tracking[index(side)] = ChangeTracking::Qresync;
    else if (tracking == "condstore")
      s.change_tracking[index(side)] = ChangeTracking::Condstore;
    else if (tracking == "plain")
      s.change_tracking[index(side)] = ChangeTracking::Plain;
    else
      config.fail(section, "change-tracking", "expected auto, qresync, condstore or plain");
    if (const auto n = config.get_uint(section, "max-connections")) {
      if (*n == 0 || *n > 16) config.fail(section, "max-connections", "expected 1 to 16");
      s.max_connections[index(side)] = static_cast<unsigned>(*n);
    }
  }
  s.list_mailbox = config.get_default("list-mailbox").value_or("");
  s.list_select_opts = upper_words(config.get_default("list-select-opts").value_or(""));
  s.ignore_mailbox = config.get_default("ignore-mailbox").value_or("");
  s.mass_deletion = detail::sync::read_mass_deletion_limits(config);  // ours (issue 15)
  return s;
}

void SyncSettings::configure_logger(Logger& logger) const {
  logger.set_prefix(log_prefix);
  if (!logfile.empty()) logger.open_file(logfile);
}

}  // namespace interimap
