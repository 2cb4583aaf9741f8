// LogPrefix (interimap(1) log-prefix) and Logger line shapes.
#include <interimap/error.hpp>
#include <interimap/log.hpp>

#include "test_util.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include <fcntl.h>
#include <unistd.h>

using interimap::ConfigError;
using interimap::LogLevel;
using interimap::Logger;
using interimap::LogPrefix;

namespace {

struct ExpandCase {
  const char* format;
  const char* name;
  const char* mailbox;
  const char* expected;
};

// Expected values were produced by the reference's _logger_prefix
// (Net::IMAP::InterIMAP 0.5.7) for the same inputs.
const ExpandCase kExpand[] = {
    {"%?n?%?m?%n(%m)&%n?: ?", "remote", "INBOX", "remote(INBOX): "},
    {"%?n?%?m?%n(%m)&%n?: ?", "remote", "", "remote: "},
    {"%?n?%?m?%n(%m)&%n?: ?", "", "INBOX", ""},
    {"%?n?%?m?%n(%m)&%n?: ?", "", "", ""},
    {"[%n] %m: ", "local", "Sent", "[local] Sent: "},
    {"%%n", "x", "y", "%n"},
    {"a\\&b\\?c\\\\d ", "x", "y", "a&b?c\\d "},
    {"%?m?<%m>&no mailbox?", "x", "", "no mailbox"},
    {"%?m?<%m>&no mailbox?", "x", "A", "<A>"},
    {"%?n?%?m?\\?&\\&?&-?", "x", "", "&"},
    {"%?n?%?m?\\?&\\&?&-?", "x", "y", "?"},
    {"%?n?%?m?\\?&\\&?&-?", "", "y", "-"},
    {"%?m??", "x", "y", ""},
    {"%?m?&?", "x", "y", ""},
    {"%?m?&e?", "x", "", "e"},
    {"%n%%%m", "local", "INBOX", "local%INBOX"},
    {"", "local", "INBOX", ""},
    {"%?n?n=%n %?m?m=%m&nomb? ?", "local", "INBOX", "n=local m=INBOX "},
    {"%?n?n=%n %?m?m=%m&nomb? ?", "local", "", "n=local nomb "},
    {"%?n?%?n?%?n?deep???", "x", "", "deep"},
    {"%?n?%?n?%?n?deep???", "", "", ""},
    {"100%% (%m)", "x", "Drafts", "100% (Drafts)"},
};

}  // namespace

TEST_CASE("LogPrefix expands like the reference") {
  for (const auto& c : kExpand) {
    CAPTURE(c.format);
    CAPTURE(c.name);
    CAPTURE(c.mailbox);
    CHECK(LogPrefix(c.format).expand(c.name, c.mailbox) == c.expected);
  }
}

TEST_CASE("LogPrefix default is the reference's default") {
  CHECK(LogPrefix::kDefault == "%?n?%?m?%n(%m)&%n?: ?");
  LogPrefix prefix;
  CHECK(prefix.expand("local", "Archive/2024") == "local(Archive/2024): ");
  CHECK(prefix.expand("local", "") == "local: ");
  CHECK(prefix.expand("", "") == "");
}

TEST_CASE("LogPrefix rejects malformed formats, naming the format") {
  const char* const cases[] = {
      "%",                   // trailing '%'
      "abc%",                //
      "%x",                  // unknown sequence
      "%d: ",                //
      "%?",                  // unterminated conditional
      "%?n",                 //
      "%?n?",                //
      "%?n?then",            //
      "%?n?then&else",       //
      "%?n?a&b&c?",          // two '&'
      "%?x?a?",              // unknown conditional variable
      "%?%?a?",              //
      "%?nn?a?",             // '?' must follow the variable
      "%?n?%?m?a?",          // inner conditional closed, outer not
      "a?b",                 // unescaped '?' outside a conditional
      "a&b",                 // unescaped '&' outside a conditional
      "%?n?a??",             // stray '?' after a conditional
      "\\",                  // trailing backslash
      "\\n",                 // invalid escape
      "%?n?\\x?",            //
      "a\tb",                // control character
  };
  for (const char* format : cases) {
    CAPTURE(format);
    CHECK_THROWS_AS(LogPrefix{format}, ConfigError);
    try {
      LogPrefix prefix{format};
    } catch (const ConfigError& e) {
      CHECK(std::string(e.what()).find(std::string("\"") + format + "\"") != std::string::npos);
      CHECK(std::string(e.what()).find("log-prefix") != std::string::npos);
    }
  }
}

