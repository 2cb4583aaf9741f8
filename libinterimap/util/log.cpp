#include <interimap/error.hpp>
#include <interimap/log.hpp>

#include "util/ascii.hpp"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>
#include <variant>
#include <vector>

#include <fcntl.h>
#include <sys/time.h>
#include <unistd.h>

#include <fmt/format.h>

#include <utility>

namespace interimap {

namespace detail {

// A compiled format: a sequence of literal text, %n/%m references and
// conditionals.  Immutable once built, so LogPrefix copies share it.
enum class PrefixVar { Name, Mailbox };
struct PrefixSeq;
struct PrefixCond {
  PrefixVar var;
  std::shared_ptr<const PrefixSeq> then_branch;
  std::shared_ptr<const PrefixSeq> else_branch;  // null when there is no '&'
};
struct PrefixSeq {
  std::vector<std::variant<std::string, PrefixVar, PrefixCond>> items;
};

}  // namespace detail

struct INTERIMAP_LOCAL LogPrefix::Node {
  detail::PrefixSeq seq;
};

namespace {

using detail::PrefixCond;
using detail::PrefixSeq;
using detail::PrefixVar;

// Recursive-descent reader of the interimap(1) log-prefix grammar:
//   seq  := ( text | "%%" | "%n" | "%m" | "\&" | "\?" | "\\" | cond )*
//   cond := "%?" VAR "?" seq [ "&" seq ] "?"
// Unescaped '&' and '?' are only meaningful inside a conditional; the man
// page requires them (and '\') to be escaped elsewhere, so a stray one is
// reported rather than guessed at.
class PrefixParser {
 public:
  explicit PrefixParser(std::string_view format) : format_(format) {}

  PrefixSeq parse() {
    char stop = 0;
    return sequence(false, stop);
  }

 private:
  [[noreturn]] void fail(std::string_view what) const {
    throw ConfigError(fmt::format("Invalid log-prefix \"{}\": {} at offset {}", format_, what, pos_));
  }

  static bool variable(char c, PrefixVar& var) {
    if (c == 'n') {
      var = PrefixVar::Name;
      return true;
    }
    if (c == 'm') {
      var = PrefixVar::Mailbox;
      return true;
    }
    return false;
  }

  // Reads until the end of the format or, inside a conditional, an
  // unescaped '&' or '?' (left unconsumed; returned in `stop`).
  PrefixSeq sequence(bool in_conditional, char& stop) {
    PrefixSeq node;
    std::string text;
    auto flush = [&] {
      if (!text.empty()) {
        node.items.emplace_back(std::move(text));
        text.clear();
      }
    };
    stop = 0;
    while (pos_ < format_.size()) {
      const char c = format_[pos_];
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        // interimap validates log-prefix against \P{Control}.
        fail("control character");
      }
      if (c == '?' || c == '&') {
        if (!in_conditional) {
          fail(fmt::format("unescaped '{}'", c));
        }
        stop = c;
        break;
      }
      if (c == '\\') {
        if (pos_ + 1 >= format_.size()) {
          fail("trailing '\\'");
        }
        const char e = format_[pos_ + 1];
        if (e != '\\' && e != '&' && e != '?') {
          fail(fmt::format("invalid escape '\\{}'", e));
        }
        text += e;
        pos_ += 2;
        continue;
      }
      if (c != '%') {
        text += c;
        ++pos_;
        continue;
      }
      if (pos_ + 1 >= format_.size()) {
        fail("trailing '%'");
      }
      const char spec = format_[pos_ + 1];
      PrefixVar var{};
      if (spec == '%') {
        text += '%';
        pos_ += 2;
      } else if (variable(spec, var)) {
        flush();
        node.items.emplace_back(var);
        pos_ += 2;
      } else if (spec == '?') {
        flush();
        node.items.emplace_back(conditional());
      } else {
        fail(fmt::format("unknown sequence '%{}'", spec));
      }
    }
    flush();
    return node;
  }

  // At "%?X?": reads the whole conditional, closing '?' included.
  PrefixCond conditional() {
    const size_t start = pos_;
    // The parser, expand_node() and the tree's destructor recurse once per
    // level: a bound keeps a hostile format from overflowing the stack.
    if (depth_ == LogPrefix::kMaxNesting)
      fail(fmt::format("conditionals nested more than {} deep", LogPrefix::kMaxNesting));
    ++depth_;
    pos_ += 2;
    PrefixCond cond{};
    if (pos_ >= format_.size() || !variable(format_[pos_], cond.var)) {
      fail(pos_ >= format_.size() ? std::string("unterminated conditional")
                                  : fmt::format("unknown conditional variable '{}'", format_[pos_]));
    }
    ++pos_;
    if (pos_ >= format_.size() || format_[pos_] != '?') {
      fail("expected '?' after the conditional variable");
    }
    ++pos_;
    char stop = 0;
    cond.then_branch = std::make_shared<const PrefixSeq>(sequence(true, stop));
    if (stop == '&') {
      ++pos_;
      cond.else_branch = std::make_shared<const PrefixSeq>(sequence(true, stop));
      if (stop == '&') {
        fail("second '&' in a conditional");
      }
    }
    if (stop != '?') {
      pos_ = start;
      fail("unterminated conditional");
    }
    ++pos_;
    --depth_;
    return cond;
  }

