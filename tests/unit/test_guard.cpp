// The guard's pure decisions (libinterimap/sync/guard.hpp), as tables:
// the loss a listing proves, the side-wide mass-deletion rule against the
// runs it must stop and the legitimate runs it must let through, the
// per-mailbox limit, the self-sync suspicion and the options.
#include <interimap/config.hpp>
#include <interimap/syncsession.hpp>

#include "sync/guard.hpp"

#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

using interimap::Side;
namespace engine = interimap::detail::sync;
using engine::MailboxLoss;
using engine::Seen;

namespace {

// A mailbox with `mapped` synchronized messages; per side what the listing
// says: MESSAGES, or replaced / missing.
struct SideView {
  Seen seen = Seen::Listed;
  std::optional<std::uint64_t> messages;
};
SideView listed(std::uint64_t messages) { return {Seen::Listed, messages}; }
const SideView kReplaced{Seen::Replaced, 0};
const SideView kMissing{Seen::Missing, std::nullopt};

MailboxLoss box(std::string name, std::uint64_t mapped, SideView local, SideView remote) {
  MailboxLoss b;
  b.name = std::move(name);
  b.mapped = mapped;
  b.seen = {local.seen, remote.seen};
  b.messages = {local.messages, remote.messages};
  return b;
}

}  // namespace

TEST_CASE("guard: the loss a listing proves, per mailbox and side") {
  const struct {
    MailboxLoss box;
    std::uint64_t local, remote;
  } rows[] = {
      {box("INBOX", 10, listed(10), listed(3)), 0, 7},
      {box("INBOX", 10, listed(12), listed(0)), 0, 10},        // more there than mapped: nothing proven
      {box("INBOX", 10, listed(10), {Seen::Listed, std::nullopt}), 0, 0},  // no MESSAGES: nothing proven
      {box("INBOX", 10, kReplaced, listed(10)), 10, 0},        // replaced: all of it, MESSAGES or not
      {box("INBOX", 10, listed(10), kMissing), 0, 10},
      {box("INBOX", 0, listed(0), listed(0)), 0, 0},
  };
  for (const auto& r : rows) {
    CAPTURE(r.box.mapped);
    CHECK(engine::gone_at_least(r.box, Side::Local) == r.local);
    CHECK(engine::gone_at_least(r.box, Side::Remote) == r.remote);
  }
}

