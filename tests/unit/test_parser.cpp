// Tables of bytes in -> values out for the IMAP framer and parser
// (doc/design.md "Tests"), with every split of the input giving the same output.

#include "imap/parser.hpp"

#include <interimap/error.hpp>

#include "test_util.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <string>
#include <string_view>
#include <vector>

using namespace std::string_literals;
using namespace std::string_view_literals;
using interimap::ProtocolError;
using interimap::UidSet;
using namespace interimap::detail::imap;

namespace {

// "{N}\r\n" + s, and "~{N}\r\n" + s.
std::string lit(std::string_view s) { return fmt::format("{{{}}}\r\n", s.size()) + std::string(s); }
std::string lit8(std::string_view s) { return "~" + lit(s); }

template <typename T>
const T& data_as(const Response& r) {
  REQUIRE(std::holds_alternative<T>(r.data));
  return std::get<T>(r.data);
}

template <typename T>
T parse_as(std::string_view raw, Response::Type type = Response::Type::Untagged) {
  INFO("response: ", describe_response(raw));
  const Response r = parse_response(raw);
  CHECK(r.type == type);
  return data_as<T>(r);
}

// Feeds `input` to a fresh reader in the given pieces; returns the framed responses.
std::vector<std::string> frame(const std::vector<std::string_view>& pieces, ResponseReader reader = ResponseReader()) {
  std::vector<std::string> out;
  for (std::string_view p : pieces) {
    reader.feed(p);
    while (auto r = reader.next()) out.push_back(std::move(*r));
  }
  CHECK(reader.idle());
  return out;
}

UidSet set(std::string_view s) { return UidSet::parse(s); }

// Runs parse_response and returns the ProtocolError message, or "" if it did not throw.
std::string parse_error(std::string_view raw) {
  return test_util::error_of<ProtocolError>([&] { parse_response(raw); });
}

}  // namespace

// ---------------------------------------------------------------------------
// Status responses and response codes

TEST_CASE("parser: tagged status responses") {
  using K = StatusResponse::Kind;
  using C = ResponseCode::Kind;
  struct Row {
    std::string in;
    std::string tag;
    K kind;
    C code;
    std::string code_name;
    std::string code_raw;
    std::string text;
  };
  const Row rows[] = {
      {"a1 OK LOGIN completed\r\n", "a1", K::Ok, C::None, "", "", "LOGIN completed"},
      {"A2 NO [TRYCREATE] Mailbox doesn't exist: foo\r\n", "A2", K::No, C::TryCreate, "TRYCREATE", "",
       "Mailbox doesn't exist: foo"},
      {"A3 BAD Error in IMAP command: Unknown command\r\n", "A3", K::Bad, C::None, "", "",
       "Error in IMAP command: Unknown command"},
      {"a4 ok [read-write] Select completed (0.001 + 0.000 secs).\r\n", "a4", K::Ok, C::ReadWrite, "READ-WRITE", "",
       "Select completed (0.001 + 0.000 secs)."},
      {"A5 OK\r\n", "A5", K::Ok, C::None, "", "", ""},
      {"A6 OK [READ-ONLY]\r\n", "A6", K::Ok, C::ReadOnly, "READ-ONLY", "", ""},
      {"A7 No [ALERT] Quota exceeded\r\n", "A7", K::No, C::Alert, "ALERT", "", "Quota exceeded"},
      {"A8 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n", "A8", K::No, C::Other, "OVERQUOTA", "",
       "Quota exceeded (mailbox for user is full)"},
      {"A9 NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n", "A9", K::No, C::Other, "BADCHARSET",
       "(UTF-8 US-ASCII)", "Unsupported charset"},
      {"x.10 OK [x-gm-foo bar baz] done\r\n", "x.10", K::Ok, C::Other, "X-GM-FOO", "bar baz", "done"},
      {"A11 OK [NOMODSEQ] Sorry, this mailbox format doesn't support modsequences\r\n", "A11", K::Ok, C::NoModSeq,
       "NOMODSEQ", "", "Sorry, this mailbox format doesn't support modsequences"},
      {"A12 OK [CLOSED] Previous mailbox closed.\r\n", "A12", K::Ok, C::Closed, "CLOSED", "",
       "Previous mailbox closed."},
      {"A13 OK \r\n", "A13", K::Ok, C::None, "", "", ""},
      {"tag]x OK [UIDNEXT 4392] Predicted next UID\r\n", "tag]x", K::Ok, C::UidNext, "UIDNEXT", "",
       "Predicted next UID"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.in);
    const Response r = parse_response(row.in);
    CHECK(r.type == Response::Type::Tagged);
    CHECK(r.tag == row.tag);
    const auto& st = data_as<StatusResponse>(r);
    CHECK(st.kind == row.kind);
    CHECK(st.code.kind == row.code);
    CHECK(st.code.name == row.code_name);
    CHECK(st.code.raw == row.code_raw);
    CHECK(st.text == row.text);
  }
}

