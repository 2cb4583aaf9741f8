// The sync engine's pure units, each as a table: SyncSettings::from_config,
// mailbox names in their three forms, flag strings, and the plan of
// known-message changes (expunges, flag updates, conflicts, unmatched UIDs),
// and the append journal.
#include <interimap/config.hpp>
#include <interimap/syncsession.hpp>

#include "sync/append_journal.hpp"
#include "sync/flags.hpp"
#include "sync/known.hpp"
#include "sync/names.hpp"
#include "sync/shared_db.hpp"

#include <doctest/doctest.h>

#include "test_util.hpp"

#include <filesystem>
#include <fstream>

#include <atomic>
#include <chrono>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

using namespace std::string_literals;
using interimap::Mapping;
using interimap::Side;
using interimap::UidSet;
namespace engine = interimap::detail::sync;

TEST_CASE("flag strings: sorted, unique, blank-separated") {
  CHECK(engine::flag_string({}) == "");
  CHECK(engine::flag_string({"\\Seen", "\\Answered", "\\Seen"}) == "\\Answered \\Seen");
  CHECK(engine::flag_string({"$Label", "\\Flagged"}) == "$Label \\Flagged");
  CHECK(engine::split_flags("") == std::vector<std::string>{});
  CHECK(engine::split_flags("\\Seen  \\Flagged ") == std::vector<std::string>{"\\Seen", "\\Flagged"});
  CHECK(engine::flag_union("\\Flagged \\Seen", "\\Answered \\Seen") == "\\Answered \\Flagged \\Seen");
  CHECK(engine::flag_union("", "") == "");
  CHECK(engine::flag_union("\\Seen", "") == "\\Seen");
}

TEST_CASE("compact_list keeps the given order, joins runs") {
  const struct {
    std::vector<uint32_t> uids;
    const char* text;
  } cases[] = {
      {{}, ""},
      {{7}, "7"},
      {{1, 2, 3}, "1:3"},
      {{1, 2, 3, 7, 5}, "1:3,7,5"},
      {{3, 2, 1}, "3,2,1"},
      {{4294967294u, 4294967295u}, "4294967294:4294967295"},
  };
  for (const auto& c : cases) CHECK(engine::compact_list(c.uids) == c.text);
}

TEST_CASE("mailbox names: database, wire and pretty forms") {
  engine::MailboxNames names;
  names.set_delimiter(Side::Local, '/');
  names.set_delimiter(Side::Remote, '.');
  names.set_reference(Side::Remote, "INBOX.");
  const std::string db = "a\0b\0c"s;
  CHECK(names.wire(Side::Local, db) == "a/b/c");
  CHECK(names.wire(Side::Remote, db) == "INBOX.a.b.c");
  CHECK(names.pretty(db) == "a/b/c");
  CHECK(names.database(Side::Remote, "INBOX.a.b.c") == db);
  CHECK(names.database(Side::Local, "a/b/c") == db);
  CHECK_FALSE(names.database(Side::Remote, "Other.a").has_value());  // outside list-reference
  CHECK(names.database(Side::Remote, "INBOX.") == "");
  CHECK(names.from_local("x/y") == "x\0y"s);

  engine::MailboxNames flat;  // NIL delimiters: names are kept as they are
  CHECK(flat.wire(Side::Local, "a/b") == "a/b");
  CHECK(flat.database(Side::Remote, "a.b") == "a.b");
  CHECK(flat.from_local("x/y") == "x/y");

  CHECK(engine::normalize_inbox("inBox") == "INBOX");
  CHECK(engine::normalize_inbox("INBOX/sub") == "INBOX/sub");
  CHECK(engine::print_delimiter(std::nullopt) == "NIL");
  CHECK(engine::print_delimiter('/') == "\"/\"");
  CHECK(engine::print_delimiter('\\') == "\"\\\\\"");
  CHECK(engine::print_delimiter('"') == "\"\\\"\"");
}