TEST_CASE("guard: side-wide mass deletion (defaults: 50% and 10 messages)") {
  const interimap::MassDeletionLimits limits;  // the defaults
  REQUIRE(limits.share == 50);
  REQUIRE(limits.minimum == 10);
  REQUIRE(limits.mailbox_share == 0);

  const struct {
    const char* what;
    std::vector<MailboxLoss> boxes;
    std::optional<Side> side;  // the side refused, or none
    std::uint64_t gone, mapped;
  } rows[] = {
      // Refused.
      {"remote store replaced by an empty one",
       {box("INBOX", 40, listed(40), kReplaced), box("Archive", 60, listed(60), kReplaced), box("Trash", 0, listed(0), kReplaced)},
       Side::Remote, 100, 100},
      {"every remote message expunged (same UIDVALIDITY)",
       {box("INBOX", 40, listed(40), listed(0)), box("Archive", 60, listed(60), listed(0))}, Side::Remote, 100, 100},
      {"every local message expunged, new mail since in INBOX",
       {box("INBOX", 40, listed(3), listed(40)), box("Archive", 60, listed(0), listed(60))}, Side::Local, 97, 100},
      {"a database of another account: both sides replaced",
       {box("INBOX", 30, kReplaced, kReplaced), box("Archive", 20, kReplaced, kReplaced)}, Side::Local, 50, 50},
      {"more remote than local lost", {box("INBOX", 40, listed(25), listed(0))}, Side::Remote, 40, 40},
      {"most of the mailboxes replaced", {box("INBOX", 10, listed(10), listed(10)), box("A", 20, listed(20), kReplaced),
                                          box("B", 20, listed(20), kReplaced)}, Side::Remote, 40, 50},
      {"just above the share, at the minimum", {box("INBOX", 19, listed(19), listed(9))}, Side::Remote, 10, 19},
      // Let through.
      {"emptying Trash", {box("INBOX", 20, listed(20), listed(20)), box("Archive", 20, listed(20), listed(20)),
                          box("Trash", 15, listed(0), listed(15))}, std::nullopt, 0, 0},
      {"deleting a big folder's content", {box("INBOX", 20, listed(20), listed(20)), box("Lists", 25, listed(25), listed(0)),
                                           box("Archive", 10, listed(10), listed(10))}, std::nullopt, 0, 0},
      {"a first sync: nothing mapped yet", {box("INBOX", 0, listed(500), listed(0)), box("Archive", 0, listed(0), listed(300))},
       std::nullopt, 0, 0},
      {"a small account: 2 of 3 deleted", {box("INBOX", 3, listed(1), listed(3))}, std::nullopt, 0, 0},
      {"a small account: 3 of 3 deleted", {box("INBOX", 3, listed(3), listed(0))}, std::nullopt, 0, 0},
      {"9 of 12: below the minimum", {box("INBOX", 12, listed(12), listed(3))}, std::nullopt, 0, 0},
      {"exactly the share: not more", {box("INBOX", 20, listed(20), listed(10))}, std::nullopt, 0, 0},
      {"half of 2000 (test_sync_big's scattered expunges)", {box("INBOX", 2000, listed(2000), listed(1000))}, std::nullopt, 0, 0},
      {"a mailbox deleted on one side (an error of its own)",
       {box("INBOX", 3, listed(3), listed(3)), box("Box", 3, listed(3), kMissing), box("Other", 5, listed(5), listed(5))},
       std::nullopt, 0, 0},
      {"a mailbox recreated with its messages (UIDVALIDITY recovery's business)",
       {box("INBOX", 30, listed(30), listed(30)), box("Box", 20, listed(20), kReplaced)}, std::nullopt, 0, 0},
      {"the only mailbox recreated with its messages", {box("Box", 30, listed(30), {Seen::Replaced, 30})}, std::nullopt, 0, 0},
      {"the only mailbox recreated with 20 of its 30", {box("Box", 30, listed(30), {Seen::Replaced, 20})}, std::nullopt, 0, 0},
      {"the only mailbox recreated empty (the recovery copies it back)", {box("Box", 30, {Seen::Replaced, 0}, listed(30))},
       std::nullopt, 0, 0},
  };
  for (const auto& r : rows) {
    CAPTURE(r.what);
    const auto found = engine::find_mass_deletion(r.boxes, limits);
    REQUIRE(found.has_value() == r.side.has_value());
    if (!found) continue;
    CHECK(found->side == *r.side);
    CHECK(found->gone == r.gone);
    CHECK(found->mapped == r.mapped);
  }

  // The options: --allow-mass-deletion, mass-deletion-share = off, other numbers.
  const std::vector<MailboxLoss> wiped = {box("INBOX", 40, listed(40), listed(0)), box("A", 30, listed(30), kReplaced),
                                          box("B", 30, listed(30), kReplaced)};
  interimap::MassDeletionLimits allow;
  allow.allow = true;
  CHECK_FALSE(engine::find_mass_deletion(wiped, allow));
  interimap::MassDeletionLimits off;
  off.share = 0;
  CHECK_FALSE(engine::find_mass_deletion(wiped, off));
  interimap::MassDeletionLimits strict;
  strict.share = 20;
  strict.minimum = 2;
  CHECK(engine::find_mass_deletion({box("INBOX", 3, listed(1), listed(3))}, strict).has_value());
  interimap::MassDeletionLimits lax;
  lax.minimum = 101;
  CHECK_FALSE(engine::find_mass_deletion(wiped, lax));

  // The error line says what was seen, where, and what lets it through.
  engine::MailboxNames names;
  names.set_delimiter(Side::Local, '/');
  const auto found = engine::find_mass_deletion(wiped, limits);
  REQUIRE(found);
  CHECK(found->replaced == std::vector<std::string>{"A", "B"});
  CHECK(found->emptied == std::vector<std::string>{"INBOX"});
  CHECK(engine::describe(*found, limits, names) ==
        "Mass deletion: 100 of the 100 synchronized messages (100%) are gone from remote, 3 of 3 mailbox(es) wholly "
        "(replaced (new UIDVALIDITY): A, B; emptied: INBOX); nothing was changed, since the loss would be copied to "
        "local. Limits: mass-deletion-share = 50%, mass-deletion-minimum = 10. If this is what you want, run once "
        "with --allow-mass-deletion.");
}

TEST_CASE("guard: the per-mailbox limit, off by default") {
  const interimap::MassDeletionLimits defaults;
  CHECK_FALSE(engine::exceeds_mailbox_limit(500, 500, defaults));  // emptying a Trash folder
  interimap::MassDeletionLimits limits;
  limits.mailbox_share = 50;
  const struct {
    std::uint64_t expunged, mapped;
    bool exceeds;
  } rows[] = {
      {15, 15, true}, {16, 30, true}, {15, 30, false}, {9, 9, false} /* below the minimum */, {10, 10, true}, {0, 0, false},
  };
  for (const auto& r : rows) {
    CAPTURE(r.expunged);
    CAPTURE(r.mapped);
    CHECK(engine::exceeds_mailbox_limit(r.expunged, r.mapped, limits) == r.exceeds);
  }
  limits.allow = true;
  CHECK_FALSE(engine::exceeds_mailbox_limit(15, 15, limits));
}

