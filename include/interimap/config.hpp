// The INI configuration files of interimap(1) and pullimap(1).
#pragma once

#include <interimap/export.hpp>

#include <interimap/options.hpp>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace interimap {

// A parsed configuration file, read as the reference's Config::Tiny does.
// Lines are "[SECTION]", "OPTION = VALUE" (blanks around both trimmed; the
// value may be empty and may hold '='), blank, or comments starting with '#'
// or ';'; " ; text" ends a line with a comment.  Options before the first
// section (or under "[_]") belong to the default section, whose values apply
// to every other section that does not set them.  A repeated option keeps
// its last value; a repeated section merges into the first.
class INTERIMAP_API Config {
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
  // The names of the options set in a section or in the default section
  // (the options get() can find there), sorted, each once.
  std::vector<std::string> options(std::string_view section) const;
  // The value of an option in a section, falling back to the default section.
  std::optional<std::string> get(std::string_view section, std::string_view option) const;
  // The value in the default section only.
  std::optional<std::string> get_default(std::string_view option) const { return get("", option); }
  // YES/NO, case-insensitive (the reference accepts nothing else), else
  // ConfigError.  nullopt when unset.
  std::optional<bool> get_bool(std::string_view section, std::string_view option) const;
  // A non-negative decimal integer, else ConfigError.  nullopt when unset.
  std::optional<uint64_t> get_uint(std::string_view section, std::string_view option) const;

  // Builds the options of a connection section.  `name` goes to
  // ConnectionOptions::name; `compress_default` is the compress default
  // (NO for [local], YES for [remote]).  A bad value is a ConfigError naming
  // file, section, option and value; so are a missing section and a tunnel
  // without command.  Unknown option names are not checked here.
  ConnectionOptions connection(std::string_view section, bool compress_default) const;

  // A ConfigError "FILE: [SECTION] OPTION: MESSAGE (value: VALUE)", where
  // SECTION is the one holding the value ("FILE: OPTION: ..." for the default
  // section); no "(value: ...)" when unset; a password is shown as <redacted>.
  [[noreturn]] void fail(std::string_view section, std::string_view option, std::string_view message) const;

 private:
  std::string origin_;
  std::vector<std::string> order_;
  std::map<std::string, std::map<std::string, std::string, std::less<>>, std::less<>> values_;
};

// Splits a list-mailbox value into patterns, as the reference does:
// blank-separated words of printable ASCII except '"', '(', ')', '\' and '{';
// or non-empty double-quoted strings of printable ASCII with the escapes
// \" \\ \0 \a \b \t \n \f \r \xHH (and \v, which the reference turns into
// a plain 'v').  "\0" is NUL, standing for the hierarchy delimiter.  Throws
// ConfigError "Invalid value for WHAT: VALUE (REASON at offset N)" on an empty
// value, unterminated quotes, bad escapes, 8-bit or unexpected characters.
INTERIMAP_API std::vector<std::string> split_list_mailbox(std::string_view value, std::string_view what = "list-mailbox");

// The option names each program accepts in the sections it reads (the
// reference's read_config refuses any other, exact case): the connection
// options of Config::connection() (host, port, proxy, type, STARTTLS,
// username, password, auth, command, null-stderr, compress, SSL_*), plus
//   interimap(1): database, logfile, log-prefix, list-reference,
//                 list-mailbox, list-select-opts, ignore-mailbox;
//   pullimap(1):  statefile, mailbox, deliver-method, deliver-ehlo,
//                 deliver-rcpt, purge-after.
INTERIMAP_API bool is_interimap_option(std::string_view name);
INTERIMAP_API bool is_pullimap_option(std::string_view name);
// The authentication options of a connection section, with Gmail and
// Microsoft 365 examples (token files under ~/.config/PROGRAM/), as both
// programs' --help show them: a blank line, then the text.
INTERIMAP_API std::string auth_options_help(std::string_view program);

// $XDG_CONFIG_HOME (or ~/.config) and $XDG_DATA_HOME (or ~/.local/share);
// an empty variable counts as unset.  Nothing is created.
INTERIMAP_API std::string xdg_config_home();
INTERIMAP_API std::string xdg_data_home();
// `path` if absolute, else `base`/`path`.
INTERIMAP_API std::string resolve_path(const std::string& base, const std::string& path);

// Where `program` ("interimap" or "pullimap") keeps a file, as the
// reference's xdg_basedir(): `path` as is when absolute, creating nothing;
// else BASE/PROGRAM/path, where BASE (xdg_data_home() for the database and
// the statefile) must be an existing directory and BASE/PROGRAM is created
// with mode 0700 when missing.  Throws Error "No such directory: BASE" or
// "Couldn't create BASE/PROGRAM: REASON".
INTERIMAP_API std::string xdg_basedir(std::string_view program, const std::string& base, const std::string& path);

// The configuration file of `program`: `file` (--config; default
// "config") as is when absolute, else under xdg_config_home()/PROGRAM.
// Nothing is checked or created (Config::load() reports a missing file).
INTERIMAP_API std::string config_path(std::string_view program, const std::optional<std::string>& file);

}  // namespace interimap
