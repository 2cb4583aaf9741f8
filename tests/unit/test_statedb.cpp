// StateDB: the reference's schema byte for byte, the version-0 upgrade, the
// exclusive lock, transactions, mailboxes (names with NUL delimiters),
// per-side state and mappings.  Each test works in its own temp directory.
#include <interimap/statedb.hpp>

#include "test_util.hpp"

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <sys/stat.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

using namespace std::string_literals;
using interimap::Mapping;
using interimap::MailboxExistsError;
using interimap::MailboxId;
using interimap::Side;
using interimap::StateDB;
using interimap::StateError;
using interimap::StateLockedError;
using interimap::UidOrder;
using test_util::TempDir;

namespace {

// The reference's schema as SQLite records it, generated from interimap
// 0.5.7's @schema ("CREATE TABLE NAME (" . join(", ", @columns) . ")").
const char* const kReferenceMailboxes =
    "CREATE TABLE mailboxes (idx        INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, mailbox    BLOB COLLATE "
    "BINARY NOT NULL CHECK (mailbox != '') UNIQUE, subscribed BOOLEAN NOT NULL)";
const char* const kReferenceLocal =
    "CREATE TABLE local (idx           INTEGER         NOT NULL PRIMARY KEY REFERENCES mailboxes(idx), "
    "UIDVALIDITY   UNSIGNED INT    NOT NULL CHECK (UIDVALIDITY > 0), UIDNEXT       UNSIGNED INT    NOT NULL, "
    "HIGHESTMODSEQ UNSIGNED BIGINT NOT NULL)";
const char* const kReferenceRemote =
    "CREATE TABLE remote (idx           INTEGER         NOT NULL PRIMARY KEY REFERENCES mailboxes(idx), "
    "UIDVALIDITY   UNSIGNED INT    NOT NULL CHECK (UIDVALIDITY > 0), UIDNEXT       UNSIGNED INT    NOT NULL, "
    "HIGHESTMODSEQ UNSIGNED BIGINT NOT NULL)";
const char* const kReferenceMapping =
    "CREATE TABLE mapping (idx  INTEGER      NOT NULL REFERENCES mailboxes(idx), lUID UNSIGNED INT NOT NULL "
    "CHECK (lUID > 0), rUID UNSIGNED INT NOT NULL CHECK (rUID > 0), PRIMARY KEY (idx,lUID), UNIQUE      "
    "(idx,rUID))";

// The version-0 table (interimap < 0.5): names as TEXT with the server's
// hierarchy delimiter.  The other tables were already as in version 1.
const char* const kVersion0Mailboxes =
    "CREATE TABLE mailboxes (idx        INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, mailbox    TEXT    NOT NULL "
    "CHECK (mailbox != '') UNIQUE, subscribed BOOLEAN NOT NULL)";

// A plain SQLite connection, for building fixtures and inspecting files
// behind StateDB's back (only while no StateDB holds the file).
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK)
      throw std::runtime_error("open " + path);
  }
  ~RawDb() { sqlite3_close_v2(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  int exec(const std::string& sql) { return sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr); }
  // Column 0 of each row, as bytes ("NULL" for NULL).
  std::vector<std::string> column(const std::string& sql) {
    std::vector<std::string> out;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK)
      throw std::runtime_error(sqlite3_errmsg(db_));
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      if (sqlite3_column_type(stmt, 0) == SQLITE_NULL) {
        out.emplace_back("NULL");
        continue;
      }
      const void* data = sqlite3_column_blob(stmt, 0);
      const int n = sqlite3_column_bytes(stmt, 0);
      out.emplace_back(static_cast<const char*>(data), static_cast<std::size_t>(n));
    }
    sqlite3_finalize(stmt);
    return out;
  }
  std::string value(const std::string& sql) {
    auto rows = column(sql);
    return rows.empty() ? "" : rows.front();
  }

 private:
  sqlite3* db_ = nullptr;
};

// An open, ready database in a temp dir.
struct Fixture {
  TempDir dir{"statedb"};
  std::string path = dir.file("test.db");
  StateDB db{path};
  Fixture() { db.ensure_schema('/', '/'); }
};

MailboxId add_with_state(StateDB& db, std::string_view name, std::uint32_t luv = 11, std::uint32_t ruv = 22) {
  auto tx = db.begin();
  MailboxId idx = db.add_mailbox(name, true);
  db.init_state(idx, luv, ruv);
  tx.commit();
  return idx;
}

std::vector<std::string> names(const StateDB& db) {
  std::vector<std::string> out;
  for (const auto& m : db.mailboxes()) out.push_back(m.name);
  return out;
}

}  // namespace

TEST_CASE("Side helpers") {
  CHECK(interimap::other(Side::Local) == Side::Remote);
  CHECK(interimap::other(Side::Remote) == Side::Local);
  CHECK(interimap::index(Side::Local) == 0);
  CHECK(interimap::index(Side::Remote) == 1);
  CHECK(interimap::to_string(Side::Local) == "local");
  CHECK(interimap::to_string(Side::Remote) == "remote");
  Mapping m{3, 7};
  CHECK(m.uid(Side::Local) == 3);
  CHECK(m.uid(Side::Remote) == 7);
}