namespace {

// A mapping table for the planner: local UID <-> remote UID.
struct Mappings {
  std::map<uint32_t, uint32_t> local_to_remote, remote_to_local;
  explicit Mappings(std::initializer_list<Mapping> pairs) {
    for (const auto& p : pairs) {
      local_to_remote[p.local] = p.remote;
      remote_to_local[p.remote] = p.local;
    }
  }
  engine::PeerLookup lookup() const {
    return [this](Side side, std::span<const uint32_t> uids) {
      const auto& m = side == Side::Local ? local_to_remote : remote_to_local;
      std::vector<std::optional<uint32_t>> out;
      for (uint32_t u : uids) {
        const auto it = m.find(u);
        out.push_back(it == m.end() ? std::nullopt : std::optional(it->second));
      }
      return out;
    };
  }
};

engine::KnownChanges changes(const char* vanished, std::map<uint32_t, std::string> flags = {}) {
  engine::KnownChanges c;
  if (*vanished != '\0') c.vanished = UidSet::parse(vanished);
  c.flags = std::move(flags);
  return c;
}

}  // namespace

TEST_CASE("plan: a message vanished on one side is expunged on the other, its mapping forgotten") {
  const Mappings maps{{1, 11}, {2, 12}, {3, 13}};
  std::vector<engine::PlanNote> notes;
  const auto plan = engine::plan_known_changes({changes("2"), changes("13")}, maps.lookup(), notes);
  CHECK(plan.expunge[0] == std::vector<uint32_t>{3});
  CHECK(plan.expunge[1] == std::vector<uint32_t>{12});
  CHECK(plan.forget == std::vector<uint32_t>{2, 3});
  CHECK(notes.empty());
}

TEST_CASE("plan: a pair vanished on both sides is forgotten once, expunged nowhere") {
  const Mappings maps{{1, 11}, {2, 12}};
  std::vector<engine::PlanNote> notes;
  const auto plan = engine::plan_known_changes({changes("2"), changes("12")}, maps.lookup(), notes);
  CHECK(plan.expunge[0].empty());
  CHECK(plan.expunge[1].empty());
  CHECK(plan.forget == std::vector<uint32_t>{2});
}

TEST_CASE("plan: unmatched vanished and modified UIDs become notes, in order") {
  const Mappings maps{{1, 11}};
  std::vector<engine::PlanNote> notes;
  const auto plan = engine::plan_known_changes({changes("5:6", {{7, "\\Seen"}}), changes("15", {{17, "\\Flagged"}})},
                                             maps.lookup(), notes);
  CHECK(plan.empty());
  REQUIRE(notes.size() == 4);
  CHECK(notes[0].kind == engine::PlanNote::Kind::VanishedUnmatched);
  CHECK(notes[0].side == Side::Local);
  CHECK(notes[0].uids.to_string() == "5:6");
  CHECK(notes[1].kind == engine::PlanNote::Kind::VanishedUnmatched);
  CHECK(notes[1].side == Side::Remote);
  CHECK(notes[2].kind == engine::PlanNote::Kind::ModifiedUnmatched);
  CHECK(notes[2].uids.to_string() == "7");
  CHECK(notes[3].kind == engine::PlanNote::Kind::ModifiedUnmatched);
  CHECK(notes[3].side == Side::Remote);
}

TEST_CASE("plan: flags go to the other side; both changed: the union on both, a conflict note") {
  const Mappings maps{{1, 11}, {2, 12}, {3, 13}, {4, 14}};
  std::vector<engine::PlanNote> notes;
  const auto plan = engine::plan_known_changes(
      {changes("", {{1, "\\Seen"}, {3, "\\Flagged"}, {4, "\\Seen"}}),
       changes("", {{12, "\\Answered"}, {13, "\\Answered"}, {14, "\\Seen"}})},
      maps.lookup(), notes);
  CHECK(plan.flags[1].at("\\Seen") == std::vector<uint32_t>{11});
  CHECK(plan.flags[0].at("\\Answered") == std::vector<uint32_t>{2});
  CHECK(plan.flags[0].at("\\Answered \\Flagged") == std::vector<uint32_t>{3});
  CHECK(plan.flags[1].at("\\Answered \\Flagged") == std::vector<uint32_t>{13});
  CHECK(plan.flags[0].count("\\Seen") == 0);  // 4 and 14 agree: nothing to do
  CHECK(plan.flags[1].size() == 2);
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].kind == engine::PlanNote::Kind::Conflict);
  CHECK(notes[0].pair == Mapping{3, 13});
  CHECK(notes[0].merged == "\\Answered \\Flagged");
}

