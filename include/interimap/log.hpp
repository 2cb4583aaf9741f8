// Logging: one line per message, prefixed per the log-prefix option.
#pragma once

#include <interimap/export.hpp>

#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace interimap {

enum class LogLevel { Error, Warning, Info, Debug };

// A compiled log-prefix format (interimap(1) "log-prefix"): %n expands to
// the component name, %m to the mailbox, %?X?then&else? is a condition on
// %X being non-empty (X is n or m; conditionals nest), %% a literal percent;
// \&, \? and \\ escape.  Anything else after '%' or '\', an unescaped '&' or
// '?' outside a conditional, or a control character is malformed.
class INTERIMAP_API LogPrefix {
 public:
  // The reference's default: "%?n?%?m?%n(%m)&%n?: ?".
  static constexpr std::string_view kDefault = "%?n?%?m?%n(%m)&%n?: ?";
  // Conditionals nest at most this deep (the default nests 2).
  static constexpr size_t kMaxNesting = 64;

  // Throws ConfigError (naming the format) when it is malformed.
  explicit LogPrefix(std::string_view format = kDefault);
  // Expands the format for a component name and a mailbox (either may be empty).
  std::string expand(std::string_view name, std::string_view mailbox) const;

 private:
  struct Node;
  std::shared_ptr<const Node> root_;
};

// Writes log lines shaped like the reference's: PREFIX + MESSAGE, with
// "WARNING: " or "ERROR: " before the message of those levels.  Each line is
// one write(2).  With a log file, lines written there start with a
// timestamp ("%b %e %H:%M:%S.uuuuuu "); Debug lines then go to the file only,
// the others to the file and to stderr (as the reference does).  Not
// thread-safe.
class INTERIMAP_API Logger {
 public:
  Logger() = default;
  // quiet: drop Info messages; debug: 0 none, 1 traffic, 2 traffic with credentials.
  void set_quiet(bool quiet) { quiet_ = quiet; }
  void set_debug(int level) { debug_ = level; }
  bool quiet() const { return quiet_; }
  int debug() const { return debug_; }
  void set_prefix(LogPrefix prefix) { prefix_ = std::move(prefix); }
  // Text written at the start of every line, before the prefix (after a
  // log file's timestamp): "(dry run) " for interimap --dry-run.  Default "".
  void set_marker(std::string marker) { marker_ = std::move(marker); }
  // Appends to this file instead of stderr (interimap "logfile").  Throws Error.
  void open_file(const std::string& path);

  void log(LogLevel level, std::string_view name, std::string_view mailbox, std::string_view message);
  void error(std::string_view name, std::string_view message) { log(LogLevel::Error, name, {}, message); }
  void warning(std::string_view name, std::string_view message) { log(LogLevel::Warning, name, {}, message); }
  void info(std::string_view name, std::string_view message) { log(LogLevel::Info, name, {}, message); }
  // An Info line written even when quiet: the reference's msg(), for what a
  // user must see (a mailbox created, a sync resumed).
  void notice(std::string_view name, std::string_view mailbox, std::string_view message);
  // Lines written so far at Info level or above (Debug lines excluded).
  uint64_t lines() const { return lines_; }

  // A line kept instead of written (capture()).
  struct Record {
    LogLevel level = LogLevel::Info;
    std::string name, mailbox, message;
  };
  // Where a capturing logger keeps its lines; several threads may log
  // into one at once (it locks).
  class INTERIMAP_API Capture {
   public:
    void add(Record record);
    // Returns and forgets the lines kept so far, in order.
    std::vector<Record> take();

   private:
    std::mutex mutex_;
    std::vector<Record> records_;
  };
  // From now on the lines this logger would write (after the quiet and
  // debug filters) go to `into` instead; nullptr: written again.  The sync
  // engine's workers log so, and the session writes each mailbox's lines
  // together, in the order of the mailboxes.
  void capture(std::shared_ptr<Capture> into) { capture_ = std::move(into); }
  // Writes captured lines as this logger writes its own.
  void replay(const std::vector<Record>& records);

 private:
  void write(LogLevel level, std::string_view name, std::string_view mailbox, std::string_view message);

  uint64_t lines_ = 0;
  bool quiet_ = false;
  int debug_ = 0;
  LogPrefix prefix_;
  std::string marker_;
  std::shared_ptr<std::FILE> file_;
  std::shared_ptr<Capture> capture_;
};

}  // namespace interimap