TEST_CASE("default_path follows the reference's xdg_basedir") {
  TempDir dir("statedb");
  const std::string data = dir.path().string();

  SUBCASE("absolute database option: as is, nothing created") {
    CHECK(StateDB::default_path("/var/x.db"s, "imap.example.net", data) == "/var/x.db");
    CHECK_FALSE(std::filesystem::exists(dir.path() / "interimap"));
  }
  SUBCASE("relative database option: under DATA_HOME/interimap, created 0700") {
    CHECK(StateDB::default_path("sub.db"s, "imap.example.net", data) == data + "/interimap/sub.db");
    struct stat st {};
    REQUIRE(::stat((dir.path() / "interimap").c_str(), &st) == 0);
    CHECK(S_ISDIR(st.st_mode));
    CHECK((st.st_mode & 0777) == (0700 & ~[] { mode_t m = ::umask(0); ::umask(m); return m; }()));
    // Existing directory: fine.
    CHECK(StateDB::default_path("sub.db"s, "imap.example.net", data) == data + "/interimap/sub.db");
  }
  SUBCASE("no database option: HOST.db, localhost.db for a tunnel") {
    CHECK(StateDB::default_path(std::nullopt, "imap.example.net", data) == data + "/interimap/imap.example.net.db");
    CHECK(StateDB::default_path(std::nullopt, "localhost", data) == data + "/interimap/localhost.db");
  }
  SUBCASE("missing DATA_HOME") {
    CHECK_THROWS_WITH_AS(StateDB::default_path(std::nullopt, "h", data + "/nope"),
                         ("No such directory: " + data + "/nope").c_str(), StateError);
  }
}

TEST_CASE("a new database gets the reference's schema, mode 0600 and user_version 1") {
  TempDir dir("statedb");
  const std::string path = dir.file("new.db");
  std::vector<std::string> notices;
  {
    StateDB db(path);
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0077) == 0);  // 0600 minus the umask
    CHECK((st.st_mode & 0777) <= 0600);
    db.ensure_schema('.', '/', [&](std::string_view line) { notices.emplace_back(line); });
  }
  CHECK(notices == std::vector<std::string>{"Creating new schema in database file " + path});

  RawDb raw(path);
  CHECK(raw.value("PRAGMA user_version") == "1");
  // The reference's tables exactly; our own additions live apart, in
  // tables named interimap_* (which the reference ignores).
  CHECK(raw.column("SELECT sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'interimap\\_%' "
                   "ESCAPE '\\' ORDER BY rowid") ==
        std::vector<std::string>{kReferenceMailboxes, "CREATE TABLE sqlite_sequence(name,seq)", kReferenceLocal,
                                 kReferenceRemote, kReferenceMapping});
  CHECK(raw.column("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'interimap\\_%' "
                   "ESCAPE '\\' ORDER BY name") == std::vector<std::string>{"interimap_flags", "interimap_pending_append"});
  // The implicit indexes of the UNIQUE and PRIMARY KEY constraints.
  CHECK(raw.column("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name NOT LIKE 'interimap\\_%' "
                   "ESCAPE '\\' ORDER BY name") ==
        std::vector<std::string>{"sqlite_autoindex_mailboxes_1", "sqlite_autoindex_mapping_1",
                                 "sqlite_autoindex_mapping_2"});
}

TEST_CASE("opening an existing version-1 database changes nothing") {
  TempDir dir("statedb");
  const std::string path = dir.file("v1.db");
  MailboxId idx = 0;
  {
    StateDB db(path);
    db.ensure_schema(std::nullopt, std::nullopt);
    idx = add_with_state(db, "INBOX");
  }
  ::chmod(path.c_str(), 0644);  // the reference leaves the mode of an existing file alone
  std::vector<std::string> notices;
  StateDB db(path);
  db.ensure_schema('/', '/', [&](std::string_view line) { notices.emplace_back(line); });
  CHECK(notices.empty());
  REQUIRE(db.find_mailbox("INBOX"));
  CHECK(db.find_mailbox("INBOX")->idx == idx);
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0644);
}