TEST_CASE("plan: flags of a message vanished on the other side are not stored") {
  const Mappings maps{{1, 11}, {2, 12}};
  std::vector<engine::PlanNote> notes;
  // Local 1 vanished; remote 11 (its pair) changed flags: no STORE; the
  // mapping is forgotten first, so the change has no match (the reference's
  // order and warning).
  const auto plan = engine::plan_known_changes({changes("1"), changes("", {{11, "\\Seen"}})}, maps.lookup(), notes);
  CHECK(plan.expunge[1] == std::vector<uint32_t>{11});
  CHECK(plan.flags[0].empty());
  CHECK(plan.flags[1].empty());
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].kind == engine::PlanNote::Kind::ModifiedUnmatched);
  CHECK(notes[0].side == Side::Remote);
}

TEST_CASE("SyncSettings::from_config: the reference's options and refusals") {
  using interimap::Config;
  using interimap::ConfigError;
  using interimap::SyncSettings;
  const Config config = Config::parse(
      "database = /nonexistent/state.db\n"
      "list-mailbox = INBOX \"a b\"\n"
      "list-select-opts = subscribed remote\n"
      "ignore-mailbox = ^Trash\n"
      "log-prefix = %n:\n"
      "[local]\n"
      "type = tunnel\n"
      "command = /bin/true\n"
      "list-reference = Mail/\n"
      "[remote]\n"
      "host = imap.example.org\n",
      "config");
  const SyncSettings s = SyncSettings::from_config(config);
  CHECK(s.database == "/nonexistent/state.db");
  CHECK(s.list_mailbox == "INBOX \"a b\"");
  CHECK(s.list_select_opts == std::vector<std::string>{"SUBSCRIBED", "REMOTE"});
  CHECK(s.ignore_mailbox == "^Trash");
  CHECK(s.list_reference[0] == "Mail/");
  CHECK(s.list_reference[1] == "");
  CHECK(s.connections[0].name == "local");
  CHECK(s.connections[0].type == interimap::ConnectionOptions::Type::Tunnel);
  CHECK_FALSE(s.connections[0].compress);  // compress: NO locally, YES remotely by default
  CHECK(s.connections[1].name == "remote");
  CHECK(s.connections[1].host == "imap.example.org");
  CHECK(s.connections[1].compress);
  CHECK(s.logfile.empty());
  CHECK(s.log_prefix.expand("local", "INBOX") == "local:");
  CHECK(s.max_connections == std::array<unsigned, 2>{2, 2});  // the default
  {
    // max-connections: per section, or for both from the default section.
    const auto one = SyncSettings::from_config(Config::parse("database = /nonexistent/s.db\nmax-connections = 1\n[local]\n[remote]\nmax-connections = 4\n", "c"));
    CHECK(one.max_connections == std::array<unsigned, 2>{1, 4});
  }

  const struct {
    const char* text;
    const char* error;
  } refusals[] = {
      {"[local]\n", "No such section remote"},
      {"[remote]\n", "No such section local"},
      {"frobnicate = 1\n[local]\n[remote]\n", "Invalid option frobnicate"},
      {"[local]\nmailbox = INBOX\n[remote]\n", "Invalid option mailbox"},  // a pullimap option
      {"logfile = relative.log\n[local]\n[remote]\n", "Invalid option logfile = relative.log"},
      {"list-mailbox =\n[local]\n[remote]\n", "Invalid option list-mailbox = "},
      {"list-select-opts = (x)\n[local]\n[remote]\n", "Invalid option list-select-opts = (x)"},
      {"log-prefix = %x\n[local]\n[remote]\n", nullptr},  // a malformed log-prefix: ConfigError naming it
      {"database = /x/s.db\n[local]\nmax-connections = 0\n[remote]\n", nullptr},
      {"database = /x/s.db\n[local]\n[remote]\nmax-connections = 17\n", nullptr},
      {"database = /x/s.db\nmax-connections = two\n[local]\n[remote]\n", nullptr},
  };
  for (const auto& r : refusals) {
    CAPTURE(r.text);
    const Config c = Config::parse(r.text, "config");
    try {
      (void)SyncSettings::from_config(c);
      FAIL("accepted");
    } catch (const ConfigError& e) {
      if (r.error != nullptr) CHECK(std::string(e.what()) == r.error);
    }
  }
}

