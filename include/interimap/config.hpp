// The INI configuration files of interimap(1) and pullimap(1).
#pragma once

#include <interimap/options.hpp>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace interimap {

// A parsed configuration file.  Lines are "[SECTION]", "OPTION = VALUE"
// (blanks around both trimmed), blank, or comments starting with '#' or ';'.
// Options before the first section belong to the default section, whose
// values apply to every other section that does not set them.
class Config {
 public:
  // Reads and parses a file.  Throws ConfigError naming the file and line.
  static Config load(const std::string& path);
  // Parses text; `origin` names it in error messages.
  static Config parse(std::string_view text, std::string origin);

  // The file name (or origin) for error messages.
  const std::string& origin() const { return origin_; }
  // Section names in file order, the default section ("") excluded.
  std::vector<std::string> sections() const;
  bool has_section(std::string_view section) const;
  // The value of an option in a section, falling back to the default section.
  std::optional<std::string> get(std::string_view section, std::string_view option) const;
  // The value in the default section only.
  std::optional<std::string> get_default(std::string_view option) const { return get("", option); }
  // YES/NO (case-insensitive; also 1/0, TRUE/FALSE, ON/OFF), else ConfigError.
  std::optional<bool> get_bool(std::string_view section, std::string_view option) const;
  // A non-negative integer, else ConfigError.
  std::optional<uint64_t> get_uint(std::string_view section, std::string_view option) const;

  // Builds the options of a connection section.  `name` goes to
  // ConnectionOptions::name; `compress_default` is the compress default
  // (NO for [local], YES for [remote]).  A bad value is a ConfigError naming
  // file, section, option and value.
  ConnectionOptions connection(std::string_view section, bool compress_default) const;

  // A ConfigError "FILE: [SECTION] OPTION: MESSAGE (value: VALUE)".
  [[noreturn]] void fail(std::string_view section, std::string_view option, std::string_view message) const;

 private:
  std::string origin_;
  std::vector<std::string> order_;
  std::map<std::string, std::map<std::string, std::string, std::less<>>, std::less<>> values_;
};

// Splits a list-mailbox value into patterns: blank-separated words, or
// double-quoted strings with C escapes (\t, \n, \\, \", \xHH, ...).  The
// result may contain NUL bytes, standing for the hierarchy delimiter.
// Throws ConfigError (with `what` naming the option) on unterminated quotes
// or bad escapes.
std::vector<std::string> split_list_mailbox(std::string_view value, std::string_view what = "list-mailbox");

// $XDG_CONFIG_HOME (or ~/.config) and $XDG_DATA_HOME (or ~/.local/share).
std::string xdg_config_home();
std::string xdg_data_home();
// `path` if absolute, else `base`/`path`.
std::string resolve_path(const std::string& base, const std::string& path);

}  // namespace interimap