TEST_CASE("guard: two listings that may come from one store") {
  using engine::ListedStatus;
  using engine::Listing;
  const ListedStatus inbox{1700000000, 42, 40, 77};
  const ListedStatus box{1700000001, 5, 4, 9};
  const Listing one = {{"INBOX", inbox}, {"Box", box}};
  ListedStatus moved = inbox;
  moved.uidnext = 43;  // a message arrived between the two LISTs, or two stores copied from one
  ListedStatus other_store = inbox;
  other_store.uidvalidity = 1700000099;
  const struct {
    const char* what;
    Listing local, remote;
    bool suspect;
  } rows[] = {
      {"identical listings", one, one, true},
      {"same UIDVALIDITYs, another UIDNEXT", one, {{"INBOX", moved}, {"Box", box}}, false},
      {"another UIDVALIDITY", one, {{"INBOX", other_store}, {"Box", box}}, false},
      {"another MESSAGES", one, {{"INBOX", ListedStatus{1700000000, 42, 39, 77}}, {"Box", box}}, false},
      {"no MESSAGES on one side (CONDSTORE there, the check off)", one,
       {{"INBOX", ListedStatus{1700000000, 42, std::nullopt, 77}}, {"Box", ListedStatus{1700000001, 5, {}, 9}}}, true},
      {"another mailbox list", one, {{"INBOX", inbox}}, false},
      {"other names", {{"INBOX", inbox}}, {{"Inbox2", inbox}}, false},
      {"nothing listed", {}, {}, false},
      {"empty mailboxes only (nothing to copy)", {{"INBOX", ListedStatus{1700000000, 1, 0, 1}}},
       {{"INBOX", ListedStatus{1700000000, 1, 0, 1}}}, false},
      {"one message somewhere", {{"INBOX", ListedStatus{1700000000, 1, 0, 1}}, {"Box", box}},
       {{"INBOX", ListedStatus{1700000000, 1, 0, 1}}, {"Box", box}}, true},
      {"no UIDVALIDITY in the listing", {{"INBOX", ListedStatus{}}}, {{"INBOX", ListedStatus{}}}, false},
  };
  for (const auto& r : rows) {
    CAPTURE(r.what);
    CHECK(engine::looks_like_one_store({r.local, r.remote}, false) == r.suspect);
    CHECK(engine::looks_like_one_store({r.local, r.remote}, true) == r.suspect);
  }
}

TEST_CASE("guard: without HIGHESTMODSEQ (a plain side), only a first sync probes") {
  using engine::ListedStatus;
  const engine::Listing plain = {{"INBOX", ListedStatus{1700000000, 42, 40, std::nullopt}}};
  const engine::Listing qresync = {{"INBOX", ListedStatus{1700000000, 42, 40, 77}}};
  CHECK(engine::looks_like_one_store({plain, plain}, true));
  CHECK_FALSE(engine::looks_like_one_store({plain, plain}, false));
  CHECK(engine::looks_like_one_store({plain, qresync}, true));
  CHECK_FALSE(engine::looks_like_one_store({plain, qresync}, false));
  CHECK(engine::looks_like_one_store({qresync, qresync}, false));
}

TEST_CASE("guard: the options of the default section") {
  using interimap::Config;
  using interimap::ConfigError;
  using interimap::SyncSettings;
  const std::string sections = "database = /nonexistent/state.db\n[local]\ntype = tunnel\ncommand = /bin/true\n[remote]\ntype = tunnel\ncommand = /bin/true\n";
  const SyncSettings defaults = SyncSettings::from_config(Config::parse(sections, "config"));
  CHECK(defaults.mass_deletion.share == 50);
  CHECK(defaults.mass_deletion.minimum == 10);
  CHECK(defaults.mass_deletion.mailbox_share == 0);
  CHECK(defaults.mass_deletion.mailbox_minimum == 10);
  CHECK_FALSE(defaults.mass_deletion.allow);
  const SyncSettings set = SyncSettings::from_config(Config::parse(
      "mass-deletion-share = 80%\nmass-deletion-minimum = 100\nmailbox-deletion-share = 30\nmailbox-deletion-minimum = 5\n" +
          sections,
      "config"));
  CHECK(set.mass_deletion.share == 80);
  CHECK(set.mass_deletion.minimum == 100);
  CHECK(set.mass_deletion.mailbox_share == 30);
  CHECK(set.mass_deletion.mailbox_minimum == 5);
  CHECK(SyncSettings::from_config(Config::parse("mass-deletion-share = off\n" + sections, "config")).mass_deletion.share == 0);
  for (const char* bad : {"mass-deletion-share = 0", "mass-deletion-share = 101", "mass-deletion-share = half",
                          "mass-deletion-share = ", "mailbox-deletion-share = 5%%", "mass-deletion-minimum = 0",
                          "mailbox-deletion-minimum = -1"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS((void)SyncSettings::from_config(Config::parse(std::string(bad) + "\n" + sections, "config")),
                    ConfigError);
  }
}
