// interimap::Error: component(), message() and what().
#include <interimap/connection.hpp>
#include <interimap/error.hpp>
#include <interimap/syncsession.hpp>

#include <doctest/doctest.h>

#include <string>

using interimap::CommandError;
using interimap::CommandStatus;
using interimap::Error;

TEST_CASE("Error: what() is \"component: message\", or the message alone") {
  struct Case {
    const char* component;
    const char* message;
    const char* what;
  };
  const Case cases[] = {
      {"remote", "server lacks required capability QRESYNC", "remote: server lacks required capability QRESYNC"},
      {"local", "INBOX: UID STORE: x", "local: INBOX: UID STORE: x"},
      {"database", "", "database: "},
      {"", "no component", "no component"},
      {"", "", ""},
  };
  for (const auto& c : cases) {
    CAPTURE(c.component);
    CAPTURE(c.message);
    const interimap::NetworkError e(c.component, c.message);
    CHECK(std::string(e.what()) == c.what);
    CHECK(e.component() == c.component);
    CHECK(std::string(e.message()) == c.message);
    // A copy keeps both.
    const Error copy = e;
    CHECK(std::string(copy.message()) == c.message);
    CHECK(copy.component() == c.component);
  }
  const Error plain("local: looks like a component but is not");
  CHECK(plain.component().empty());
  CHECK(std::string(plain.message()) == plain.what());
}

TEST_CASE("Error: the subclasses take the component too") {
  const interimap::SyncError s("remote", "Couldn't delete mailbox x: NO y");
  CHECK(std::string(s.what()) == "remote: Couldn't delete mailbox x: NO y");
  CHECK(std::string(s.message()) == "Couldn't delete mailbox x: NO y");
  const interimap::ConfigError c("remote", "missing option password");
  CHECK(c.component() == "remote");
  const CommandError ce("local", "command CREATE \"x\" failed: NO [ALREADYEXISTS] exists", "CREATE", "NO",
                        "ALREADYEXISTS", "exists");
  CHECK(std::string(ce.what()) == "local: command CREATE \"x\" failed: NO [ALREADYEXISTS] exists");
  CHECK(ce.component() == "local");
  CHECK(ce.command() == "CREATE");
  CHECK(ce.code() == "ALREADYEXISTS");
}

TEST_CASE("CommandStatus::describe") {
  struct Case {
    CommandStatus::Kind kind;
    const char* code;
    const char* code_data;
    const char* text;
    const char* expected;
  };
  const Case cases[] = {
      {CommandStatus::Kind::Ok, "", "", "done", "OK done"},
      {CommandStatus::Kind::No, "ALREADYEXISTS", "", "Mailbox exists", "NO [ALREADYEXISTS] Mailbox exists"},
      {CommandStatus::Kind::No, "BADCHARSET", "(UTF-8)", "no", "NO [BADCHARSET (UTF-8)] no"},
      {CommandStatus::Kind::Bad, "", "", "Error in IMAP command", "BAD Error in IMAP command"},
      {CommandStatus::Kind::No, "", "", "", "NO "},
  };
  for (const auto& c : cases) {
    CAPTURE(c.expected);
    CommandStatus st;
    st.kind = c.kind;
    st.code = c.code;
    st.code_data = c.code_data;
    st.text = c.text;
    CHECK(st.describe() == c.expected);
    CHECK(st.ok() == (c.kind == CommandStatus::Kind::Ok));
  }
}
