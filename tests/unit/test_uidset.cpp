// UidSet: parsing, set operations and the compact string forms.
#include <interimap/uidset.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

using interimap::UidSet;

namespace {

struct ParseCase {
  const char* input;
  const char* canonical;
  uint64_t size;
};

}  // namespace

TEST_CASE("UidSet::parse accepts sequence sets and normalizes them") {
  const ParseCase cases[] = {
      {"1", "1", 1},
      {"1:5", "1:5", 5},
      {"5:1", "1:5", 5},
      {"1:1", "1", 1},
      {"1:5,7,9:12", "1:5,7,9:12", 10},
      {"9:12,7,1:5", "1:5,7,9:12", 10},
      {"1,2,3", "1:3", 3},
      {"3,2,1", "1:3", 3},
      {"1:3,4:6", "1:6", 6},
      {"1:5,2:3", "1:5", 5},
      {"1:5,3:8", "1:8", 8},
      {"5,5,5", "5", 1},
      {"10:20,1:9", "1:20", 20},
      {"4294967295", "4294967295", 1},
      {"4294967294:4294967295", "4294967294:4294967295", 2},
      {"4294967295:1", "1:4294967295", 4294967295ULL},
      {"007", "7", 1},
  };
  for (const auto& c : cases) {
    CAPTURE(c.input);
    UidSet set = UidSet::parse(c.input);
    CHECK(set.to_string() == c.canonical);
    CHECK(set.size() == c.size);
    CHECK_FALSE(set.empty());
  }
}

TEST_CASE("UidSet::parse rejects malformed sets") {
  const char* const cases[] = {
      "",          // empty set
      ",",         // empty elements
      "1,",        // trailing empty element
      ",1",        // leading empty element
      "1,,2",      // empty element in the middle
      "*",         // '*' is not accepted
      "1:*",       //
      "*:1",       //
      "0",         // 0 is not a UID
      "0:5",       //
      "5:0",       //
      "4294967296",             // overflow beyond uint32
      "1:4294967296",           //
      "99999999999999999999",   //
      "1:",        // empty bound
      ":1",        //
      "1:2:3",     // two colons
      "a",         // not a number
      "1a",        //
      " 1",        // blanks
      "1 ",        //
      "1, 2",      //
      "-1",        // signs
      "+1",        //
  };
  for (const char* input : cases) {
    CAPTURE(input);
    CHECK_THROWS_AS(UidSet::parse(input), std::invalid_argument);
  }
}

TEST_CASE("UidSet error messages quote the input") {
  try {
    UidSet::parse("1,0");
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("\"1,0\"") != std::string::npos);
  }
}

TEST_CASE("UidSet::range builds one range, in either order") {
  struct Case {
    uint32_t first, last;
    const char* expected;
    uint64_t size;
  };
  const Case cases[] = {
      {1, 1, "1", 1},
      {1, 5, "1:5", 5},
      {5, 1, "1:5", 5},
      {7, 7, "7", 1},
      {4294967295, 4294967295, "4294967295", 1},
      {1, 4294967295, "1:4294967295", 4294967295ULL},
      {4294967295, 1, "1:4294967295", 4294967295ULL},
  };
  for (const auto& c : cases) {
    CAPTURE(c.first);
    CAPTURE(c.last);
    const UidSet set = UidSet::range(c.first, c.last);
    CHECK(set.to_string() == c.expected);
    CHECK(set.size() == c.size);
    CHECK(set.ranges().size() == 1);
    CHECK(set == UidSet::parse(c.expected));
  }
}

TEST_CASE("UidSet refuses UID 0") {
  struct Case {
    uint32_t first, last;
  };
  const Case cases[] = {{0, 0}, {0, 5}, {5, 0}, {0, 4294967295}};
  for (const auto& c : cases) {
    CAPTURE(c.first);
    CAPTURE(c.last);
    CHECK_THROWS_AS(UidSet::range(c.first, c.last), std::invalid_argument);
    UidSet set = UidSet::parse("1:3");
    CHECK_THROWS_AS(set.insert(c.first, c.last), std::invalid_argument);
    CHECK(set.to_string() == "1:3");  // unchanged
  }
  UidSet set;
  CHECK_THROWS_AS(set.insert(0), std::invalid_argument);
  CHECK(set.empty());
  for (const char* input : {"0", "0:0", "1,0", "0,1", "3:0,5"}) {
    CAPTURE(input);
    try {
      UidSet::parse(input);
      FAIL("no exception");
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()).find("0 is not a valid UID") != std::string::npos);
      CHECK(std::string(e.what()).find(std::string("\"") + input + "\"") != std::string::npos);
    }
  }
}