TEST_CASE("parser: untagged status responses and codes with values") {
  using K = StatusResponse::Kind;
  using C = ResponseCode::Kind;
  struct Row {
    std::string in;
    K kind;
    C code;
    uint64_t number;
    std::vector<std::string> list;
    std::string uids, source_uids;
    std::string text;
  };
  const Row rows[] = {
      {"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot "
       "ready.\r\n",
       K::Ok, C::Capability, 0,
       {"IMAP4rev1", "SASL-IR", "LOGIN-REFERRALS", "ID", "ENABLE", "IDLE", "LITERAL+", "STARTTLS", "AUTH=PLAIN"},
       "", "", "Dovecot ready."},
      {"* OK Gimap ready for requests from 192.0.2.1 x1mb123456\r\n", K::Ok, C::None, 0, {}, "", "",
       "Gimap ready for requests from 192.0.2.1 x1mb123456"},
      {"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n", K::Ok, C::UidValidity, 3857529045, {}, "", "", "UIDs valid"},
      {"* OK [UIDNEXT 4294967295] Predicted next UID\r\n", K::Ok, C::UidNext, 4294967295, {}, "", "",
       "Predicted next UID"},
      {"* OK [HIGHESTMODSEQ 9223372036854775807] Highest\r\n", K::Ok, C::HighestModSeq, 9223372036854775807ULL, {},
       "", "", "Highest"},
      {"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded \\*)] Flags permitted.\r\n",
       K::Ok, C::PermanentFlags, 0,
       {"\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "$Forwarded", "\\*"}, "", "",
       "Flags permitted."},
      {"* OK [PERMANENTFLAGS ()] No permanent flags permitted\r\n", K::Ok, C::PermanentFlags, 0, {}, "", "",
       "No permanent flags permitted"},
      {"* OK [CLOSED] Previous mailbox closed.\r\n", K::Ok, C::Closed, 0, {}, "", "", "Previous mailbox closed."},
      {"* NO [ALERT] Mailbox is at 95% of quota\r\n", K::No, C::Alert, 0, {}, "", "", "Mailbox is at 95% of quota"},
      {"* OK [CAPABILITY IMAP4rev1 IDLE ] ready\r\n", K::Ok, C::Capability, 0, {"IMAP4rev1", "IDLE"}, "", "", "ready"},
      {"* BAD Invalid tag\r\n", K::Bad, C::None, 0, {}, "", "", "Invalid tag"},
      {"* BYE Logging out\r\n", K::Bye, C::None, 0, {}, "", "", "Logging out"},
      {"* bye [ALERT] Server shutting down\r\n", K::Bye, C::Alert, 0, {}, "", "", "Server shutting down"},
      {"* PREAUTH [CAPABILITY IMAP4rev1 IDLE] Logged in as user\r\n", K::Preauth, C::Capability, 0,
       {"IMAP4rev1", "IDLE"}, "", "", "Logged in as user"},
      {"A3 OK [APPENDUID 38505 3955] APPEND completed\r\n", K::Ok, C::AppendUid, 38505, {}, "3955", "",
       "APPEND completed"},
      {"A3 OK [APPENDUID 1 101:103,105] MULTIAPPEND completed\r\n", K::Ok, C::AppendUid, 1, {}, "101:103,105", "",
       "MULTIAPPEND completed"},
      {"A4 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n", K::Ok, C::CopyUid, 38505, {}, "3956:3958",
       "304,319:320", "Done"},
  };
  for (const Row& row : rows) {
    CAPTURE(row.in);
    const Response r = parse_response(row.in);
    const auto& st = data_as<StatusResponse>(r);
    CHECK(st.kind == row.kind);
    CHECK(st.code.kind == row.code);
    CHECK(st.code.number == row.number);
    CHECK(st.code.list == row.list);
    CHECK(st.code.uids == (row.uids.empty() ? UidSet() : set(row.uids)));
    CHECK(st.code.source_uids == (row.source_uids.empty() ? UidSet() : set(row.source_uids)));
    CHECK(st.text == row.text);
  }
}

TEST_CASE("parser: continuation requests") {
  const std::pair<std::string, std::string> rows[] = {
      {"+ Ready for literal data\r\n", "Ready for literal data"},
      {"+ \r\n", ""},
      {"+\r\n", ""},
      {"+ dGVzdA==\r\n", "dGVzdA=="},
      {"+ idling\r\n", "idling"},
  };
  for (const auto& row : rows) {
    const auto& [in, text] = row;
    CAPTURE(row.first);
    CHECK(parse_as<ContinuationData>(in, Response::Type::Continuation).text == text);
  }
}

TEST_CASE("parser: CAPABILITY and ENABLED") {
  CHECK(parse_as<CapabilityData>("* CAPABILITY IMAP4rev1 LITERAL+ QRESYNC AUTH=PLAIN X-GM-EXT-1\r\n").capabilities ==
        std::vector<std::string>{"IMAP4rev1", "LITERAL+", "QRESYNC", "AUTH=PLAIN", "X-GM-EXT-1"});
  CHECK(parse_as<CapabilityData>("* capability IMAP4rev1 \r\n").capabilities ==
        std::vector<std::string>{"IMAP4rev1"});
  CHECK(parse_as<EnabledData>("* ENABLED QRESYNC CONDSTORE\r\n").capabilities ==
        std::vector<std::string>{"QRESYNC", "CONDSTORE"});
  CHECK(parse_as<EnabledData>("* ENABLED\r\n").capabilities.empty());
}

// ---------------------------------------------------------------------------
// Mailbox data

TEST_CASE("parser: LIST and LSUB") {
  struct Row {
    std::string in;
    bool lsub;
    std::vector<std::string> flags;
    std::optional<char> delimiter;
    std::string mailbox;
    std::vector<std::string> childinfo;
    std::optional<std::string> oldname;
  };
  const Row rows[] = {
      {"* LIST (\\HasNoChildren) \"/\" INBOX\r\n", false, {"\\HasNoChildren"}, '/', "INBOX", {}, {}},
      {"* LIST (\\HasChildren \\Noselect) \"/\" \"[Gmail]\"\r\n", false, {"\\HasChildren", "\\Noselect"}, '/',
       "[Gmail]", {}, {}},
      {"* LIST (\\All \\HasNoChildren) \"/\" \"[Gmail]/All Mail\"\r\n", false, {"\\All", "\\HasNoChildren"}, '/',
       "[Gmail]/All Mail", {}, {}},
      {"* LIST () NIL foo\r\n", false, {}, std::nullopt, "foo", {}, {}},
      {"* LIST (\\Noselect) \"\\\\\" \"a\\\\b \\\"c\\\"\"\r\n", false, {"\\Noselect"}, '\\', "a\\b \"c\"", {}, {}},
      {"* LIST () \".\" " + lit("foo\"bar)") + "\r\n", false, {}, '.', "foo\"bar)", {}, {}},
      {"* LIST (\\Subscribed \\NonExistent) \"/\" \"Fruit/Peach\" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n", false,
       {"\\Subscribed", "\\NonExistent"}, '/', "Fruit/Peach", {"SUBSCRIBED"}, {}},
      {"* LIST () \"/\" \"NewName\" (\"OLDNAME\" (\"OldName\"))\r\n", false, {}, '/', "NewName", {}, "OldName"},
      {"* LIST () \"/\" foo (\"X-UNKNOWN\" (1 (2 \"3\") NIL) CHILDINFO (\"SUBSCRIBED\"))\r\n", false, {}, '/', "foo",
       {"SUBSCRIBED"}, {}},
      {"* LIST () \"/\" bar ()\r\n", false, {}, '/', "bar", {}, {}},
      {"* LSUB () \".\" #news.comp.mail.misc\r\n", true, {}, '.', "#news.comp.mail.misc", {}, {}},
      {"* lsub (\\Noselect) \"/\" ~/Mail/%\r\n", true, {"\\Noselect"}, '/', "~/Mail/%", {}, {}},
      {"* LIST (\\HasNoChildren) \"/\" &AOk-t&AOk-\r\n", false, {"\\HasNoChildren"}, '/', "&AOk-t&AOk-", {}, {}},
      {"* LIST () \"/\" foo]bar\r\n", false, {}, '/', "foo]bar", {}, {}},
      {"* LIST (\\Marked $custom) \"/\" \"\"\r\n", false, {"\\Marked", "$custom"}, '/', "", {}, {}},
  };
  for (const Row& row : rows) {
    CAPTURE(row.in);
    const auto d = parse_as<ListData>(row.in);
    CHECK(d.lsub == row.lsub);
    CHECK(d.flags == row.flags);
    CHECK(d.delimiter == row.delimiter);
    CHECK(d.mailbox == row.mailbox);
    CHECK(d.childinfo == row.childinfo);
    CHECK(d.oldname == row.oldname);
  }
}

TEST_CASE("parser: STATUS") {
  struct Row {
    std::string in;
    std::string mailbox;
    std::optional<uint32_t> messages, recent, uidnext, uidvalidity, unseen;
    std::optional<uint64_t> highestmodseq;
  };
  const Row rows[] = {
      {"* STATUS INBOX (MESSAGES 231 UIDNEXT 44292)\r\n", "INBOX", 231, {}, 44292, {}, {}, {}},
      {"* STATUS \"foo bar\" (MESSAGES 1 RECENT 0 UIDNEXT 5 UIDVALIDITY 1700000000 UNSEEN 1 HIGHESTMODSEQ "
       "123456789012)\r\n",
       "foo bar", 1, 0, 5, 1700000000, 1, 123456789012ULL},
      {"* STATUS blurdybloop (SIZE 12345 MESSAGES 2 X-FOO (a (b)) APPENDLIMIT NIL highestmodseq 0)\r\n",
       "blurdybloop", 2, {}, {}, {}, {}, 0},
      {"* STATUS INBOX ()\r\n", "INBOX", {}, {}, {}, {}, {}, {}},
      {"* status " + lit("a\r\nb") + " (uidvalidity 4294967295)\r\n", "a\r\nb", {}, {}, {}, 4294967295U, {}, {}},
      {"* STATUS [Gmail]/Drafts (MESSAGES 0 )\r\n", "[Gmail]/Drafts", 0, {}, {}, {}, {}, {}},
  };
  for (const Row& row : rows) {
    CAPTURE(row.in);
    const auto d = parse_as<StatusData>(row.in);
    CHECK(d.mailbox == row.mailbox);
    CHECK(d.messages == row.messages);
    CHECK(d.recent == row.recent);
    CHECK(d.uidnext == row.uidnext);
    CHECK(d.uidvalidity == row.uidvalidity);
    CHECK(d.unseen == row.unseen);
    CHECK(d.highestmodseq == row.highestmodseq);
  }
}

TEST_CASE("parser: FLAGS, EXISTS, RECENT, EXPUNGE") {
  CHECK(parse_as<FlagsData>("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded Junk NonJunk)\r\n")
            .flags == std::vector<std::string>{"\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft",
                                               "$Forwarded", "Junk", "NonJunk"});
  CHECK(parse_as<FlagsData>("* FLAGS ()\r\n").flags.empty());
  CHECK(parse_as<ExistsData>("* 172 EXISTS\r\n").count == 172);
  CHECK(parse_as<ExistsData>("* 0 exists\r\n").count == 0);
  CHECK(parse_as<ExistsData>("* 4294967295 EXISTS\r\n").count == 4294967295U);
  CHECK(parse_as<RecentData>("* 1 RECENT\r\n").count == 1);
  CHECK(parse_as<ExpungeData>("* 44 EXPUNGE\r\n").seq == 44);
}

TEST_CASE("parser: VANISHED") {
  const auto a = parse_as<VanishedData>("* VANISHED (EARLIER) 300:310,405,411\r\n");
  CHECK(a.earlier);
  CHECK(a.uids == set("300:310,405,411"));
  const auto b = parse_as<VanishedData>("* VANISHED 405,407\r\n");
  CHECK_FALSE(b.earlier);
  CHECK(b.uids == set("405,407"));
  const auto c = parse_as<VanishedData>("* vanished (earlier) 7:3\r\n");
  CHECK(c.earlier);
  CHECK(c.uids == set("3:7"));
}

// ---------------------------------------------------------------------------
// FETCH

TEST_CASE("parser: FETCH items") {
  struct Row {
    std::string in;
    uint32_t seq;
    std::optional<uint32_t> uid;
    std::optional<std::vector<std::string>> flags;
    std::optional<uint64_t> modseq;
    std::optional<std::string> internaldate;
    std::optional<uint64_t> size;
    std::optional<std::string> body;
    bool streamed = false;
  };
  const std::string structure =
      "((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 10 1 NIL NIL NIL NIL)(\"TEXT\" \"HTML\" "
      "(\"CHARSET\" \"us-ascii\") NIL NIL \"QUOTED-PRINTABLE\" 20 1 NIL NIL NIL NIL) \"ALTERNATIVE\" (\"BOUNDARY\" "
      "\"xyz\") NIL NIL NIL)";
  using V = std::vector<std::string>;
  const Row rows[] = {
      {"* 12 FETCH (UID 4827 MODSEQ (65402) FLAGS (\\Seen \\Answered $Label1))\r\n", 12, 4827,
       V{"\\Seen", "\\Answered", "$Label1"}, 65402, {}, {}, {}},
      {"* 1 FETCH (FLAGS ())\r\n", 1, {}, V{}, {}, {}, {}, {}},
      {"* 1 fetch (uid 5 flags (\\Seen \\Recent) modseq (9223372036854775807))\r\n", 1, 5, V{"\\Seen", "\\Recent"},
       9223372036854775807ULL, {}, {}, {}},
      {"* 2 FETCH (UID 7 RFC822.SIZE 4423 INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" BODY[] " +
           lit("Hello\r\nWorld") + ")\r\n",
       2, 7, {}, {}, "17-Jul-1996 02:44:25 -0700", 4423, "Hello\r\nWorld"},
      {"* 2 FETCH (BODY[]<0> " + lit("partial") + " UID 8)\r\n", 2, 8, {}, {}, {}, {}, "partial"},
      {"* 3 FETCH (UID 9 BINARY[] " + lit8("a\0b\r\n\xff"s) + ")\r\n", 3, 9, {}, {}, {}, {}, "a\0b\r\n\xff"s},
      {"* 3 FETCH (RFC822 \"short \\\"q\\\" \\\\\" UID 9)\r\n", 3, 9, {}, {}, {}, {}, "short \"q\" \\"},
      {"* 4 FETCH (UID 10 BODY[] NIL)\r\n", 4, 10, {}, {}, {}, {}, ""},
      {"* 4 FETCH (UID 10 BODY[] \0)\r\n"s, 4, 10, {}, {}, {}, {}, "", true},
      {"* 4 FETCH (UID 10 BODY[] " + lit("") + ")\r\n", 4, 10, {}, {}, {}, {}, ""},
      {"* 5 FETCH (UID 11 BODYSTRUCTURE " + structure + " FLAGS (\\Seen))\r\n", 5, 11, V{"\\Seen"}, {}, {}, {}, {}},
      {"* 5 FETCH (BODY " + structure + " UID 12)\r\n", 5, 12, {}, {}, {}, {}, {}},
      {"* 6 FETCH (BODY[HEADER.FIELDS (MESSAGE-ID X-FOO)] " + lit("Message-ID: <a@b>\r\n\r\n") + " UID 13)\r\n", 6,
       13, {}, {}, {}, {}, {}},
      {"* 6 FETCH (BODY[HEADER.FIELDS (\"X-Bar\" " + lit("X-Id") + ")] " + lit("X-Id: 1\r\n\r\n") + " UID 14)\r\n",
       6, 14, {}, {}, {}, {}, {}},
      {"* 6 FETCH (BODY[TEXT] \"text\" BODY[1.MIME] NIL BINARY.SIZE[] 42 UID 15)\r\n", 6, 15, {}, {}, {}, {}, {}},
      {"* 6 FETCH (BODY[]<100> " + lit("tail") + " UID 16)\r\n", 6, 16, {}, {}, {}, {}, {}},
      {"* 7 FETCH (X-GM-THRID 1278455344230334865 X-GM-MSGID 1278455344230334865 X-GM-LABELS (\\Important \"Foo "
       "Bar\" \"\\\\Inbox\") UID 5 MODSEQ (123) FLAGS (\\Seen))\r\n",
       7, 5, V{"\\Seen"}, 123, {}, {}, {}},
      {"* 8 FETCH (RFC822.SIZE 9223372036854775807 RFC822.HEADER " + lit("H: v\r\n\r\n") + " RFC822 " +
           lit("H: v\r\n\r\nbody") + ")\r\n",
       8, {}, {}, {}, {}, 9223372036854775807ULL, "H: v\r\n\r\nbody"},
      {"* 9 FETCH (UID 1 EMAILID (M6d99ac3275bb4e) SAVEDATE NIL FLAGS (\\Seen ))\r\n", 9, 1, V{"\\Seen"}, {}, {}, {},
       {}},
      {"* 10 FETCH ()\r\n", 10, {}, {}, {}, {}, {}, {}},
  };
  for (const Row& row : rows) {
    CAPTURE(describe_response(row.in));
    const auto d = parse_as<FetchData>(row.in);
    CHECK(d.seq == row.seq);
    CHECK(d.uid == row.uid);
    CHECK(d.flags == row.flags);
    CHECK(d.modseq == row.modseq);
    CHECK(d.internaldate == row.internaldate);
    CHECK(d.size == row.size);
    CHECK(d.body == row.body);
    CHECK(d.body_streamed == row.streamed);
    CHECK_FALSE(d.envelope.has_value());
  }
}

TEST_CASE("parser: FETCH header sections (Mailbox::fetch_headers)") {
  const struct {
    std::string in;
    std::optional<std::string> header;
  } rows[] = {
      {"* 6 FETCH (UID 13 BODY[HEADER.FIELDS (MESSAGE-ID X-FOO)] " + lit("Message-ID: <a@b>\r\n\r\n") + ")\r\n",
       "Message-ID: <a@b>\r\n\r\n"},
      {"* 6 FETCH (BODY[HEADER.FIELDS (\"X-Bar\" " + lit("X-Id") + ")] " + lit("X-Id: 1\r\n\r\n") + " UID 14)\r\n",
       "X-Id: 1\r\n\r\n"},
      {"* 6 FETCH (UID 1 body[header] " + lit("H: v\r\n\r\n") + ")\r\n", "H: v\r\n\r\n"},
      {"* 6 FETCH (UID 1 BODY.PEEK[HEADER] \"H: v\")\r\n", "H: v"},  // echoed as asked by some servers
      {"* 6 FETCH (UID 1 BODY[HEADER] NIL)\r\n", ""},
      {"* 6 FETCH (UID 1 BODY[HEADER]<0> " + lit("H: v") + ")\r\n", std::nullopt},  // a part, not the header
      {"* 6 FETCH (UID 1 BODY[HEADER.FIELDS.NOT (X)] " + lit("H: v") + ")\r\n", std::nullopt},
      {"* 6 FETCH (UID 1 BODY[1.HEADER] " + lit("H: v") + ")\r\n", std::nullopt},
      {"* 6 FETCH (UID 1 RFC822.HEADER " + lit("H: v") + ")\r\n", std::nullopt},
      {"* 6 FETCH (UID 1 BODY[TEXT] \"t\")\r\n", std::nullopt},
      {"* 6 FETCH (UID 1 FLAGS (\\Seen))\r\n", std::nullopt},
  };
  for (const auto& row : rows) {
    CAPTURE(describe_response(row.in));
    const auto d = parse_as<FetchData>(row.in);
    CHECK(d.header == row.header);
    CHECK_FALSE(d.body.has_value());
  }
}

TEST_CASE("parser: FETCH ENVELOPE") {
  // RFC 3501 8, the example session.
  const auto d = parse_as<FetchData>(
      "* 12 FETCH (FLAGS (\\Seen) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" RFC822.SIZE 4286 ENVELOPE (\"Wed, 17 "
      "Jul 1996 02:23:25 -0700 (PDT)\" \"IMAP4rev1 WG mtg summary and minutes\" ((\"Terry Gray\" NIL \"gray\" "
      "\"cac.washington.edu\")) ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((\"Terry Gray\" NIL "
      "\"gray\" \"cac.washington.edu\")) ((NIL NIL \"imap\" \"cac.washington.edu\")) ((NIL NIL \"minutes\" "
      "\"CNRI.Reston.VA.US\")(\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) NIL NIL "
      "\"<B27397-0100000@cac.washington.edu>\") UID 3)\r\n");
  REQUIRE(d.envelope.has_value());
  const Envelope& e = *d.envelope;
  CHECK(e.date == "Wed, 17 Jul 1996 02:23:25 -0700 (PDT)");
  CHECK(e.subject == "IMAP4rev1 WG mtg summary and minutes");
  REQUIRE(e.from.size() == 1);
  CHECK(e.from[0].name == "Terry Gray");
  CHECK_FALSE(e.from[0].adl.has_value());
  CHECK(e.from[0].mailbox == "gray");
  CHECK(e.from[0].host == "cac.washington.edu");
  CHECK(e.sender.size() == 1);
  CHECK(e.reply_to.size() == 1);
  REQUIRE(e.to.size() == 1);
  CHECK_FALSE(e.to[0].name.has_value());
  CHECK(e.to[0].mailbox == "imap");
  REQUIRE(e.cc.size() == 2);
  CHECK(e.cc[0].host == "CNRI.Reston.VA.US");
  CHECK(e.cc[1].name == "John Klensin");
  CHECK(e.cc[1].mailbox == "KLENSIN");
  CHECK(e.cc[1].host == "MIT.EDU");
  CHECK(e.bcc.empty());
  CHECK_FALSE(e.in_reply_to.has_value());
  CHECK(e.message_id == "<B27397-0100000@cac.washington.edu>");
  CHECK(d.uid == 3);
  CHECK(d.size == 4286);

  // NIL date, a literal subject with 8-bit bytes, a space between addresses
  // (some servers) and a group (RFC 3501 7.4.2: NIL host marks it).
  const auto g = parse_as<FetchData>("* 1 FETCH (ENVELOPE (NIL " + lit("Caf\xc3\xa9\r\n") +
                                     " ((NIL NIL \"a\" \"b\") (\"N\" NIL \"c\" \"d\")) NIL NIL ((NIL NIL \"grp\" NIL)"
                                     "(NIL NIL NIL NIL)) NIL NIL \"<x@y>\" NIL))\r\n");
  REQUIRE(g.envelope.has_value());
  CHECK_FALSE(g.envelope->date.has_value());
  CHECK(g.envelope->subject == "Caf\xc3\xa9\r\n");
  REQUIRE(g.envelope->from.size() == 2);
  CHECK(g.envelope->from[1].name == "N");
  CHECK(g.envelope->sender.empty());
  REQUIRE(g.envelope->to.size() == 2);
  CHECK(g.envelope->to[0].mailbox == "grp");
  CHECK_FALSE(g.envelope->to[0].host.has_value());
  CHECK(g.envelope->in_reply_to == "<x@y>");
  CHECK_FALSE(g.envelope->message_id.has_value());
}

// ---------------------------------------------------------------------------
// SEARCH, ESEARCH, other data

TEST_CASE("parser: SEARCH") {
  struct Row {
    std::string in;
    std::vector<uint32_t> numbers;
    std::optional<uint64_t> modseq;
  };
  const Row rows[] = {
      {"* SEARCH 2 84 882\r\n", {2, 84, 882}, {}},
      {"* SEARCH\r\n", {}, {}},
      {"* SEARCH \r\n", {}, {}},
      {"* search 2 5 6 7 (MODSEQ 917162500)\r\n", {2, 5, 6, 7}, 917162500},
      {"* SEARCH 4294967295\r\n", {4294967295U}, {}},
  };
  for (const Row& row : rows) {
    CAPTURE(row.in);
    const auto d = parse_as<SearchData>(row.in);
    CHECK(d.numbers == row.numbers);
    CHECK(d.modseq == row.modseq);
  }
}

TEST_CASE("parser: ESEARCH") {
  struct Row {
    std::string in;
    std::string tag;
    bool uid;
    std::optional<uint32_t> min, max, count;
    std::string all;
    std::optional<uint64_t> modseq;
  };
  const Row rows[] = {
      {"* ESEARCH (TAG \"A282\") MIN 2 COUNT 3\r\n", "A282", false, 2, {}, 3, "", {}},
      {"* ESEARCH (TAG \"A283\") UID ALL 4:18,21,28\r\n", "A283", true, {}, {}, {}, "4:18,21,28", {}},
      {"* ESEARCH (TAG \"a567\") UID ALL 2,10:11 MODSEQ 917162500\r\n", "a567", true, {}, {}, {}, "2,10:11",
       917162500},
      {"* ESEARCH UID COUNT 0\r\n", "", true, {}, {}, 0, "", {}},
      {"* ESEARCH (TAG \"t\") UID MAX 50 PARTIAL (1:10 1,2) MIN 1\r\n", "t", true, 1, 50, {}, "", {}},
      {"* esearch (tag " + lit("x y") + ") uid min 3 max 9 count 2 all 3,9\r\n", "x y", true, 3, 9, 2, "3,9", {}},
      {"* ESEARCH (TAG \"A1\")\r\n", "A1", false, {}, {}, {}, "", {}},
  };
  for (const Row& row : rows) {
    CAPTURE(row.in);
    const auto d = parse_as<EsearchData>(row.in);
    CHECK(d.tag == row.tag);
    CHECK(d.uid == row.uid);
    CHECK(d.min == row.min);
    CHECK(d.max == row.max);
    CHECK(d.count == row.count);
    CHECK(d.all == (row.all.empty() ? UidSet() : set(row.all)));
    CHECK(d.modseq == row.modseq);
  }
}

TEST_CASE("parser: unknown untagged data is OtherData") {
  const std::pair<std::string, std::string> rows[] = {
      {"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n", "NAMESPACE"},
      {"* ID (\"name\" \"Dovecot\")\r\n", "ID"},
      {"* 3 xfoo bar\r\n", "XFOO"},
      {"* METADATA INBOX (/private/comment " + lit("x") + ")\r\n", "METADATA"},
      {"* XX EXISTS\r\n", "XX"},
  };
  for (const auto& row : rows) {
    const auto& [in, name] = row;
    CAPTURE(row.first);
    const auto d = parse_as<OtherData>(in);
    CHECK(d.name == name);
    CHECK(d.raw == in);
  }
}

// ---------------------------------------------------------------------------
// Malformed responses

TEST_CASE("parser: malformed responses throw ProtocolError with the offset") {
  struct Row {
    std::string in;
    size_t offset;
    std::string what;
  };
  const Row rows[] = {
      {"* 4294967296 EXISTS\r\n", 2, "number out of range"},
      {"* 0 FETCH (UID 1)\r\n", 2, "expected non-zero number"},
      {"* 0 EXPUNGE\r\n", 2, "expected non-zero number"},
      {"* 1 FETCH (UID 0)\r\n", 15, "expected non-zero number"},
      {"* 1 FETCH (UID 4294967296)\r\n", 15, "number out of range"},
      {"* 1 FETCH (MODSEQ (9223372036854775808))\r\n", 19, "number out of range"},
      {"* 1 FETCH (UID 1\r\n", 16, "expected space"},
      {"* 1 FETCH (UID 1 \r\n", 17, "unterminated list"},
      {"* 1 FETCH (BODY[] {10}\r\nabc)\r\n", 18, "literal longer than the response"},
      {"* 1 FETCH (BODY[] \"abc)\r\n", 18, "unterminated quoted string"},
      {"* 1 FETCH (BODY[] {5x}\r\nabcde)\r\n", 20, "expected \"}\" in literal"},
      {"* 1 FETCH (BODY[] \"a\rb\")\r\n", 20, "invalid character in quoted string"},
      {"* 1 FETCH (FLAGS (\\Seen \\*))\r\n", 25, "expected atom"},
      {"* 1 FETCH (BODY[HEADER \r\n", 16, "unterminated section"},
      {"* 1 FETCH (ENVELOPE (NIL NIL NIL))\r\n", 32, "expected space"},
      {"* 1 FETCH UID 1\r\n", 10, "expected \"(\""},
      {"* LIST () \"/\" \"a\\qb\"\r\n", 16, "invalid escape in quoted string"},
      {"* LIST () \"//\" foo\r\n", 10, "invalid hierarchy delimiter"},
      {"* LIST () \"/\"\r\n", 13, "expected space"},
      {"* STATUS foo (MESSAGES x)\r\n", 23, "expected number"},
      {"* OK [UIDVALIDITY abc] x\r\n", 18, "expected number"},
      {"* OK [UIDVALIDITY 0] x\r\n", 18, "expected non-zero number"},
      {"* OK [UIDNEXT 5 x\r\n", 15, "expected \"]\" after response code"},
      {"* OK [PERMANENTFLAGS (\\Seen] x\r\n", 27, "expected space"},
      {"* OK [APPENDUID 1 2:] x\r\n", 18, "invalid sequence set"},
      {"* OK [HIGHESTMODSEQ 99999999999999999999] x\r\n", 20, "number out of range"},
      {"* OK [HIGHESTMODSEQ 9223372036854775808] x\r\n", 20, "number out of range"},
      // 2 * 10^19 wraps a 64-bit product to a small number: still rejected.
      {"* OK [HIGHESTMODSEQ 20000000000000000000] x\r\n", 20, "number out of range"},
      {"* 1 FETCH (RFC822.SIZE 18446744073709551617)\r\n", 23, "number out of range"},
      {"* STATUS a (UIDNEXT 4294967296)\r\n", 20, "number out of range"},
      {"* OK [ALERT]x\r\n", 12, "expected end of response"},
      {"* OK [ not a code\r\n", 6, "expected atom"},
      {"* VANISHED (LATER) 1:2\r\n", 12, "expected EARLIER"},
      {"* VANISHED\r\n", 10, "expected space"},
      {"* SEARCH 1 x\r\n", 11, "expected number"},
      {"* SEARCH 1 (MODSEQ)\r\n", 18, "expected space"},
      {"* ESEARCH (TAG A1)\r\n", 15, "expected string"},
      {"* 1 EXISTS extra\r\n", 10, "expected end of response"},
      {"* FLAGS (\\Seen\r\n", 14, "expected space"},
      {"* (x)\r\n", 2, "expected atom"},
      {"*\r\n", 1, "expected space"},
      {"A1 FOO bar\r\n", 3, "expected OK, NO or BAD"},
      {"A1 BYE x\r\n", 3, "expected OK, NO or BAD"},
      {"A1\r\n", 2, "expected space"},
      {"\r\n", 0, "expected tag"},
      {"* 1 FETCH (UID 1)", 17, "expected CRLF"},
      {"* 1 FETCH (UID 1)\n", 18, "expected CRLF"},
      {"* 1 FETCH (X " + std::string(200, '(') + std::string(200, ')') + ")\r\n", 142, "too deeply nested"},
  };
  for (const Row& row : rows) {
    CAPTURE(describe_response(row.in));
    const std::string msg = parse_error(row.in);
    CHECK(msg.find(fmt::format("malformed response at offset {}: {}", row.offset, row.what)) == 0);
  }
  // The whole message: the offending response is quoted.
  CHECK(parse_error("* 4294967296 EXISTS\r\n") ==
        "malformed response at offset 2: number out of range: \"* 4294967296 EXISTS\"");
  // Literals are elided in the quote; a long response shows the place too.
  const std::string long_one = "* 1 FETCH (BODY[] " + lit(std::string(500, 'x')) + " UID x)\r\n";
  CHECK(parse_error(long_one) == "malformed response at offset 530: expected number: \"* 1 FETCH (BODY[] {500}... "
                                 "UID x)\" near \"" + std::string(35, 'x') + " UID x)\"");
}

// ---------------------------------------------------------------------------
// describe_response

TEST_CASE("describe_response") {
  const std::pair<std::string, std::string> rows[] = {
      {"* OK ready\r\n", "* OK ready"},
      {"* 1 FETCH (BODY[] {5}\r\nhello)\r\n", "* 1 FETCH (BODY[] {5}...)"},
      {"* 1 FETCH (BINARY[] ~{3}\r\na\0b UID 3)\r\n"s, "* 1 FETCH (BINARY[] ~{3}... UID 3)"},
      {"* 1 FETCH (BODY[] \0)\r\n"s, "* 1 FETCH (BODY[] {streamed})"},
      {"* OK a\tb\x01\x7f\xc3\xa9\r\n", "* OK a\\tb\\x01\\x7f\\xc3\\xa9"},
      {"* OK a\r\nb\r\n", "* OK a\\r\\nb"},
      {"* OK {99}\r\nab\r\n", "* OK {99}\\r\\nab"},
      {"* OK {}\r\n", "* OK {}"},
      {"* OK bare\n", "* OK bare"},
      {"", ""},
  };
  for (const auto& row : rows) {
    const auto& [in, out] = row;
    CAPTURE(row.first);
    CHECK(describe_response(in) == out);
  }
  CHECK(describe_response("* OK " + std::string(1000, 'a') + "\r\n", 10) == "* OK aaaaa...");
  CHECK(describe_response("* OK " + std::string(1000, 'a') + "\r\n").size() == 256 + 3);
}

// ---------------------------------------------------------------------------
// Framing

namespace {

// Responses with several literals, literal8, {0}, a literal at the end of
// the line, literal contents that look like CRLF and literal headers.
const std::string kStream = "* OK [CAPABILITY IMAP4rev1 LITERAL+] ready\r\n"s +                    //
                            "* 1 FETCH (UID 5 BODY[] " + lit("ab\r\n{5}\r\ncd") + " FLAGS (\\Seen))\r\n" +  //
                            "* 2 FETCH (BODY[HEADER.FIELDS (" + lit("X-Id") + ")] " + lit("") +             //
                            " BINARY[] " + lit8("\0\r\n"s) + ")\r\n" +                                    //
                            "* LIST () \"/\" " + lit("end\r\n") + "\r\n" +                                //
                            "A1 OK done\r\n";

const std::vector<std::string> kFramed = {
    "* OK [CAPABILITY IMAP4rev1 LITERAL+] ready\r\n",
    "* 1 FETCH (UID 5 BODY[] {11}\r\nab\r\n{5}\r\ncd FLAGS (\\Seen))\r\n",
    "* 2 FETCH (BODY[HEADER.FIELDS ({4}\r\nX-Id)] {0}\r\n BINARY[] ~{3}\r\n\0\r\n)\r\n"s,
    "* LIST () \"/\" {5}\r\nend\r\n\r\n",
    "A1 OK done\r\n",
};

}  // namespace

TEST_CASE("reader: frames responses with literals, whatever the split") {
  CHECK(frame({kStream}) == kFramed);
  CHECK(frame(test_util::pieces(kStream, 1)) == kFramed);
  for (size_t i = 0; i <= kStream.size(); ++i) {
    CAPTURE(i);
    const std::string_view s = kStream;
    REQUIRE(frame({s.substr(0, i), s.substr(i)}) == kFramed);
  }
  // Every pair of split points.
  for (size_t i = 0; i <= kStream.size(); ++i) {
    for (size_t j = i; j <= kStream.size(); ++j) {
      const std::string_view s = kStream;
      const auto out = frame({s.substr(0, i), s.substr(i, j - i), s.substr(j)});
      if (out != kFramed) {
        FAIL_CHECK("split at " << i << " and " << j);
        return;
      }
    }
  }

  // And the framed responses parse to what was sent.
  const auto one = data_as<FetchData>(parse_response(kFramed[1]));
  CHECK(one.body == "ab\r\n{5}\r\ncd");
  CHECK(one.flags == std::vector<std::string>{"\\Seen"});
  const auto two = data_as<FetchData>(parse_response(kFramed[2]));
  CHECK(two.body == "\0\r\n"s);
  CHECK(data_as<ListData>(parse_response(kFramed[3])).mailbox == "end\r\n");
}

TEST_CASE("reader: idle and next") {
  ResponseReader r;
  CHECK(r.idle());
  CHECK_FALSE(r.next().has_value());
  r.feed("* 1 FETCH (BODY[] {3}\r\na");
  CHECK_FALSE(r.idle());
  CHECK_FALSE(r.next().has_value());
  r.feed("bc");
  CHECK_FALSE(r.idle());
  r.feed(")\r");
  CHECK_FALSE(r.idle());
  r.feed("\n* OK x\r\n* OK y");
  CHECK_FALSE(r.idle());
  CHECK(r.next() == "* 1 FETCH (BODY[] {3}\r\nabc)\r\n");
  CHECK(r.next() == "* OK x\r\n");
  CHECK_FALSE(r.next().has_value());
  r.feed("\r\n");
  CHECK(r.idle());
  CHECK(r.next() == "* OK y\r\n");
}

TEST_CASE("reader: literal edge cases") {
  // {0} at the end of a line, then the line goes on.
  CHECK(frame({"* 1 FETCH (BODY[] {0}\r\n)\r\n"}) == std::vector<std::string>{"* 1 FETCH (BODY[] {0}\r\n)\r\n"});
  CHECK(data_as<FetchData>(parse_response("* 1 FETCH (BODY[] {0}\r\n)\r\n")).body == "");
  // Text that is not a literal header stays in the line.
  CHECK(frame({"* OK [ALERT] {12x}\r\n* OK {}\r\n* OK {5+}\r\n"}) ==
        std::vector<std::string>{"* OK [ALERT] {12x}\r\n", "* OK {}\r\n", "* OK {5+}\r\n"});
  // A literal header at the very start of a line after a literal.
  CHECK(frame(test_util::pieces("* X {1}\r\na{2}\r\nbc\r\n", 1)) ==
        std::vector<std::string>{"* X {1}\r\na{2}\r\nbc\r\n"});
}

TEST_CASE("reader: bare LF ends a line and is rewritten as CRLF") {
  const std::string in = "* OK hi\n* LIST () \"/\" {3}\nfoo\n* LIST () \"/\" {2}\r\na\r\nA1 OK\r\n";
  const std::vector<std::string> want = {
      "* OK hi\r\n",
      "* LIST () \"/\" {3}\r\nfoo\r\n",
      // The CR ending the literal "a\r" does not make the LF after it a CRLF.
      "* LIST () \"/\" {2}\r\na\r\r\n",
      "A1 OK\r\n",
  };
  CHECK(frame({in}) == want);
  CHECK(frame(test_util::pieces(in, 1)) == want);
  CHECK(data_as<ListData>(parse_response(want[1])).mailbox == "foo");
  CHECK(data_as<ListData>(parse_response(want[2])).mailbox == "a\r");
}

TEST_CASE("reader: max_line") {
  {
    // A declared literal past the bound fails at once, before its bytes.
    ResponseReader r(1024);
    CHECK_THROWS_AS(r.feed("* 1 FETCH (BODY[] {99999999}\r\n"), ProtocolError);
  }
  {
    ResponseReader r(1024);
    r.feed("* 1 FETCH (BODY[] {900}\r\n");
    CHECK_NOTHROW(r.feed(std::string(900, 'x')));
    CHECK_THROWS_WITH_AS(r.feed(std::string(200, 'y')), doctest::Contains("response longer than 1024 bytes"),
                         ProtocolError);
  }
  {
    // The default: 64 MiB, not more (an endless line from a hostile server).
    ResponseReader r;
    const std::string mib(size_t{1} << 20, 'x');
    for (int i = 0; i < 64; ++i) r.feed(mib);
    CHECK_THROWS_WITH_AS(r.feed("x"), doctest::Contains("response longer than 67108864 bytes"), ProtocolError);
  }
  {
    // A line without end.
    ResponseReader r(100);
    r.feed(std::string(100, 'x'));
    CHECK_THROWS_AS(r.feed("x"), ProtocolError);
  }
  {
    ResponseReader r(100);
    for (int i = 0; i < 10; ++i) r.feed(std::string(98, 'x') + "\r\n");  // exactly the bound: fine
    int n = 0;
    while (r.next()) ++n;
    CHECK(n == 10);
  }
  {
    // A size that does not fit in 64 bits.
    ResponseReader r;
    CHECK_THROWS_WITH_AS(r.feed("* 1 FETCH (BODY[] {99999999999999999999999}\r\n"),
                         doctest::Contains("out of range"), ProtocolError);
  }
}

// ---------------------------------------------------------------------------
// Streaming literals to a sink

namespace {

class RecordingSink : public LiteralSink {
 public:
  void begin(uint64_t size) override {
    CHECK_FALSE(open_);
    open_ = true;
    events += fmt::format("begin({})", size);
    declared_ = size;
    got_ = 0;
  }
  void data(std::string_view chunk) override {
    CHECK(open_);
    CHECK_FALSE(chunk.empty());
    got_ += chunk.size();
    CHECK(got_ <= declared_);
    bytes += chunk;
  }
  void end() override {
    CHECK(open_);
    CHECK(got_ == declared_);
    open_ = false;
    events += fmt::format("[{}]end;", bytes.size());
  }
  bool open() const { return open_; }

  std::string events, bytes;

 private:
  bool open_ = false;
  uint64_t declared_ = 0, got_ = 0;
};

struct Streamed {
  std::vector<std::string> framed;
  std::string events, bytes;
  std::vector<std::string> lines;  // what the chooser saw
};

Streamed stream(const std::vector<std::string_view>& pieces, size_t max_line = size_t{1} << 31) {
  Streamed out;
  RecordingSink sink;
  ResponseReader r(max_line);
  r.set_sink_chooser([&](std::string_view line, uint64_t) -> LiteralSink* {
    out.lines.emplace_back(line);
    return is_body_literal(line) ? &sink : nullptr;
  });
  out.framed = frame(pieces, std::move(r));
  CHECK_FALSE(sink.open());
  out.events = sink.events;
  out.bytes = sink.bytes;
  return out;
}

const std::string kBodies = "* 1 FETCH (UID 5 BODY[] " + lit("Subject: a\r\n\r\n{3}\r\nbody") + ")\r\n" +
                            "* 2 FETCH (UID 6 ENVELOPE (NIL " + lit("subj") +
                            " NIL NIL NIL NIL NIL NIL NIL NIL) BINARY[] " + lit8("\0\xff"s) + ")\r\n" +
                            "* 3 FETCH (RFC822 " + lit("") + " UID 7)\r\n" + "A2 OK done\r\n";

}  // namespace

TEST_CASE("reader: streams chosen literals to the sink, whatever the split") {
  const std::vector<std::string> want_framed = {
      "* 1 FETCH (UID 5 BODY[] \0)\r\n"s,
      "* 2 FETCH (UID 6 ENVELOPE (NIL {4}\r\nsubj NIL NIL NIL NIL NIL NIL NIL NIL) BINARY[] \0)\r\n"s,
      "* 3 FETCH (RFC822 \0 UID 7)\r\n"s,
      "A2 OK done\r\n",
  };
  const std::string want_bytes = "Subject: a\r\n\r\n{3}\r\nbody\0\xff"s;
  const std::string want_events = "begin(23)[23]end;begin(2)[25]end;begin(0)[25]end;";
  const std::vector<std::string> want_lines = {
      "* 1 FETCH (UID 5 BODY[] {23}\r\n",
      "* 2 FETCH (UID 6 ENVELOPE (NIL {4}\r\n",
      "* 2 FETCH (UID 6 ENVELOPE (NIL {4}\r\nsubj NIL NIL NIL NIL NIL NIL NIL NIL) BINARY[] ~{2}\r\n",
      "* 3 FETCH (RFC822 {0}\r\n",
  };

  const Streamed whole = stream({kBodies});
  CHECK(whole.framed == want_framed);
  CHECK(whole.bytes == want_bytes);
  CHECK(whole.events == want_events);
  CHECK(whole.lines == want_lines);

  const Streamed bytes = stream(test_util::pieces(kBodies, 1));
  CHECK(bytes.framed == want_framed);
  CHECK(bytes.bytes == want_bytes);
  CHECK(bytes.events == want_events);

  for (size_t i = 0; i <= kBodies.size(); ++i) {
    CAPTURE(i);
    const std::string_view s = kBodies;
    const Streamed split = stream({s.substr(0, i), s.substr(i)});
    REQUIRE(split.framed == want_framed);
    REQUIRE(split.bytes == want_bytes);
    REQUIRE(split.events == want_events);
  }

  const auto one = data_as<FetchData>(parse_response(want_framed[0]));
  CHECK(one.body_streamed);
  CHECK(one.body == "");
  CHECK(one.uid == 5);
  const auto two = data_as<FetchData>(parse_response(want_framed[1]));
  CHECK(two.body_streamed);
  REQUIRE(two.envelope.has_value());
  CHECK(two.envelope->subject == "subj");
  CHECK(data_as<FetchData>(parse_response(want_framed[2])).body_streamed);
}

TEST_CASE("reader: the sink ends before the response does; streamed bytes do not count against max_line") {
  RecordingSink sink;
  ResponseReader r(64);
  r.set_sink_chooser([&](std::string_view, uint64_t) -> LiteralSink* { return &sink; });
  r.feed("* 1 FETCH (BODY[] {1000}\r\n");
  CHECK(sink.events == "begin(1000)");
  r.feed(std::string(1000, 'm'));
  CHECK(sink.events == "begin(1000)[1000]end;");
  CHECK_FALSE(r.next().has_value());
  CHECK_FALSE(r.idle());
  r.feed(" UID 3)\r\n");
  CHECK(r.next() == "* 1 FETCH (BODY[] \0 UID 3)\r\n"s);
  CHECK(sink.bytes == std::string(1000, 'm'));
}

TEST_CASE("is_body_literal") {
  const std::pair<std::string, bool> rows[] = {
      {"* 1 FETCH (BODY[] {5}\r\n", true},
      {"* 12 FETCH (UID 7 MODSEQ (3) BODY[] {5}\r\n", true},
      {"* 12 fetch (uid 7 body[]<0> {5}\r\n", true},
      {"* 1 FETCH (BINARY[] ~{5}\r\n", true},
      {"* 1 FETCH (RFC822 {5}\r\n", true},
      {"* 1 FETCH (BODY[TEXT] {5}\r\n", false},
      {"* 1 FETCH (BODY[]<10> {5}\r\n", false},
      {"* 1 FETCH (RFC822.HEADER {5}\r\n", false},
      {"* 1 FETCH (XRFC822 {5}\r\n", false},
      {"* 1 FETCH (ENVELOPE (NIL {5}\r\n", false},
      {"* 1 FETCH (BODY[] \"x\" ENVELOPE (NIL {5}\r\n", false},
      {"* LIST () \"/\" {5}\r\n", false},
      {"A1 FETCH (BODY[] {5}\r\n", false},
      {"* 1 FETCH (BODY[]{5}\r\n", false},
      {"* 1 FETCH (BODY[] 5}\r\n", false},
  };
  for (const auto& row : rows) {
    const auto& [line, want] = row;
    CAPTURE(row.first);
    CHECK(is_body_literal(line) == want);
  }
}