TEST_CASE("create_if_missing=false (--watch) refuses a missing file") {
  TempDir dir("statedb");
  const std::string path = dir.file("missing.db");
  interimap::StateOptions options;
  options.create_if_missing = false;
  CHECK_THROWS_AS(StateDB(path, options), StateError);
  CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("file errors name the file") {
  TempDir dir("statedb");
  SUBCASE("cannot create") {
    const std::string path = dir.file("no/such/dir.db");
    CHECK_THROWS_WITH_AS(StateDB{path}, ("Can't create " + path + ": No such file or directory").c_str(),
                         StateError);
  }
  SUBCASE("not a database") {
    const std::string path = dir.file("junk.db");
    test_util::write_file(path, "this is not an SQLite database, not at all; just some junk bytes to fill a header\n");
    try {
      StateDB db(path);
      FAIL("opened junk");
    } catch (const StateError& e) {
      CHECK(std::string(e.what()).starts_with(path + ": "));
      CHECK(std::string(e.what()).find("not a database") != std::string::npos);
    }
  }
}

TEST_CASE("a second StateDB on the same file fails at once") {
  TempDir dir("statedb");
  const std::string path = dir.file("lock.db");
  {
    StateDB first(path);
    first.ensure_schema('/', '/');
    const auto start = std::chrono::steady_clock::now();
    try {
      StateDB second(path);
      FAIL("second open succeeded");
    } catch (const StateLockedError& e) {
      CHECK(std::string(e.what()) ==
            path + ": database is locked by another process (is another interimap running on it?)");
    }
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(1));
  }
  {
    // Released on destruction; held again by a StateDB that has not touched
    // the schema yet.
    StateDB again(path);
    CHECK_THROWS_AS(StateDB{path}, StateLockedError);
    // Readers are locked out too (exclusive lock), like the reference after
    // its first write.
    RawDb raw(path);
    CHECK(raw.exec("SELECT * FROM mailboxes") == SQLITE_BUSY);
  }
  // A lock held by someone else (the reference holds RESERVED at least).
  RawDb other(path);
  REQUIRE(other.exec("BEGIN IMMEDIATE") == SQLITE_OK);
  interimap::StateOptions fast;
  fast.busy_timeout = std::chrono::milliseconds(10);
  CHECK_THROWS_AS(StateDB(path, fast), StateLockedError);
  REQUIRE(other.exec("COMMIT") == SQLITE_OK);
}

namespace {

// A version-0 database as interimap 0.4 left it, with '/' as delimiter.
void make_version0(const std::string& path) {
  RawDb raw(path);
  REQUIRE(raw.exec(kVersion0Mailboxes) == SQLITE_OK);
  REQUIRE(raw.exec(kReferenceLocal) == SQLITE_OK);
  REQUIRE(raw.exec(kReferenceRemote) == SQLITE_OK);
  REQUIRE(raw.exec(kReferenceMapping) == SQLITE_OK);
  REQUIRE(raw.exec("INSERT INTO mailboxes (mailbox, subscribed) VALUES ('INBOX', 1), ('a/b', 0), ('a/b/c', 1)") ==
          SQLITE_OK);
  REQUIRE(raw.exec("INSERT INTO local VALUES (1, 100, 5, 7), (2, 101, 1, 1), (3, 102, 3, 9)") == SQLITE_OK);
  REQUIRE(raw.exec("INSERT INTO remote VALUES (1, 200, 6, 8), (2, 201, 1, 1), (3, 202, 4, 2)") == SQLITE_OK);
  REQUIRE(raw.exec("INSERT INTO mapping VALUES (1, 1, 2), (1, 4, 5), (3, 2, 3)") == SQLITE_OK);
}

}  // namespace

TEST_CASE("upgrade from version 0 replaces the delimiter with NUL") {
  TempDir dir("statedb");
  const std::string path = dir.file("v0.db");
  make_version0(path);
  std::vector<std::string> notices;
  {
    StateDB db(path);
    db.ensure_schema('/', '/', [&](std::string_view line) { notices.emplace_back(line); });
    CHECK(notices == std::vector<std::string>{"Upgrading database version from 0"});
    CHECK(names(db) == std::vector<std::string>{"INBOX", "a\0b"s, "a\0b\0c"s});
    const auto abc = db.find_mailbox("a\0b\0c"s);
    REQUIRE(abc);
    CHECK(abc->idx == 3);
    CHECK(abc->subscribed);
    REQUIRE(abc->state);
    CHECK((*abc->state)[Side::Local] == interimap::SideState{102, 3, 9});
    CHECK((*abc->state)[Side::Remote] == interimap::SideState{202, 4, 2});
    CHECK(db.lookup(1, Side::Local, 4) == 5u);
    CHECK(db.mapping_count(3) == 1);
  }
  RawDb raw(path);
  CHECK(raw.value("PRAGMA user_version") == "1");
  // SQLite quotes the name it renamed the temporary table to.
  std::string expected = kReferenceMailboxes;
  expected.replace(0, std::string_view("CREATE TABLE mailboxes").size(), "CREATE TABLE \"mailboxes\"");
  CHECK(raw.value("SELECT sql FROM sqlite_master WHERE name = 'mailboxes'") == expected);
  CHECK(raw.column("SELECT typeof(mailbox) FROM mailboxes") == std::vector<std::string>{"blob", "blob", "blob"});
  CHECK(raw.column("SELECT name FROM sqlite_master WHERE name LIKE '_tmp%'").empty());
}