TEST_CASE("append journal: the lines of one pending-append row, torn and stale lines ignored") {
  test_util::TempDir dir("iit-journal");
  const std::string path = dir.file("state.db-appends");
  using Copy = engine::AppendJournal::Copy;
  engine::AppendJournal journal(path);
  CHECK(journal.entries(1, Side::Local, 5).empty());  // no file yet
  journal.record(1, Side::Local, 5, {Copy{10, "a", "\\Seen"}, Copy{11, "b", ""}});
  journal.record(1, Side::Remote, 5, {Copy{12, "c", ""}});        // another side
  journal.record(2, Side::Local, 5, {Copy{13, "d", ""}});         // another mailbox
  journal.record(1, Side::Local, 7, {Copy{14, "e", "$x \\Flagged"}});  // another row (stale)
  journal.record(1, Side::Local, 5, {Copy{15, "a", "\\Answered \\Seen"}});
  const auto entries = journal.entries(1, Side::Local, 5);
  REQUIRE(entries.size() == 3);
  CHECK(entries[0].source_uid == 10);
  CHECK(entries[0].digest == engine::digest_of("a"));
  CHECK(entries[0].flags == "\\Seen");
  CHECK(entries[1].source_uid == 11);
  CHECK(entries[1].digest == engine::digest_of("b"));
  CHECK(entries[1].flags == "");
  CHECK(entries[2].source_uid == 15);
  CHECK(entries[2].digest == entries[0].digest);
  CHECK(entries[2].flags == "\\Answered \\Seen");
  CHECK(journal.entries(1, Side::Remote, 5).size() == 1);
  // latest(): every row, the last line of each source UID.
  journal.record(1, Side::Local, 9, {Copy{10, "a", "\\Deleted"}});
  const auto latest = journal.latest(1, Side::Local);
  REQUIRE(latest.size() == 4);  // 10, 11, 14, 15
  CHECK(latest.at(10).flags == "\\Deleted");
  CHECK(latest.at(14).flags == "$x \\Flagged");
  CHECK(std::filesystem::status(path).permissions() ==
        (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write));
  {
    // A torn last line (the process died in the write) and garbage.
    std::ofstream out(path, std::ios::app | std::ios::binary);
    out << "1 0 5 16 zz\n1 0 5 17 0123";
  }
  CHECK(journal.entries(1, Side::Local, 5).size() == 3);
  CHECK(journal.latest(1, Side::Local).size() == 4);
  journal.clear();
  CHECK(!std::filesystem::exists(path));
  CHECK(journal.entries(1, Side::Local, 5).empty());
  journal.clear();  // no file: nothing to do
  engine::AppendJournal disabled;
  disabled.record(1, Side::Local, 5, {Copy{10, "a", ""}});
  CHECK(disabled.entries(1, Side::Local, 5).empty());
}