TEST_CASE("UidSet::parse errors name the text and what is wrong") {
  struct Case {
    const char* input;
    const char* message;
  };
  const Case cases[] = {
      {"", "invalid UID set \"\": empty"},
      {"1,,2", "invalid UID set \"1,,2\": empty element"},
      {"1:*", "invalid UID set \"1:*\": \"*\" is not allowed"},
      {"4294967296", "invalid UID set \"4294967296\": 4294967296 exceeds 32 bits"},
      {"1:2:3", "invalid UID set \"1:2:3\": bad number \"2:3\""},
      {"1a", "invalid UID set \"1a\": bad number \"1a\""},
      {"+1", "invalid UID set \"+1\": bad number \"+1\""},
      {"2,0", "invalid UID set \"2,0\": 0 is not a valid UID"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.input);
    try {
      UidSet::parse(c.input);
      FAIL("no exception");
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()) == c.message);
    }
  }
}

TEST_CASE("UidSet::insert merges overlapping and adjacent ranges") {
  struct Case {
    const char* start;
    uint32_t first, last;
    const char* expected;
  };
  const Case cases[] = {
      {"5", 1, 1, "1,5"},
      {"5", 4, 4, "4:5"},
      {"5", 6, 6, "5:6"},
      {"5", 7, 7, "5,7"},
      {"5", 5, 5, "5"},
      {"1:3,7:9", 4, 6, "1:9"},
      {"1:3,7:9", 5, 5, "1:3,5,7:9"},
      {"1:3,7:9", 4, 4, "1:4,7:9"},
      {"1:3,7:9", 6, 6, "1:3,6:9"},
      {"1:3,7:9,20", 2, 8, "1:9,20"},
      {"1:3,7:9,20", 10, 19, "1:3,7:20"},
      {"1:3,7:9,20", 30, 1, "1:30"},
      {"2,4,6,8", 3, 7, "2:8"},
      {"2,4,6,8", 100, 200, "2,4,6,8,100:200"},
      {"10", 1, 2, "1:2,10"},
      {"4294967295", 4294967294, 4294967294, "4294967294:4294967295"},
      {"4294967294", 4294967295, 4294967295, "4294967294:4294967295"},
      {"1:4294967295", 7, 7, "1:4294967295"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.start);
    CAPTURE(c.first);
    CAPTURE(c.last);
    UidSet set = UidSet::parse(c.start);
    set.insert(c.first, c.last);
    CHECK(set.to_string() == c.expected);
  }
}

TEST_CASE("UidSet::insert into an empty set, and of a set") {
  UidSet set;
  CHECK(set.empty());
  CHECK(set.to_string().empty());
  CHECK(set.size() == 0);
  set.insert(3);
  set.insert(1);
  set.insert(2);
  CHECK(set.to_string() == "1:3");
  CHECK(set.ranges().size() == 1);

  UidSet other = UidSet::parse("4,10:12,20");
  set.insert(other);
  CHECK(set.to_string() == "1:4,10:12,20");
  set.insert(UidSet{});
  CHECK(set.to_string() == "1:4,10:12,20");
  set.insert(UidSet::parse("5:9,13:19"));
  CHECK(set.to_string() == "1:20");
  set.clear();
  CHECK(set.empty());
}

TEST_CASE("UidSet::erase splits and shrinks ranges") {
  struct Case {
    const char* start;
    uint32_t uid;
    const char* expected;
  };
  const Case cases[] = {
      {"1:5", 3, "1:2,4:5"}, {"1:5", 1, "2:5"}, {"1:5", 5, "1:4"},   {"1:5", 6, "1:5"},
      {"3", 3, ""},          {"1:2", 1, "2"},   {"1:2", 2, "1"},     {"1:3,7", 5, "1:3,7"},
      {"1:3,7", 7, "1:3"},   {"2:9", 1, "2:9"}, {"4294967294:4294967295", 4294967295, "4294967294"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.start);
    CAPTURE(c.uid);
    UidSet set = UidSet::parse(c.start);
    set.erase(c.uid);
    CHECK(set.to_string() == c.expected);
    CHECK_FALSE(set.contains(c.uid));
  }
  UidSet empty;
  empty.erase(1);
  CHECK(empty.empty());
}