TEST_CASE("upgrade from version 0 refuses differing delimiters and changes nothing") {
  TempDir dir("statedb");
  const std::string path = dir.file("v0.db");
  make_version0(path);
  {
    StateDB db(path);
    std::vector<std::string> notices;
    CHECK_THROWS_WITH_AS(db.ensure_schema('/', '.', [&](std::string_view line) { notices.emplace_back(line); }),
                         (path + ": Local and remote hierachy delimiters differ (local \"/\", remote \".\"), "
                                 "refusing to update table `mailboxes`.")
                             .c_str(),
                         StateError);
    CHECK(notices == std::vector<std::string>{"Upgrading database version from 0"});
    CHECK_FALSE(db.in_transaction());
    CHECK_THROWS_AS(db.mailboxes(), std::logic_error);  // schema not ready
  }
  {
    RawDb raw(path);
    CHECK(raw.value("PRAGMA user_version") == "0");
    CHECK(raw.column("SELECT mailbox FROM mailboxes ORDER BY idx") ==
          std::vector<std::string>{"INBOX", "a/b", "a/b/c"});
  }
  // The delimiters print as the reference's print_delimiter.
  {
    StateDB db(path);
    CHECK_THROWS_WITH(db.ensure_schema('\\', '"'),
                      (path + ": Local and remote hierachy delimiters differ (local \"\\\\\", remote \"\\\"\"), "
                              "refusing to update table `mailboxes`.")
                          .c_str());
    CHECK_THROWS_AS(db.ensure_schema('/', std::nullopt), std::invalid_argument);
    db.ensure_schema('/', '/');  // and a retry with matching delimiters works
    CHECK(db.find_mailbox("a\0b"s));
  }
}

TEST_CASE("upgrade from version 0 in a flat namespace keeps names, as BLOBs") {
  TempDir dir("statedb");
  const std::string path = dir.file("v0.db");
  make_version0(path);
  {
    StateDB db(path);
    db.ensure_schema(std::nullopt, std::nullopt);
    CHECK(names(db) == std::vector<std::string>{"INBOX", "a/b", "a/b/c"});
    CHECK(db.find_mailbox("a/b/c"));
  }
  RawDb raw(path);
  CHECK(raw.column("SELECT typeof(mailbox) FROM mailboxes") == std::vector<std::string>{"blob", "blob", "blob"});
}

TEST_CASE("upgrade refuses broken referential integrity") {
  TempDir dir("statedb");
  const std::string path = dir.file("v0.db");
  make_version0(path);
  {
    RawDb raw(path);
    REQUIRE(raw.exec("INSERT INTO mapping VALUES (99, 1, 1)") == SQLITE_OK);
  }
  StateDB db(path);
  CHECK_THROWS_WITH_AS(db.ensure_schema('/', '/'),
                       (path + ": Broken referential integrity! Refusing to commit changes.").c_str(), StateError);
}

TEST_CASE("a newer schema version is refused") {
  TempDir dir("statedb");
  const std::string path = dir.file("v2.db");
  {
    RawDb raw(path);
    REQUIRE(raw.exec("PRAGMA user_version = 2") == SQLITE_OK);
  }
  StateDB db(path);
  CHECK_THROWS_AS(db.ensure_schema('/', '/'), StateError);
}

TEST_CASE("transactions: commit, rollback on destruction and on exception") {
  TempDir dir("statedb");
  const std::string path = dir.file("tx.db");
  {
    StateDB db(path);
    db.ensure_schema('/', '/');

    // Writes need a transaction.
    CHECK_THROWS_AS(db.add_mailbox("INBOX", false), std::logic_error);

    {
      auto tx = db.begin();
      CHECK(db.in_transaction());
      CHECK_THROWS_AS(db.begin(), std::logic_error);  // one at a time
      db.add_mailbox("kept", false);
      tx.commit();
      CHECK_THROWS_AS(tx.commit(), std::logic_error);
    }
    CHECK_FALSE(db.in_transaction());

    {
      auto tx = db.begin();
      db.add_mailbox("dropped", false);
      // destroyed without commit: as if the server never confirmed
    }
    CHECK_FALSE(db.find_mailbox("dropped"));

    try {
      auto tx = db.begin();
      db.add_mailbox("thrown", false);
      throw std::runtime_error("server said NO");
    } catch (const std::runtime_error&) {
    }
    CHECK_FALSE(db.in_transaction());
    CHECK_FALSE(db.find_mailbox("thrown"));

    {
      auto tx = db.begin();
      db.add_mailbox("rolled back", false);
      tx.rollback();
      CHECK_THROWS_AS(tx.rollback(), std::logic_error);
    }
    CHECK_FALSE(db.find_mailbox("rolled back"));

    // A failing statement inside a transaction: the transaction stays usable
    // and is rolled back as a whole.
    {
      auto tx = db.begin();
      db.add_mailbox("partial", false);
      CHECK_THROWS_AS(db.add_mailbox("kept", false), StateError);  // UNIQUE
      CHECK(db.in_transaction());
    }
    CHECK_FALSE(db.find_mailbox("partial"));

    // Left open at destruction of the StateDB.
    auto tx = db.begin();
    db.add_mailbox("never committed", false);
  }
  StateDB db(path);
  db.ensure_schema('/', '/');
  CHECK(names(db) == std::vector<std::string>{"kept"});
}