  std::string_view format_;
  size_t pos_ = 0;
  size_t depth_ = 0;  // conditionals open at pos_
};

void expand_node(const PrefixSeq& node, std::string_view name, std::string_view mailbox, std::string& out) {
  for (const auto& item : node.items) {
    if (const auto* text = std::get_if<std::string>(&item)) {
      out += *text;
    } else if (const auto* var = std::get_if<PrefixVar>(&item)) {
      out += *var == PrefixVar::Name ? name : mailbox;
    } else {
      const auto& cond = std::get<PrefixCond>(item);
      const std::string_view value = cond.var == PrefixVar::Name ? name : mailbox;
      const auto& branch = !value.empty() ? cond.then_branch : cond.else_branch;
      if (branch) {
        expand_node(*branch, name, mailbox, out);
      }
    }
  }
}

// The reference's timestamp for log files: strftime "%b %e %H:%M:%S", a dot
// and the sub-second part (we zero-pad the microseconds, so it sorts).
std::string timestamp() {
  struct timeval tv {};
  gettimeofday(&tv, nullptr);
  struct tm tm {};
  localtime_r(&tv.tv_sec, &tm);
  char buf[64];
  const size_t n = std::strftime(buf, sizeof buf, "%b %e %H:%M:%S", &tm);
  return fmt::format("{}.{:06d}", std::string_view(buf, n), static_cast<long>(tv.tv_usec));
}

// One write(2) per line (O_APPEND for files), so that lines from several
// writers never interleave; a short write is completed rather than lost.
void write_line(int fd, std::string_view line) {
  while (!line.empty()) {
    const ssize_t n = ::write(fd, line.data(), line.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return;  // nowhere left to report a logging failure
    }
    line.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace

LogPrefix::LogPrefix(std::string_view format)
    : root_(std::make_shared<const Node>(Node{PrefixParser(format).parse()})) {}

std::string LogPrefix::expand(std::string_view name, std::string_view mailbox) const {
  std::string out;
  expand_node(root_->seq, name, mailbox, out);
  return out;
}

void Logger::open_file(const std::string& path) {
  // "a": O_APPEND, like the reference's '>>'; "e": O_CLOEXEC, so tunnel
  // commands do not inherit the log file (the reference sets FD_CLOEXEC).
  std::FILE* f = std::fopen(path.c_str(), "ae");
  if (f == nullptr) {
    throw Error(fmt::format("Can't open {}: {}", path, std::strerror(errno)));
  }
  file_.reset(f, [](std::FILE* p) { std::fclose(p); });
}

void Logger::log(LogLevel level, std::string_view name, std::string_view mailbox, std::string_view message) {
  if (level == LogLevel::Debug && debug_ <= 0) {
    return;
  }
  if (level == LogLevel::Info && quiet_) {
    return;
  }
  write(level, name, mailbox, message);
}

void Logger::notice(std::string_view name, std::string_view mailbox, std::string_view message) {
  write(LogLevel::Info, name, mailbox, message);
}

void Logger::Capture::add(Record record) {
  const std::lock_guard<std::mutex> lock(mutex_);
  records_.push_back(std::move(record));
}

std::vector<Logger::Record> Logger::Capture::take() {
  const std::lock_guard<std::mutex> lock(mutex_);
  return std::exchange(records_, {});
}

void Logger::replay(const std::vector<Record>& records) {
  for (const auto& r : records) write(r.level, r.name, r.mailbox, r.message);
}

void Logger::write(LogLevel level, std::string_view name, std::string_view mailbox, std::string_view message) {
  if (capture_) {
    capture_->add({level, std::string(name), std::string(mailbox), std::string(message)});
    return;
  }
  // The reference writes "PREFIX" + "WARNING: " / "ERROR: " + message;
  // informational and debug lines carry no level tag.
  std::string_view tag;
  if (level == LogLevel::Error) {
    tag = "ERROR: ";
  } else if (level == LogLevel::Warning) {
    tag = "WARNING: ";
  }
  // Names, mailboxes and messages may hold what a server sent: one line
  // each, whatever the server put in them (doc/design.md "Errors").
  const std::string line = fmt::format("{}{}{}{}\n", marker_, detail::escape_controls(prefix_.expand(name, mailbox)),
                                       tag, detail::escape_controls(message));
  if (level != LogLevel::Debug) ++lines_;
  if (file_) {
    // Log file lines are timestamped.  Debug lines go to the file only;
    // the others also go to stderr, as the reference's log() does.
    write_line(fileno(file_.get()), fmt::format("{} {}", timestamp(), line));
    if (level == LogLevel::Debug) {
      return;
    }
  }
  write_line(STDERR_FILENO, line);
}

}  // namespace interimap