TEST_CASE("UidSet::erase of a set removes each of its UIDs") {
  struct Case {
    const char* start;
    const char* erase;  // "" for the empty set
    const char* expected;
  };
  const Case cases[] = {
      {"1:10", "3", "1:2,4:10"},
      {"1:10", "1:10", ""},
      {"1:10", "1:4294967295", ""},
      {"1:10", "", "1:10"},
      {"1:10", "11:20", "1:10"},
      {"5:10", "1:4", "5:10"},
      {"1:10", "1:3", "4:10"},
      {"1:10", "8:12", "1:7"},
      {"1:10", "2,4,6,8", "1,3,5,7,9:10"},
      {"1:10", "2:3,5:6,9", "1,4,7:8,10"},
      {"1:3,7:9,20", "2:8", "1,9,20"},
      {"1:3,7:9,20", "3:7,20", "1:2,8:9"},
      {"1,3,5,7", "2,4,6", "1,3,5,7"},
      {"1,3,5,7", "1:4", "5,7"},
      {"1:100", "10:20,30:40,50:60", "1:9,21:29,41:49,61:100"},
      {"4294967290:4294967295", "4294967295", "4294967290:4294967294"},
      {"1:4294967295", "2:4294967294", "1,4294967295"},
      {"", "1:5", ""},
  };
  for (const auto& c : cases) {
    CAPTURE(c.start);
    CAPTURE(c.erase);
    UidSet set = *c.start ? UidSet::parse(c.start) : UidSet{};
    const UidSet gone = *c.erase ? UidSet::parse(c.erase) : UidSet{};
    set.erase(gone);
    CHECK(set.to_string() == c.expected);
    for (const auto& [first, last] : gone.ranges()) {
      CHECK_FALSE(set.contains(first));
      CHECK_FALSE(set.contains(last));
    }
  }
}

TEST_CASE("UidSet::contains and to_vector") {
  UidSet set = UidSet::parse("1:3,7,9:10");
  const uint32_t in[] = {1, 2, 3, 7, 9, 10};
  const uint32_t out[] = {0, 4, 5, 6, 8, 11, 4294967295};
  for (uint32_t uid : in) {
    CAPTURE(uid);
    CHECK(set.contains(uid));
  }
  for (uint32_t uid : out) {
    CAPTURE(uid);
    CHECK_FALSE(set.contains(uid));
  }
  CHECK(set.to_vector() == std::vector<uint32_t>{1, 2, 3, 7, 9, 10});
  CHECK(set.size() == 6);
  CHECK(UidSet{}.to_vector().empty());
  CHECK(UidSet::parse("4294967295").to_vector() == std::vector<uint32_t>{4294967295});
}

TEST_CASE("UidSet::intersection clips a set to another without expanding it") {
  const struct {
    const char* a;
    const char* b;
    const char* expected;
  } cases[] = {
      {"1:10", "5:20", "5:10"},
      {"1:3,7,9:12", "2,7:9,12:20", "2,7,9,12"},
      {"1:4294967295", "3,5:6,4294967295", "3,5:6,4294967295"},  // a hostile server's set
      {"1:5", "6:9", ""},
      {"1,3,5", "2,4,6", ""},
      {"1:100", "1:100", "1:100"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.a);
    CAPTURE(c.b);
    const UidSet a = UidSet::parse(c.a), b = UidSet::parse(c.b);
    CHECK(a.intersection(b).to_string() == c.expected);
    CHECK(b.intersection(a).to_string() == c.expected);
  }
  CHECK(UidSet{}.intersection(UidSet::parse("1:9")).empty());
  CHECK(UidSet::parse("1:4294967295").intersection(UidSet::parse("1:4294967295")).size() == 4294967295u);
}

TEST_CASE("UidSet equality is by content") {
  CHECK(UidSet::parse("1,2,3") == UidSet::parse("3:1"));
  CHECK_FALSE(UidSet::parse("1,3") == UidSet::parse("1:3"));
}