TEST_CASE("the lists read on every poll follow every write, commit and rollback") {
  TempDir dir("statedb");
  StateDB db(dir.file("cache.db"));
  db.ensure_schema('/', '/');
  CHECK(db.mailboxes().empty());
  CHECK(db.mailboxes_with_pending_appends().empty());
  MailboxId a = 0;
  {
    auto tx = db.begin();
    a = db.add_mailbox("a", false);
    CHECK(names(db) == std::vector<std::string>{"a"});  // read inside the transaction
    tx.commit();
  }
  CHECK(names(db) == std::vector<std::string>{"a"});
  CHECK(names(db) == std::vector<std::string>{"a"});  // again, unchanged
  {
    auto tx = db.begin();
    db.add_mailbox("b", true);
    db.init_state(a, 1, 2);
    db.set_pending_append(a, Side::Remote, 7);
    CHECK(names(db) == std::vector<std::string>{"a", "b"});
    CHECK(db.mailboxes_with_pending_appends() == std::vector<MailboxId>{a});
    CHECK(db.mailboxes().front().state.has_value());
    // destroyed without commit
  }
  CHECK(names(db) == std::vector<std::string>{"a"});
  CHECK_FALSE(db.mailboxes().front().state.has_value());
  CHECK(db.mailboxes_with_pending_appends().empty());
  {
    auto tx = db.begin();
    db.set_subscribed(a, true);
    CHECK(db.mailboxes().front().subscribed);
    tx.rollback();
  }
  CHECK_FALSE(db.mailboxes().front().subscribed);
}

TEST_CASE("methods before ensure_schema are a logic error") {
  TempDir dir("statedb");
  StateDB db(dir.file("x.db"));
  CHECK_THROWS_AS(db.find_mailbox("INBOX"), std::logic_error);
  CHECK_THROWS_AS(db.begin(), std::logic_error);
}

TEST_CASE("mailboxes: add, find, subscribe, list") {
  Fixture f;
  StateDB& db = f.db;
  const std::string nested = "Archives\0""2024\0""Q1"s;
  MailboxId inbox = 0, archive = 0;
  {
    auto tx = db.begin();
    inbox = db.add_mailbox("INBOX", true);
    archive = db.add_mailbox(nested, false);
    CHECK_THROWS_AS(db.add_mailbox("", false), StateError);
    try {
      db.add_mailbox(nested, true);
      FAIL("duplicate accepted");
    } catch (const StateError& e) {
      CHECK(std::string(e.what()) == f.path + ": add mailbox: UNIQUE constraint failed: mailboxes.mailbox");
      CHECK(e.sqlite_code() == SQLITE_CONSTRAINT_UNIQUE);
    }
    tx.commit();
  }
  CHECK(inbox != archive);

  auto found = db.find_mailbox(nested);
  REQUIRE(found);
  CHECK(found->idx == archive);
  CHECK(found->name == nested);
  CHECK_FALSE(found->subscribed);
  CHECK_FALSE(found->state);
  // Prefixes and the delimiter-less spelling are other names.
  CHECK_FALSE(db.find_mailbox("Archives"));
  CHECK_FALSE(db.find_mailbox("Archives/2024/Q1"));

  {
    auto tx = db.begin();
    db.set_subscribed(archive, true);
    CHECK_THROWS_AS(db.set_subscribed(12345, true), StateError);
    tx.commit();
  }
  CHECK(db.find_mailbox(nested)->subscribed);

  const auto all = db.mailboxes();
  REQUIRE(all.size() == 2);
  CHECK(all[0].idx == inbox);
  CHECK(all[0].name == "INBOX");
  CHECK(all[1].name == nested);
}

TEST_CASE("per-side state") {
  Fixture f;
  StateDB& db = f.db;
  MailboxId idx = 0;
  {
    auto tx = db.begin();
    idx = db.add_mailbox("INBOX", false);
    CHECK_FALSE(db.state(idx));
    CHECK_THROWS_AS(db.set_uidnext(idx, Side::Local, 5), StateError);  // no state yet
    CHECK_THROWS_AS(db.init_state(idx, 0, 5), StateError);             // CHECK (UIDVALIDITY > 0)
    db.init_state(idx, 1234, 5678);
    CHECK_THROWS_AS(db.init_state(idx, 1, 1), StateError);  // exists
    tx.commit();
  }
  auto state = db.state(idx);
  REQUIRE(state);
  CHECK((*state)[Side::Local] == interimap::SideState{1234, 0, 0});
  CHECK((*state)[Side::Remote] == interimap::SideState{5678, 0, 0});

  const std::uint64_t big = 0xFFFF'FFFF'FFFF'FFF0ULL;  // above 2^63: wraps in SQLite, reads back as is
  {
    auto tx = db.begin();
    db.set_state(idx, Side::Local, 42, 99);
    db.set_state(idx, Side::Remote, 4294967295u, big);
    db.set_uidnext(idx, Side::Local, 43);
    db.set_highestmodseq(idx, Side::Local, 100);
    tx.commit();
  }
  state = db.state(idx);
  REQUIRE(state);
  CHECK((*state)[Side::Local] == interimap::SideState{1234, 43, 100});
  CHECK((*state)[Side::Remote] == interimap::SideState{5678, 4294967295u, big});
  CHECK(db.mailboxes().at(0).state == state);
  CHECK(db.find_mailbox("INBOX")->state == state);
}

