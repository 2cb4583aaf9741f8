// interimap --dry-run's pieces that need no server: the database's private
// copy (StateOptions::private_copy), the read-only append journal, the
// table of commands a dry-run connection never sends, PlannedChanges and
// the Logger's marker.  Each test works in its own temp directory.
#include <interimap/dry_run.hpp>
#include <interimap/error.hpp>
#include <interimap/log.hpp>
#include <interimap/statedb.hpp>

#include "imap/client.hpp"
#include "imap/dry_run.hpp"
#include "sync/append_journal.hpp"

#include "test_util.hpp"

#include <doctest/doctest.h>

#include <sys/stat.h>

#include <filesystem>
#include <string>
#include <utility>

using interimap::Side;
using interimap::StateDB;
using interimap::StateOptions;
using test_util::TempDir;

namespace {

// The file's bytes and modification time: what a dry run must leave as is.
std::pair<std::string, int64_t> fingerprint(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return {test_util::read_file(path), static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

StateOptions private_copy() {
  StateOptions o;
  o.private_copy = true;
  return o;
}

}  // namespace

TEST_CASE("private copy: writes go to memory, the file keeps its bytes and mtime; differs_from_file() tells") {
  TempDir dir("dryrun");
  const std::string path = dir.file("state.db");
  interimap::MailboxId idx = 0;
  {
    StateDB db(path);
    db.ensure_schema('/', '/');
    auto tx = db.begin();
    idx = db.add_mailbox("INBOX", true);
    db.init_state(idx, 11, 22);
    db.set_state(idx, Side::Local, 5, 7);
    db.set_state(idx, Side::Remote, 6, 8);
    db.add_mapping(idx, {1, 2});
    tx.commit();
  }
  const auto before = fingerprint(path);
  {
    StateDB db(path, private_copy());
    db.ensure_schema('/', '/');
    CHECK(db.find_mailbox("INBOX")->idx == idx);
    CHECK(db.lookup(idx, Side::Local, 1) == 2u);
    CHECK_FALSE(db.differs_from_file());
    {
      // The same values written again (a plain side's run does so): no difference.
      auto tx = db.begin();
      db.set_state(idx, Side::Local, 5, 7);
      tx.commit();
    }
    CHECK_FALSE(db.differs_from_file());
    {
      auto tx = db.begin();
      db.add_mapping(idx, {3, 4});
      tx.commit();
    }
    CHECK(db.differs_from_file());
    {
      auto tx = db.begin();
      CHECK(db.remove_mapping(idx, Side::Local, 3));
      db.set_state(idx, Side::Remote, 9, 8);
      tx.commit();
    }
    CHECK(db.differs_from_file());
    // A second one at the same time: the copy holds no lock.
    StateDB other(path, private_copy());
    other.ensure_schema('/', '/');
    CHECK(other.state(idx)->sides[1].uidnext == 6);
  }
  CHECK(fingerprint(path) == before);
  CHECK_FALSE(std::filesystem::exists(path + "-journal"));
  // The file is still the real run's to open and lock.
  StateDB real(path);
  real.ensure_schema('/', '/');
  CHECK(real.state(idx)->sides[1].uidnext == 6);
  // ... and a private copy of a locked file is refused at once.
  CHECK_THROWS_AS(StateDB(path, private_copy()), interimap::StateLockedError);
}

TEST_CASE("private copy of a missing file: an empty database in memory, no file created") {
  TempDir dir("dryrun");
  const std::string path = dir.file("new.db");
  {
    StateDB db(path, private_copy());
    std::vector<std::string> notices;
    db.ensure_schema('/', '/', [&](std::string_view line) { notices.emplace_back(line); });
    CHECK(notices == std::vector<std::string>{"Creating new schema in database file " + path});
    auto tx = db.begin();
    db.add_mailbox("INBOX", false);
    tx.commit();
    CHECK(db.differs_from_file());
  }
  CHECK_FALSE(std::filesystem::exists(path));
  StateOptions o = private_copy();
  o.create_if_missing = false;
  CHECK_THROWS_AS(StateDB(path, o), interimap::StateError);
  // differs_from_file() needs a private copy.
  StateDB real(dir.file("real.db"));
  CHECK_THROWS_AS(real.differs_from_file(), std::logic_error);
}

TEST_CASE("read-only append journal: read, never written or removed; cleared only in memory") {
  TempDir dir("dryrun");
  const std::string path = dir.file("state.db-appends");
  using Copy = interimap::detail::sync::AppendJournal::Copy;
  {
    interimap::detail::sync::AppendJournal writer(path);
    writer.record(1, Side::Local, 5, {Copy{10, "a", "\\Seen"}});
  }
  const std::string bytes = test_util::read_file(path);
  interimap::detail::sync::AppendJournal journal(path, /*read_only=*/true);
  REQUIRE(journal.entries(1, Side::Local, 5).size() == 1);
  CHECK(journal.latest(1, Side::Local).at(10).flags == "\\Seen");
  journal.record(1, Side::Local, 5, {Copy{11, "b", ""}});
  CHECK(test_util::read_file(path) == bytes);
  CHECK(journal.entries(1, Side::Local, 5).size() == 1);
  journal.clear();
  CHECK(test_util::read_file(path) == bytes);
  CHECK(journal.entries(1, Side::Local, 5).empty());
  CHECK(journal.latest(1, Side::Local).empty());
  // None there: none created.
  interimap::detail::sync::AppendJournal absent(dir.file("none-appends"), true);
  absent.record(1, Side::Local, 5, {Copy{10, "a", ""}});
  CHECK_FALSE(std::filesystem::exists(dir.file("none-appends")));
}

TEST_CASE("the commands a dry-run connection never sends") {
  using interimap::detail::imap::changes_server;
  for (const char* c : {"SELECT", "select", "STORE", "UID STORE", "uid store", "EXPUNGE", "UID EXPUNGE", "APPEND",
                        "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "COPY", "UID COPY", "MOVE",
                        "UID MOVE", "SETACL", "DELETEACL", "SETQUOTA", "SETMETADATA"})
    CHECK_MESSAGE(changes_server(c), c);
  for (const char* c : {"EXAMINE", "UID FETCH", "FETCH", "UID SEARCH", "STATUS", "LIST", "LSUB", "NOOP", "CLOSE",
                        "UNSELECT", "ENABLE", "CAPABILITY", "LOGIN", "AUTHENTICATE", "LOGOUT", "IDLE", "COMPRESS",
                        "NOTIFY", "ID", "STARTTLS", "GETMETADATA"})
    CHECK_FALSE_MESSAGE(changes_server(c), c);
}

TEST_CASE("a dry-run client refuses to send a command that writes, whatever asks it to") {
  interimap::Logger logger;
  interimap::ConnectionOptions options;
  options.name = "remote";
  options.dry_run = true;
  interimap::detail::imap::Client dry(options, logger);
  REQUIRE(dry.dry_run() != nullptr);
  for (const char* verb : {"SELECT", "UID STORE", "UID EXPUNGE", "APPEND", "CREATE", "DELETE", "UID MOVE"})
    CHECK_THROWS_WITH_AS(dry.send(dry.command(verb).raw("x").build()),
                         (std::string("remote: dry run: refusing to send ") + verb).c_str(), std::logic_error);
  // A read goes on to the stream (none here: not connected).
  CHECK_THROWS_AS(dry.send(dry.command("EXAMINE").raw("INBOX").build()), interimap::NetworkError);
  options.dry_run = false;
  interimap::detail::imap::Client real(options, logger);
  CHECK(real.dry_run() == nullptr);
  CHECK_THROWS_AS(real.send(real.command("UID STORE").raw("1").build()), interimap::NetworkError);
}

TEST_CASE("PlannedChanges::empty") {
  interimap::PlannedChanges p;
  CHECK(p.empty());
  p.mailboxes["INBOX"];  // looked at, nothing planned
  CHECK(p.empty());
  SUBCASE("append") { p.mailboxes["INBOX"].appended = 1; }
  SUBCASE("expunge") { p.mailboxes["INBOX"].expunged.insert(3); }
  SUBCASE("flag added") { p.mailboxes["INBOX"].flags_added["\\Seen"].insert(3); }
  SUBCASE("flag removed") { p.mailboxes["INBOX"].flags_removed["\\Seen"].insert(3); }
  SUBCASE("create") { p.created.push_back("a"); }
  SUBCASE("delete") { p.deleted.push_back("a"); }
  SUBCASE("subscribe") { p.subscribed.push_back("a"); }
  SUBCASE("unsubscribe") { p.unsubscribed.push_back("a"); }
  SUBCASE("rename") { p.renamed.emplace_back("a", "b"); }
  CHECK_FALSE(p.empty());
}

TEST_CASE("Logger marker: before the prefix, after a log file's timestamp") {
  TempDir dir("dryrun");
  const std::string path = dir.file("log");
  interimap::Logger logger;
  logger.open_file(path);
  logger.set_marker("(dry run) ");
  logger.log(interimap::LogLevel::Debug, "local", "INBOX", "hidden");  // debug 0: not written
  logger.set_debug(1);
  logger.info("local", "Created mailbox a");
  logger.warning("", "careful");
  const std::string text = test_util::read_file(path);
  CHECK(text.find(" (dry run) local: Created mailbox a\n") != std::string::npos);
  CHECK(text.find(" (dry run) WARNING: careful\n") != std::string::npos);
  CHECK(text.find("hidden") == std::string::npos);
}
