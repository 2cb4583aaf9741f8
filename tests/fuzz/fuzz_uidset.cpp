// Fuzzes UidSet (include/interimap/uidset.hpp): parsing a sequence set as a
// server sends it, the string forms, and the set operations.
//
// Input: TEXT [NUL OPS]
//   TEXT  parsed with UidSet::parse.  UidSet::parse accepts exactly the
//         sequence sets without "*" (checked against a grammar written
//         here), and whatever it accepts keeps the class invariant (sorted,
//         disjoint, non-adjacent ranges), survives to_string() -> parse()
//         and split() (each piece within its bound, their union the set).
//         Nothing is expanded: a set may hold 2^32 - 1 UIDs.
//   OPS   a program on two sets A and B, run side by side on std::set
//         models (a reference written here) over 200 UIDs: 1-100 and the
//         100 highest, so that "last + 1" wraps are reached.  Each byte
//         picks an operation, and the next bytes its arguments.
#include "fuzz_util.hpp"

#include <interimap/uidset.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

using interimap::UidSet;

namespace {

constexpr uint32_t kMaxUid = 4294967295u;

void check_invariant(const UidSet& s) {
  const auto& r = s.ranges();
  uint64_t n = 0;
  for (size_t i = 0; i < r.size(); ++i) {
    FUZZ_CHECK(r[i].first >= 1);
    FUZZ_CHECK(r[i].first <= r[i].second);
    if (i > 0) FUZZ_CHECK(uint64_t{r[i - 1].second} + 1 < r[i].first);  // disjoint, not adjacent
    n += uint64_t{r[i].second} - r[i].first + 1;
  }
  FUZZ_CHECK(s.size() == n);
  FUZZ_CHECK(s.empty() == r.empty());
}

// RFC 3501 9 sequence-set without "*", numbers 1 to 2^32 - 1 (leading
// zeros allowed, as the reference's parser does).
bool valid_number(std::string_view t) {
  if (t.empty()) return false;
  for (char c : t)
    if (c < '0' || c > '9') return false;
  while (t.size() > 1 && t.front() == '0') t.remove_prefix(1);
  if (t.size() > 10) return false;
  const uint64_t v = std::stoull(std::string(t));
  return v >= 1 && v <= kMaxUid;
}

bool valid_set(std::string_view text) {
  if (text.empty()) return false;
  while (true) {
    const size_t comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    const size_t colon = item.find(':');
    if (colon == std::string_view::npos) {
      if (!valid_number(item)) return false;
    } else if (!valid_number(item.substr(0, colon)) || !valid_number(item.substr(colon + 1))) {
      return false;
    }
    if (comma == std::string_view::npos) return true;
    text.remove_prefix(comma + 1);
  }
}

void check_parsed(std::string_view text, uint8_t split_byte) {
  const bool valid = valid_set(text);
  UidSet s;
  try {
    s = UidSet::parse(text);
  } catch (const std::invalid_argument&) {
    FUZZ_CHECK(!valid);
    return;
  }
  FUZZ_CHECK(valid);
  FUZZ_CHECK(!s.empty());
  check_invariant(s);
  const std::string canonical = s.to_string();
  const UidSet again = UidSet::parse(canonical);
  FUZZ_CHECK(again == s);
  FUZZ_CHECK(again.to_string() == canonical);
  // Around each range's bounds.
  for (const auto& [first, last] : s.ranges()) {
    FUZZ_CHECK(s.contains(first) && s.contains(last));
    if (first > 1) FUZZ_CHECK(!s.contains(first - 1));
    if (last < kMaxUid) FUZZ_CHECK(!s.contains(last + 1));
  }
  // split(): the longest element "4294967294:4294967295" is 21 bytes.
  const size_t max_len = 21 + split_byte;
  UidSet joined;
  size_t total = 0;
  for (const std::string& piece : s.split(max_len)) {
    FUZZ_CHECK(!piece.empty() && piece.size() <= max_len);
    const UidSet p = UidSet::parse(piece);
    FUZZ_CHECK(p.intersection(joined).empty());
    joined.insert(p);
    total += piece.size();
  }
  FUZZ_CHECK(joined == s);
  FUZZ_CHECK(total <= canonical.size());
}

// The 200 UIDs of the program: 1-100 and 4294967196-4294967295.
uint32_t uid_of(uint8_t b) {
  const unsigned i = b % 200;
  return i < 100 ? i + 1 : kMaxUid - (199 - i);
}

using Model = std::set<uint32_t>;

void check_same(const UidSet& s, const Model& m) {
  check_invariant(s);
  FUZZ_CHECK(s.size() == m.size());
  // Bounded: a set of the program holds at most 200 UIDs.
  const std::vector<uint32_t> v = s.to_vector();
  FUZZ_CHECK(std::equal(v.begin(), v.end(), m.begin(), m.end()));
}

void run_ops(fuzz::Input in) {
  UidSet sets[2];
  Model models[2];
  while (!in.empty()) {
    const uint8_t op = in.byte();
    const int x = (op >> 4) & 1;  // the set operated on; the other is the argument
    UidSet& s = sets[x];
    Model& m = models[x];
    const UidSet& other = sets[1 - x];
    const Model& mother = models[1 - x];
    switch (op % 11) {
      case 0: {
        const uint32_t u = uid_of(in.byte());
        s.insert(u);
        m.insert(u);
        break;
      }
      case 1: {
        // A range within one half: at most 100 UIDs.
        const unsigned i = in.byte() % 200;
        const unsigned j = (i / 100) * 100 + in.byte() % 100;
        const uint32_t a = uid_of(static_cast<uint8_t>(i)), b = uid_of(static_cast<uint8_t>(j));
        s.insert(a, b);
        for (uint64_t u = std::min(a, b); u <= std::max(a, b); ++u) m.insert(static_cast<uint32_t>(u));
        break;
      }
      case 2:
        s.insert(other);
        m.insert(mother.begin(), mother.end());
        break;
      case 3: {
        const uint32_t u = uid_of(in.byte());
        s.erase(u);
        m.erase(u);
        break;
      }
      case 4: {
        s.erase(other);
        for (uint32_t u : mother) m.erase(u);
        break;
      }
      case 5: {
        s = s.intersection(other);
        Model both;
        for (uint32_t u : m)
          if (mother.contains(u)) both.insert(u);
        m = std::move(both);
        break;
      }
      case 6: {
        const uint32_t u = uid_of(in.byte());
        FUZZ_CHECK(s.contains(u) == m.contains(u));
        break;
      }
      case 7:
        if (!s.empty()) s = UidSet::parse(s.to_string());
        break;
      case 8:
        FUZZ_CHECK((s == other) == (m == mother));
        break;
      case 9:
        s.clear();
        m.clear();
        break;
      case 10: {
        // UID 0 is refused, and the set is unchanged.
        const UidSet before = s;
        bool thrown = false;
        try {
          s.insert(0, uid_of(in.byte()));
        } catch (const std::invalid_argument&) {
          thrown = true;
        }
        FUZZ_CHECK(thrown);
        FUZZ_CHECK(s == before);
        break;
      }
    }
    check_same(sets[0], models[0]);
    check_same(sets[1], models[1]);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view text = input.substr(0, nul);
  const std::string_view ops = nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);
  check_parsed(text, ops.empty() ? 0 : static_cast<uint8_t>(ops.front()));
  run_ops(fuzz::Input(reinterpret_cast<const uint8_t*>(ops.data()), ops.size()));
  return 0;
}