TEST_CASE("mappings: add, look up, iterate, remove, with NUL in the mailbox name") {
  Fixture f;
  StateDB& db = f.db;
  const MailboxId idx = add_with_state(db, "a\0b"s);
  const MailboxId other_idx = add_with_state(db, "a\0c"s);
  {
    auto tx = db.begin();
    const std::vector<Mapping> batch = {{1, 10}, {2, 30}, {3, 20}, {5, 50}};
    db.add_mappings(idx, batch);
    db.add_mapping(other_idx, {1, 10});  // other mailbox: no clash
    CHECK_THROWS_AS(db.add_mapping(idx, {1, 99}), StateError);   // lUID taken
    CHECK_THROWS_AS(db.add_mapping(idx, {99, 10}), StateError);  // rUID taken
    CHECK_THROWS_AS(db.add_mapping(idx, {0, 7}), StateError);    // CHECK (lUID > 0)
    CHECK_THROWS_AS(db.add_mapping(idx, {7, 0}), StateError);    // CHECK (rUID > 0)
    CHECK_THROWS_AS(db.add_mapping(9999, {1, 1}), StateError);   // FOREIGN KEY
    tx.commit();
  }
  CHECK(db.mapping_count(idx) == 4);
  CHECK(db.mapping_count(other_idx) == 1);
  CHECK(db.mapping_count(9999) == 0);

  CHECK(db.lookup(idx, Side::Local, 2) == 30u);
  CHECK(db.lookup(idx, Side::Remote, 20) == 3u);
  CHECK_FALSE(db.lookup(idx, Side::Local, 4));
  CHECK_FALSE(db.lookup(idx, Side::Remote, 2));
  const std::vector<std::uint32_t> luids = {5, 4, 1};
  CHECK(db.lookup(idx, Side::Local, luids) ==
        std::vector<std::optional<std::uint32_t>>{50u, std::nullopt, 10u});
  const std::vector<std::uint32_t> ruids = {20, 30, 31};
  CHECK(db.lookup(idx, Side::Remote, ruids) == std::vector<std::optional<std::uint32_t>>{3u, 2u, std::nullopt});

  auto collect = [&](Side by, UidOrder order, std::size_t limit = 100) {
    std::vector<Mapping> out;
    db.for_each_mapping(idx, by, order, [&](const Mapping& m) {
      out.push_back(m);
      return out.size() < limit;
    });
    return out;
  };
  CHECK(collect(Side::Local, UidOrder::Ascending) == std::vector<Mapping>{{1, 10}, {2, 30}, {3, 20}, {5, 50}});
  CHECK(collect(Side::Local, UidOrder::Descending) == std::vector<Mapping>{{5, 50}, {3, 20}, {2, 30}, {1, 10}});
  CHECK(collect(Side::Remote, UidOrder::Ascending) == std::vector<Mapping>{{1, 10}, {3, 20}, {2, 30}, {5, 50}});
  CHECK(collect(Side::Remote, UidOrder::Descending) == std::vector<Mapping>{{5, 50}, {2, 30}, {3, 20}, {1, 10}});
  CHECK(collect(Side::Local, UidOrder::Descending, 2) == std::vector<Mapping>{{5, 50}, {3, 20}});

  // Other calls from inside the callback are fine; the same iteration is not.
  db.for_each_mapping(idx, Side::Local, UidOrder::Ascending, [&](const Mapping& m) {
    CHECK(db.lookup(idx, Side::Local, m.local) == m.remote);
    CHECK_THROWS_AS(db.for_each_mapping(idx, Side::Local, UidOrder::Ascending, [](const Mapping&) { return true; }),
                    std::logic_error);
    return true;
  });
  // An exception from the callback leaves the statement reusable.
  CHECK_THROWS_AS(db.for_each_mapping(idx, Side::Local, UidOrder::Ascending,
                                      [](const Mapping&) -> bool { throw std::runtime_error("stop"); }),
                  std::runtime_error);
  CHECK(collect(Side::Local, UidOrder::Ascending).size() == 4);

  CHECK_THROWS_AS(db.remove_mapping(idx, Side::Local, 1), std::logic_error);  // outside a transaction
  {
    auto tx = db.begin();
    CHECK(db.remove_mapping(idx, Side::Local, 1));
    CHECK_FALSE(db.remove_mapping(idx, Side::Local, 1));
    CHECK(db.remove_mapping(idx, Side::Remote, 20));
    const std::vector<std::uint32_t> gone = {30, 31, 50};
    CHECK(db.remove_mappings(idx, Side::Remote, gone) == std::vector<std::uint32_t>{31});
    tx.commit();
  }
  CHECK(db.mapping_count(idx) == 0);
  CHECK(db.mapping_count(other_idx) == 1);
}

