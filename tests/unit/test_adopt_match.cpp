// The pure part of adoption and UIDVALIDITY recovery (sync/adopt_match):
// Message-ID and INTERNALDATE as keys, which messages get which digest,
// and the one-to-one pairing, as tables.
#include "sync/adopt_match.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

using interimap::Mapping;
using interimap::Side;
using interimap::UidSet;
namespace engine = interimap::detail::sync;

TEST_CASE("adoption: the Message-ID of a HEADER.FIELDS reply") {
  const struct {
    const char* header;
    const char* id;
  } cases[] = {
      {"Message-ID: <a@b>\r\n\r\n", "<a@b>"},
      {"message-id:<a@b>\r\n\r\n", "<a@b>"},
      {"MESSAGE-ID:   <a@b>   \r\n\r\n", "<a@b>"},
      {"Message-ID:\r\n <long.id@example.org>\r\n\r\n", "<long.id@example.org>"},     // folded
      {"Message-ID: <a\r\n\t@b>\r\n\r\n", "<a@b>"},                                   // folded inside
      {"Message-ID: <first@x>\r\nMessage-ID: <second@x>\r\n\r\n", "<first@x>"},        // the first one
      {"\r\n", ""},                                                                     // none
      {"", ""},
      {"X-Message-ID: <a@b>\r\n\r\n", ""},                                              // another field
      {"Message-ID:\r\n\r\n", ""},                                                      // empty
      {"Message-ID: <a@b>", "<a@b>"},                                                   // no line end
  };
  for (const auto& c : cases) {
    CAPTURE(c.header);
    CHECK(engine::message_id(c.header) == c.id);
  }
}

TEST_CASE("adoption: INTERNALDATE in seconds since the epoch") {
  const struct {
    const char* date;
    std::optional<int64_t> epoch;
  } cases[] = {
      {"01-Jan-1970 00:00:00 +0000", 0},
      {"17-Jul-1996 02:44:25 -0700", 837596665},
      {"17-Jul-1996 09:44:25 +0000", 837596665},  // the same instant, another zone
      {" 1-Jan-1970 01:00:00 +0100", 0},           // space-padded day
      {"29-Feb-2024 12:00:00 +0000", 1709208000},
      {"01-jan-1970 00:00:01 +0000", 1},           // case of the month
      {"01-Foo-1970 00:00:00 +0000", std::nullopt},
      {"01-Jan-1970 00:00:00", std::nullopt},
      {"01-Jan-1970 24:00:00 +0000", std::nullopt},
      {"1-Jan-1970 00:00:00 +0000", std::nullopt},  // neither fixed nor padded
      {"01-Jan-1970 00:00:00 *0000", std::nullopt},
      {"", std::nullopt},
  };
  for (const auto& c : cases) {
    CAPTURE(c.date);
    CHECK(engine::parse_internaldate(c.date) == c.epoch);
  }
}

namespace {

constexpr const char* kDate = "17-Jul-1996 02:44:25 -0700";

engine::Summary sum(uint32_t uid, uint64_t size, const char* id, const char* date = kDate) {
  const std::string field = id == nullptr ? std::string() : std::string("Message-ID: ") + id + "\r\n\r\n";
  return *engine::summarize(uid, size, date, field);
}

engine::Digest digest(int n) { return engine::digest_of(std::to_string(n)); }

}  // namespace

TEST_CASE("adoption: summaries that cannot be matched") {
  CHECK_FALSE(engine::summarize(1, 0, kDate, "Message-ID: <a@b>\r\n\r\n").has_value());  // empty message
  CHECK_FALSE(engine::summarize(1, 10, "yesterday", "Message-ID: <a@b>\r\n\r\n").has_value());
  CHECK_FALSE(engine::summarize(0, 10, kDate, "").has_value());
  CHECK_FALSE(sum(1, 10, nullptr).id.has_value());
  CHECK(sum(1, 10, "<a@b>").id == sum(2, 10, "< a@b >").id);
}