TEST_CASE("append journal: removed once every mailbox that recorded copies is done") {
  using Copy = engine::AppendJournal::Copy;
  test_util::TempDir dir("iit-journal");
  const std::string path = dir.file("state.db-appends");
  engine::AppendJournal journal(path);
  journal.record(1, Side::Local, 5, {Copy{10, "a", ""}});
  journal.record(2, Side::Remote, 7, {Copy{11, "b", ""}});
  journal.done(1);  // mailbox 2's copies are still in flight: kept
  REQUIRE(std::filesystem::exists(path));
  CHECK(journal.entries(2, Side::Remote, 7).size() == 1);
  journal.done(2);
  CHECK(!std::filesystem::exists(path));
  journal.record(3, Side::Local, 1, {Copy{12, "c", ""}});
  journal.done(4);  // a mailbox that recorded nothing: 3 is not done
  CHECK(std::filesystem::exists(path));
  journal.done(3);
  CHECK(!std::filesystem::exists(path));

  // Two mailboxes an interrupted run left (workers): the lines of the
  // second stay while the first is resumed and done.
  journal.record(5, Side::Local, 1, {Copy{13, "d", ""}});
  journal.record(6, Side::Remote, 1, {Copy{14, "e", ""}});
  engine::AppendJournal next_run(path);
  CHECK(next_run.exists());
  next_run.hold(5);
  next_run.hold(6);
  next_run.done(5);
  CHECK(next_run.latest(6, Side::Remote).size() == 1);
  next_run.done(6);
  CHECK_FALSE(next_run.exists());
}

TEST_CASE("append journal: an unwritable file is an error before the APPEND") {
  test_util::TempDir dir("iit-journal");
  engine::AppendJournal journal(dir.file("missing/dir/state.db-appends"));
  CHECK_THROWS_AS(journal.record(1, Side::Local, 5, {engine::AppendJournal::Copy{10, "a", ""}}), interimap::Error);
}

TEST_CASE("clip_to_known: a server's set is clipped to the known UIDs, in ranges") {
  struct Case {
    const char* set;
    const char* known;
    const char* kept;
    const char* rest;
  };
  const Case cases[] = {
      {"1:4294967295", "3,5:7,100", "3,5:7,100", "1:2,4,8:99,101:4294967295"},
      {"1:10", "1:10", "1:10", ""},
      {"4:6", "1:3", "", "4:6"},
      {"2,4,6", "1:5", "2,4", "6"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.set);
    UidSet set = UidSet::parse(c.set);
    const UidSet rest = engine::clip_to_known(set, c.known[0] ? UidSet::parse(c.known) : UidSet{});
    CHECK(set.to_string() == c.kept);
    CHECK(rest.to_string() == c.rest);
  }
  // 4 billion UIDs against 20 000 known ones: ranges only (fast, small).
  UidSet huge = UidSet::range(1, 4294967295u);
  UidSet known;
  for (uint32_t u = 2; u <= 40000; u += 2) known.insert(u);
  const UidSet rest = engine::clip_to_known(huge, known);
  CHECK(huge.size() == 20000);
  CHECK(rest.size() == 4294967295u - 20000);
}

TEST_CASE("shared database: one owner at a time, nested, released by another thread") {
  test_util::TempDir dir("iit-shared");
  auto shared = std::make_shared<engine::SharedDb>(std::make_unique<interimap::StateDB>(dir.file("state.db")));
  int a = 0, b = 0;
  engine::DbHandle ha(shared, &a), hb(shared, &b);
  {
    auto held = ha.lock();
    (void)ha->generation();  // nested: the same owner does not wait
    std::atomic<bool> got{false};
    std::thread other([&] {
      (void)hb->generation();  // waits for `held`
      got = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK_FALSE(got.load());
    // Released by the end of this scope, then the other owner goes on.
    auto release = std::move(held);
    {
      auto gone = std::move(release);
    }
    other.join();
    CHECK(got.load());
  }
  // A transaction's hold (Context::write) may end on another thread.
  ha.acquire();
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    (void)hb->generation();
    got = true;
  });
  std::thread([&] { ha.release(); }).join();
  waiter.join();
  CHECK(got.load());
}