TEST_CASE("interrupted syncs: mappings at or above UIDNEXT") {
  Fixture f;
  StateDB& db = f.db;
  const MailboxId done = add_with_state(db, "done");
  const MailboxId cut = add_with_state(db, "cut");
  {
    auto tx = db.begin();
    db.add_mappings(done, std::vector<Mapping>{{1, 1}, {2, 2}});
    db.set_state(done, Side::Local, 3, 1);
    db.set_state(done, Side::Remote, 3, 1);
    db.add_mappings(cut, std::vector<Mapping>{{1, 1}, {2, 5}, {3, 6}});
    db.set_state(cut, Side::Local, 2, 1);
    db.set_state(cut, Side::Remote, 5, 1);
    tx.commit();
  }
  const auto interrupted = db.interrupted_mailboxes();
  REQUIRE(interrupted.size() == 1);
  CHECK(interrupted[0].idx == cut);
  CHECK(interrupted[0].name == "cut");
  REQUIRE(interrupted[0].state);
  CHECK((*interrupted[0].state)[Side::Local].uidnext == 2);
  CHECK(db.interrupted_mappings(cut) == std::vector<Mapping>{{2, 5}, {3, 6}});
  CHECK(db.interrupted_mappings(done).empty());
}

TEST_CASE("appends in flight: recorded before, kept at the oldest, cleared after") {
  Fixture f;
  StateDB& db = f.db;
  const MailboxId a = add_with_state(db, "a");
  const MailboxId b = add_with_state(db, "b");
  CHECK(db.pending_appends(a).empty());
  CHECK_THROWS_AS(db.set_pending_append(a, Side::Remote, 7), std::logic_error);  // needs a transaction
  {
    auto tx = db.begin();
    db.set_pending_append(a, Side::Remote, 7);
    db.set_pending_append(a, Side::Remote, 9);  // ignored: 7 bounds the unrecorded copies
    db.set_pending_append(a, Side::Local, 3);
    db.set_pending_append(b, Side::Local, 1);
    tx.commit();
  }
  using Rows = std::vector<std::pair<Side, std::uint32_t>>;
  CHECK(db.pending_appends(a) == Rows{{Side::Local, 3}, {Side::Remote, 7}});
  CHECK(db.mailboxes_with_pending_appends() == std::vector<MailboxId>{a, b});
  {
    auto tx = db.begin();
    db.clear_pending_appends(a);
  }  // rolled back
  CHECK(db.pending_appends(a).size() == 2);
  {
    auto tx = db.begin();
    db.clear_pending_appends(a);
    tx.commit();
  }
  CHECK(db.pending_appends(a).empty());
  CHECK(db.pending_appends(b) == Rows{{Side::Local, 1}});
  CHECK(db.mailboxes_with_pending_appends() == std::vector<MailboxId>{b});
}

TEST_CASE("reset_state: a UIDVALIDITY change forgets the pairs and appends in flight, keeps recorded flags") {
  Fixture f;
  StateDB& db = f.db;
  const MailboxId a = add_with_state(db, "a");
  const MailboxId b = add_with_state(db, "b");
  {
    auto tx = db.begin();
    for (MailboxId m : {a, b}) {
      db.add_mappings(m, std::vector<Mapping>{{1, 2}, {3, 4}});
      db.set_state(m, Side::Local, 5, 50);
      db.set_state(m, Side::Remote, 6, 60);
      db.set_pending_append(m, Side::Remote, 6);
      db.set_synced_flags(m, Side::Local, 1, "\\Seen");
    }
    tx.commit();
  }
  CHECK_THROWS_AS(db.reset_state(a, 11, 99), std::logic_error);  // needs a transaction
  {
    auto tx = db.begin();
    db.reset_state(a, 11, 99);
  }  // rolled back
  CHECK(db.mapping_count(a) == 2);
  {
    auto tx = db.begin();
    db.reset_state(a, 11, 99);
    db.add_mapping(a, Mapping{3, 2});  // the new pairs may reuse the old UIDs
    tx.commit();
  }
  const auto st = db.state(a);
  REQUIRE(st.has_value());
  CHECK((*st)[Side::Local] == interimap::SideState{11, 0, 0});
  CHECK((*st)[Side::Remote] == interimap::SideState{99, 0, 0});
  CHECK(db.mapping_count(a) == 1);
  CHECK(db.lookup(a, Side::Local, 3) == std::optional<std::uint32_t>(2));
  CHECK(db.pending_appends(a).empty());
  CHECK(db.synced_flags(a, Side::Local).size() == 1);
  // the other mailbox untouched
  CHECK(db.mapping_count(b) == 2);
  CHECK((*db.state(b))[Side::Remote] == interimap::SideState{22, 6, 60});
  CHECK(db.pending_appends(b).size() == 1);
  // the pairs recorded at UIDNEXT 0 make it an interrupted sync until its state is recorded
  bool interrupted = false;
  for (const auto& r : db.interrupted_mailboxes()) interrupted = interrupted || r.idx == a;
  CHECK(interrupted);
}