namespace {

// Captures what Logger writes to fd 2 while `fn` runs.
template <typename Fn>
std::string capture_stderr(Fn fn) {
  const test_util::TempFile tmp("interimap-test-stderr");
  const int fd = open(tmp.path().c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  const int saved = dup(STDERR_FILENO);
  REQUIRE(saved >= 0);
  dup2(fd, STDERR_FILENO);
  fn();
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(fd);
  return test_util::read_file(tmp.path());
}

// Checks the "%b %e %H:%M:%S.uuuuuu " timestamp at the start of `line` and
// returns what follows it, or nullopt when the shape differs.
std::optional<std::string> strip_timestamp(const std::string& line) {
  static const std::string months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  //                         "Jan  5 12:34:56.123456 "
  const std::string shape = "MMM DD 99:99:99.999999 ";
  if (line.size() < shape.size()) {
    return std::nullopt;
  }
  if (std::find(std::begin(months), std::end(months), line.substr(0, 3)) == std::end(months)) {
    return std::nullopt;
  }
  for (size_t i = 3; i < shape.size(); ++i) {
    const char c = line[i];
    const bool ok = shape[i] == '9' ? (c >= '0' && c <= '9')
                    : shape[i] == 'D' ? (c == ' ' || (c >= '0' && c <= '9'))
                                      : c == shape[i];
    if (!ok) {
      return std::nullopt;
    }
  }
  if (line[4] == ' ' && line[5] == '0') {
    return std::nullopt;  // %e pads with a blank, not a zero
  }
  return line.substr(shape.size());
}

}  // namespace

TEST_CASE("LogPrefix bounds the nesting of conditionals") {
  // n conditionals, each inside the then-branch of the previous one.
  auto nested = [](size_t n) {
    std::string f;
    for (size_t i = 0; i < n; ++i) f += "%?n?";
    f += "x";
    for (size_t i = 0; i < n; ++i) f += "?";
    return f;
  };
  const size_t max = interimap::LogPrefix::kMaxNesting;
  CHECK(interimap::LogPrefix(nested(max)).expand("local", "") == "x");
  CHECK(interimap::LogPrefix(nested(max)).expand("", "") == "");
  for (size_t n : {max + 1, size_t{200000}}) {
    CAPTURE(n);
    const std::string error = test_util::error_of<interimap::ConfigError>([&] { interimap::LogPrefix p(nested(n)); });
    CHECK(error.find("conditionals nested more than 64 deep at offset 256") != std::string::npos);
  }
  // Sequential conditionals are not nested: any number of them.
  std::string flat;
  for (int i = 0; i < 1000; ++i) flat += "%?n?a?";
  CHECK(interimap::LogPrefix(flat).expand("n", "").size() == 1000);
}

TEST_CASE("Logger writes reference-shaped lines to stderr") {
  Logger logger;
  std::string out = capture_stderr([&] {
    logger.info("remote", "Added 1 UID(s)");
    logger.warning("local", "something odd");
    logger.error("remote", "Can't connect");
    logger.log(LogLevel::Warning, "remote", "INBOX", "UIDVALIDITY changed");
    logger.log(LogLevel::Info, "", "INBOX", "no name, no prefix");
    logger.log(LogLevel::Debug, "local", "", "not shown without --debug");
  });
  CHECK(out ==
        "remote: Added 1 UID(s)\n"
        "local: WARNING: something odd\n"
        "remote: ERROR: Can't connect\n"
        "remote(INBOX): WARNING: UIDVALIDITY changed\n"
        "no name, no prefix\n");
}

TEST_CASE("Logger escapes control characters: one line per message, whatever a server sent") {
  Logger logger;
  std::string out = capture_stderr([&] {
    logger.info("local", "Created mailbox a\r\nremote: ERROR: forged");
    logger.log(LogLevel::Warning, "remote", "IN\x1b[31mBOX", "[ALERT] \x07" "bell\x7f");
    logger.info("local", "tab\there, 8-bit \xc3\xa9 kept");
  });
  CHECK(out ==
        "local: Created mailbox a\\x0d\\x0aremote: ERROR: forged\n"
        "remote(IN\\x1b[31mBOX): WARNING: [ALERT] \\x07bell\\x7f\n"
        "local: tab\\x09here, 8-bit \xc3\xa9 kept\n");
}

TEST_CASE("Logger quiet drops Info only; debug shows Debug") {
  Logger logger;
  logger.set_quiet(true);
  logger.set_debug(1);
  CHECK(logger.debug() == 1);
  std::string out = capture_stderr([&] {
    logger.info("local", "dropped");
    logger.warning("local", "kept");
    logger.error("local", "kept too");
    logger.log(LogLevel::Debug, "local", "", "C: 1 NOOP");
  });
  CHECK(out == "local: WARNING: kept\nlocal: ERROR: kept too\nlocal: C: 1 NOOP\n");
}

TEST_CASE("Logger uses the configured prefix") {
  Logger logger;
  logger.set_prefix(LogPrefix("[%n%?m?/%m?] "));
  std::string out = capture_stderr([&] {
    logger.info("local", "hello");
    logger.log(LogLevel::Error, "remote", "Sent", "oops");
  });
  CHECK(out == "[local] hello\n[remote/Sent] ERROR: oops\n");
}

TEST_CASE("Logger log file: timestamps; debug to the file only, the rest to both") {
  const test_util::TempFile tmp("interimap-test-log");
  test_util::write_file(tmp.path(), "previous line\n");  // the file is appended to, not truncated
  Logger logger;
  logger.set_debug(1);
  logger.open_file(tmp.path());
  std::string err = capture_stderr([&] {
    logger.info("local", "info line");
    logger.log(LogLevel::Debug, "remote", "", "debug line");
    logger.warning("remote", "warn line");
  });
  CHECK(err == "local: info line\nremote: WARNING: warn line\n");
  std::istringstream lines(test_util::read_file(tmp.path()));
  std::string line;
  std::getline(lines, line);
  CHECK(line == "previous line");
  // "%b %e %H:%M:%S" then a dot and microseconds, then the line.
  const char* const expected[] = {"local: info line", "remote: debug line", "remote: WARNING: warn line"};
  for (const char* want : expected) {
    CAPTURE(want);
    REQUIRE(std::getline(lines, line));
    CHECK(strip_timestamp(line) == std::optional<std::string>(want));
  }
  CHECK_FALSE(std::getline(lines, line));
}

TEST_CASE("Logger::open_file failure names the file") {
  Logger logger;
  try {
    logger.open_file("/nonexistent-dir/interimap.log");
    FAIL("no exception");
  } catch (const interimap::Error& e) {
    CHECK(std::string(e.what()).find("/nonexistent-dir/interimap.log") != std::string::npos);
  }
}

TEST_CASE("Logger::capture keeps the filtered lines; replay writes them as the logger's own") {
  interimap::Logger worker;
  worker.set_quiet(true);
  auto capture = std::make_shared<interimap::Logger::Capture>();
  worker.capture(capture);
  worker.info("local", "dropped: quiet");
  worker.warning("remote", "kept");
  worker.notice("local", "INBOX", "kept too");
  worker.log(interimap::LogLevel::Debug, "local", {}, "dropped: no debug");
  CHECK(worker.lines() == 0);  // nothing written yet
  const auto records = capture->take();
  REQUIRE(records.size() == 2);
  CHECK(records[0].level == interimap::LogLevel::Warning);
  CHECK(records[0].name == "remote");
  CHECK(records[0].message == "kept");
  CHECK(records[1].mailbox == "INBOX");
  CHECK(capture->take().empty());  // taken once
  test_util::TempDir dir("iit-capture");
  interimap::Logger main;
  main.open_file(dir.file("log"));
  main.replay(records);
  CHECK(main.lines() == 2);
  std::ifstream in(dir.file("log"));
  std::stringstream text;
  text << in.rdbuf();
  CHECK(text.str().find("remote: WARNING: kept\n") != std::string::npos);
  CHECK(text.str().find("local(INBOX): kept too\n") != std::string::npos);
}