TEST_CASE("adoption: which messages are confirmed by which digest") {
  engine::PerSide<std::vector<engine::Summary>> s;
  s[0] = {sum(1, 100, "<a@x>"), sum(2, 200, "<b@x>"), sum(3, 300, nullptr), sum(4, 400, "<d@x>"), sum(5, 400, "<d@x>"),
          sum(6, 500, "<e@x>"), sum(7, 600, "<f@x>"), sum(8, 700, "<g@x>")};
  s[1] = {sum(10, 100, "<a@x>"),                         // same key: header digest
          sum(11, 201, "<b@x>"),                         // another size: no candidate
          sum(12, 300, nullptr),                         // no Message-ID: body
          sum(13, 400, "<d@x>"),                         // two on the local side: body
          sum(14, 500, "<e@x>", "17-Jul-1996 02:44:26 -0700"),  // another date: no candidate
          sum(15, 600, "<f@x>"), sum(16, 600, "<f@x>"),  // two on the remote side: body
          sum(17, 700, "<G@x>")};                        // Message-IDs compare as bytes
  const engine::DigestPlan plan = engine::plan_digests(s);
  CHECK(plan.header[0].to_string() == "1");
  CHECK(plan.header[1].to_string() == "10");
  CHECK(plan.body[0].to_string() == "3:5,7");
  CHECK(plan.body[1].to_string() == "12:13,15:16");

  // Nothing to confirm when a side is empty.
  engine::PerSide<std::vector<engine::Summary>> one;
  one[0] = s[0];
  const engine::DigestPlan none = engine::plan_digests(one);
  for (Side side : engine::kSides) {
    CHECK(none.header[index(side)].empty());
    CHECK(none.body[index(side)].empty());
  }
}

TEST_CASE("adoption: pairs are one to one within a key and a digest, lowest UIDs first") {
  engine::PerSide<std::vector<engine::Summary>> s;
  s[0] = {sum(1, 100, "<a@x>"), sum(2, 300, nullptr), sum(3, 300, nullptr), sum(4, 300, nullptr),
          sum(5, 400, "<d@x>"), sum(6, 400, "<d@x>"), sum(7, 500, "<e@x>"), sum(8, 600, "<f@x>")};
  s[1] = {sum(21, 100, "<a@x>"), sum(22, 300, nullptr), sum(23, 300, nullptr), sum(24, 400, "<d@x>"),
          sum(25, 500, "<e@x>"), sum(26, 600, "<f@x>"), sum(27, 999, "<z@x>")};
  engine::PerSide<std::map<uint32_t, engine::Digest>> d;
  // 1/21 same header; 2,3 and 22 one body, 4 and 23 another; 5,6 and 24 the
  // same body (two copies, one peer); 7/25 different headers; 8 has no
  // digest (gone before the confirmation): not paired.
  d[0] = {{1, digest(1)}, {2, digest(2)}, {3, digest(2)}, {4, digest(4)}, {5, digest(5)}, {6, digest(5)}, {7, digest(7)}};
  d[1] = {{21, digest(1)}, {22, digest(2)}, {23, digest(4)}, {24, digest(5)}, {25, digest(8)}, {26, digest(9)},
          {27, digest(1)}};
  const std::vector<Mapping> expected = {{1, 21}, {2, 22}, {4, 23}, {5, 24}};
  CHECK(engine::pair_messages(s, d) == expected);

  // The same, sides listed in another order: the same pairs.
  engine::PerSide<std::vector<engine::Summary>> r = s;
  for (auto& v : r) std::reverse(v.begin(), v.end());
  CHECK(engine::pair_messages(r, d) == expected);

  // A digest equal across different keys pairs nothing: the key comes first.
  engine::PerSide<std::vector<engine::Summary>> k;
  k[0] = {sum(1, 100, "<a@x>")};
  k[1] = {sum(2, 101, "<a@x>")};
  engine::PerSide<std::map<uint32_t, engine::Digest>> same;
  same[0] = {{1, digest(1)}};
  same[1] = {{2, digest(1)}};
  CHECK(engine::pair_messages(k, same).empty());
}