TEST_CASE("delete_mailbox removes all its rows, not its children") {
  Fixture f;
  StateDB& db = f.db;
  const MailboxId parent = add_with_state(db, "p");
  const MailboxId child = add_with_state(db, "p\0c"s);
  {
    auto tx = db.begin();
    db.add_mapping(parent, {1, 1});
    db.add_mapping(child, {1, 1});
    CHECK(db.delete_mailbox(parent));
    CHECK_FALSE(db.delete_mailbox(parent));
    tx.commit();
  }
  CHECK_FALSE(db.find_mailbox("p"));
  CHECK_FALSE(db.state(parent));
  CHECK(db.mapping_count(parent) == 0);
  CHECK(db.find_mailbox("p\0c"s));
  CHECK(db.mapping_count(child) == 1);
}

TEST_CASE("rename_mailbox renames children recursively and refuses to overwrite") {
  Fixture f;
  StateDB& db = f.db;
  const MailboxId a = add_with_state(db, "a");
  const MailboxId ab = add_with_state(db, "a\0b"s);
  const MailboxId abc = add_with_state(db, "a\0b\0c"s);
  add_with_state(db, "ab");    // a prefix of the bytes, not a child
  add_with_state(db, "x\0a"s);  // "a" elsewhere in the hierarchy
  {
    auto tx = db.begin();
    db.add_mapping(abc, {7, 8});
    tx.commit();
  }

  SUBCASE("recursive") {
    {
      auto tx = db.begin();
      CHECK(db.rename_mailbox("a", "z\0y"s) == 3);
      tx.commit();
    }
    CHECK(names(db) == std::vector<std::string>{"z\0y"s, "z\0y\0b"s, "z\0y\0b\0c"s, "ab", "x\0a"s});
    CHECK(db.find_mailbox("z\0y"s)->idx == a);
    CHECK(db.find_mailbox("z\0y\0b"s)->idx == ab);
    CHECK(db.find_mailbox("z\0y\0b\0c"s)->idx == abc);
    CHECK(db.lookup(abc, Side::Local, 7) == 8u);
  }
  SUBCASE("a child alone, its parent not in the database") {
    auto tx = db.begin();
    CHECK(db.rename_mailbox("a\0b"s, "q"s) == 2);
    CHECK(db.rename_mailbox("nothing", "other") == 0);
    tx.commit();
    CHECK(names(db) == std::vector<std::string>{"a", "q", "q\0c"s, "ab", "x\0a"s});
  }
  SUBCASE("children of a parent that is not in the database") {
    auto tx = db.begin();
    CHECK(db.delete_mailbox(a));
    CHECK(db.rename_mailbox("a", "n") == 2);
    tx.commit();
    CHECK(names(db) == std::vector<std::string>{"n\0b"s, "n\0b\0c"s, "ab", "x\0a"s});
  }
  SUBCASE("target exists") {
    CHECK(db.rename_conflict("a", "ab") == "ab");
    auto tx = db.begin();
    try {
      db.rename_mailbox("a", "ab");
      FAIL("renamed over an existing mailbox");
    } catch (const MailboxExistsError& e) {
      CHECK(e.mailbox() == "ab");
      CHECK(std::string(e.what()) == f.path + ": Mailbox ab exists");
    }
    tx.commit();
    CHECK(names(db) == std::vector<std::string>{"a", "a\0b"s, "a\0b\0c"s, "ab", "x\0a"s});
  }
  SUBCASE("a child's target exists") {
    add_with_state(db, "z\0b\0c"s);
    CHECK(db.rename_conflict("a", "z") == "z\0b\0c"s);
    auto tx = db.begin();
    try {
      db.rename_mailbox("a", "z");
      FAIL("renamed over an existing mailbox");
    } catch (const MailboxExistsError& e) {
      CHECK(e.mailbox() == "z\0b\0c"s);
      CHECK(std::string(e.what()) == f.path + ": Mailbox z\\0b\\0c exists");
    }
    tx.commit();
    CHECK(db.find_mailbox("a\0b"s));
  }
  SUBCASE("nonsense") {
    CHECK_FALSE(db.rename_conflict("a", "fresh"));
    auto tx = db.begin();
    CHECK_THROWS_AS(db.rename_mailbox("a", "a"), StateError);
    CHECK_THROWS_AS(db.rename_mailbox("a", "a\0new"s), StateError);  // into its own child
    CHECK_THROWS_AS(db.rename_mailbox("", "b"), StateError);
    CHECK_THROWS_AS(db.rename_mailbox("a", ""), StateError);
  }
  SUBCASE("outside a transaction") { CHECK_THROWS_AS(db.rename_mailbox("a", "fresh"), std::logic_error); }
}

TEST_CASE("names are written as BLOBs with NUL bytes, as the reference writes them") {
  TempDir dir("statedb");
  const std::string path = dir.file("blob.db");
  {
    StateDB db(path);
    db.ensure_schema('.', '.');
    add_with_state(db, "a");
    add_with_state(db, "a\0b"s);
    auto tx = db.begin();
    db.rename_mailbox("a", "c");
    tx.commit();
  }
  RawDb raw(path);
  CHECK(raw.column("SELECT typeof(mailbox) || ':' || hex(mailbox) FROM mailboxes ORDER BY idx") ==
        std::vector<std::string>{"blob:63", "blob:630062"});
  CHECK(raw.column("SELECT subscribed FROM mailboxes ORDER BY idx") == std::vector<std::string>{"1", "1"});
}