TEST_CASE("UidSet::split keeps each string within max_len and the union intact") {
  // 1,3,5,...: many single-UID ranges.
  UidSet set;
  for (uint32_t uid = 1; uid < 20000; uid += 2) {
    set.insert(uid);
  }
  set.insert(4294967290, 4294967295);
  for (size_t max_len : {21, 22, 30, 100, 4000}) {
    CAPTURE(max_len);
    auto parts = set.split(max_len);
    REQUIRE_FALSE(parts.empty());
    UidSet rebuilt;
    for (const auto& part : parts) {
      CHECK(part.size() <= max_len);
      CHECK_FALSE(part.empty());
      rebuilt.insert(UidSet::parse(part));
    }
    CHECK(rebuilt == set);
  }
  // Greedy packing: each part but the last could not take the next element.
  auto parts = UidSet::parse("1,3,5,7,9,11").split(21);
  CHECK(parts == std::vector<std::string>{"1,3,5,7,9,11"});
  parts = UidSet::parse("1,3,5,7,9,11").split(5);
  CHECK(parts == std::vector<std::string>{"1,3,5", "7,9", "11"});
  // A range longer than max_len still goes out whole, alone.
  parts = UidSet::parse("1,100000:200000,7").split(5);
  CHECK(parts == std::vector<std::string>{"1,7", "100000:200000"});
  CHECK(UidSet{}.split(100).empty());
  CHECK(UidSet::parse("1:5").split(100) == std::vector<std::string>{"1:5"});
}

TEST_CASE("UidSet agrees with a plain std::set under random operations") {
  // Deterministic pseudo-random sequence (LCG), UIDs in a small range so
  // that merges, splits and adjacency happen often.
  uint64_t state = 12345;
  auto next = [&state](uint32_t bound) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<uint32_t>((state >> 33) % bound);
  };
  // A few random ranges, as a UidSet and as its model.
  auto random_set = [&next] {
    std::pair<UidSet, std::set<uint32_t>> out;
    for (uint32_t k = next(4); k > 0; --k) {
      const uint32_t b = next(200) + 1, c = next(200) + 1;
      out.first.insert(b, c);
      for (uint32_t u = std::min(b, c); u <= std::max(b, c); ++u) out.second.insert(u);
    }
    return out;
  };
  UidSet set;
  std::set<uint32_t> model;
  size_t mismatches = 0;
  for (int step = 0; step < 5000; ++step) {
    const uint32_t op = next(6);
    const uint32_t a = next(200) + 1;
    if (op == 4) {
      // erase(set): a few ranges.
      const auto [gone, gone_model] = random_set();
      for (uint32_t u : gone_model) model.erase(u);
      set.erase(gone);
    } else if (op == 5) {
      // insert(set)
      const auto [more, more_model] = random_set();
      model.insert(more_model.begin(), more_model.end());
      set.insert(more);
    } else if (op == 0) {
      const uint32_t b = next(200) + 1;
      set.insert(a, b);
      for (uint32_t u = std::min(a, b); u <= std::max(a, b); ++u) {
        model.insert(u);
      }
    } else if (op == 1) {
      set.insert(a);
      model.insert(a);
    } else {
      set.erase(a);
      model.erase(a);
    }
    const auto values = set.to_vector();
    if (values != std::vector<uint32_t>(model.begin(), model.end()) || set.size() != model.size()) {
      ++mismatches;
    }
    // Invariant: sorted, disjoint, non-adjacent ranges.
    const auto& r = set.ranges();
    for (size_t i = 0; i < r.size(); ++i) {
      if (r[i].first > r[i].second || (i > 0 && uint64_t{r[i - 1].second} + 1 >= r[i].first)) {
        ++mismatches;
      }
    }
    if (!set.empty() && UidSet::parse(set.to_string()) != set) {
      ++mismatches;
    }
    // intersection() against a random set, checked on the model.
    const auto [probe, probe_model] = random_set();
    std::vector<uint32_t> both;
    std::set_intersection(model.begin(), model.end(), probe_model.begin(), probe_model.end(), std::back_inserter(both));
    const UidSet common = set.intersection(probe);
    if (common.to_vector() != both || (!common.empty() && UidSet::parse(common.to_string()) != common)) {
      ++mismatches;
    }
  }
  CHECK(mismatches == 0);
  CHECK_FALSE(model.empty());
}
