#include "sync/adopt_match.hpp"

#include "util/ascii.hpp"

#include <algorithm>
#include <array>
#include <tuple>

namespace interimap::detail::sync {

namespace {

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
// days_from_civil).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

// The cheap key: size, date, Message-ID digest (absent: all zero, has_id false).
struct Key {
  uint64_t size = 0;
  int64_t date = 0;
  bool has_id = false;
  Digest id{};
  auto operator<=>(const Key&) const = default;
};

Key key_of(const Summary& s) { return Key{s.size, s.date, s.id.has_value(), s.id.value_or(Digest{})}; }

// Per key, the UIDs of each side (ascending when the input is).
using Groups = std::map<Key, PerSide<std::vector<uint32_t>>>;

Groups group(const PerSide<std::vector<Summary>>& summaries) {
  Groups g;
  for (Side s : kSides)
    for (const Summary& m : summaries[index(s)]) g[key_of(m)][index(s)].push_back(m.uid);
  for (auto& [key, uids] : g)
    for (auto& v : uids) std::sort(v.begin(), v.end());
  return g;
}

}  // namespace

std::string message_id(std::string_view header) {
  // RFC 5322 2.2: a field is "name:" at the start of a line, continued by
  // lines that start with a blank (folding).
  constexpr std::string_view kName = "message-id:";
  size_t pos = 0;
  while (pos < header.size()) {
    size_t eol = header.find('\n', pos);
    if (eol == std::string_view::npos) eol = header.size();
    const std::string_view line = header.substr(pos, eol - pos);
    if (line.size() >= kName.size() && iequals(line.substr(0, kName.size()), kName)) {
      std::string id;
      auto add = [&](std::string_view part) {
        for (char c : part)
          if (!is_blank(c)) id += c;
      };
      add(line.substr(kName.size()));
      for (size_t p = eol + 1; p < header.size() && (header[p] == ' ' || header[p] == '\t');) {
        size_t e = header.find('\n', p);
        if (e == std::string_view::npos) e = header.size();
        add(header.substr(p, e - p));
        p = e + 1;
      }
      return id;
    }
    pos = eol + 1;
  }
  return {};
}

std::optional<int64_t> parse_internaldate(std::string_view t) {
  // RFC 3501 9: date-time = DQUOTE date-day-fixed "-" date-month "-"
  // date-year SP time SP zone DQUOTE (the quotes already gone).
  if (t.size() != 26) return std::nullopt;
  auto digits = [&](size_t at, size_t n) -> std::optional<unsigned> {
    unsigned v = 0;
    for (size_t i = at; i < at + n; ++i) {
      if (t[i] < '0' || t[i] > '9') return std::nullopt;
      v = v * 10 + static_cast<unsigned>(t[i] - '0');
    }
    return v;
  };
  static constexpr std::array<std::string_view, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                               "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::optional<unsigned> day = t[0] == ' ' ? digits(1, 1) : digits(0, 2);
  unsigned month = 0;
  for (unsigned i = 0; i < 12; ++i)
    if (iequals(t.substr(3, 3), kMonths[i])) month = i + 1;
  const auto year = digits(7, 4), hh = digits(12, 2), mm = digits(15, 2), ss = digits(18, 2);
  const auto zh = digits(22, 2), zm = digits(24, 2);
  if (!day || month == 0 || !year || !hh || !mm || !ss || !zh || !zm || t[2] != '-' || t[6] != '-' || t[11] != ' ' ||
      t[14] != ':' || t[17] != ':' || t[20] != ' ' || (t[21] != '+' && t[21] != '-') || *day < 1 || *day > 31 ||
      *hh > 23 || *mm > 59 || *ss > 60 || *zm > 59)
    return std::nullopt;
  const int64_t zone = (static_cast<int64_t>(*zh) * 60 + *zm) * 60 * (t[21] == '-' ? -1 : 1);
  return days_from_civil(*year, month, *day) * 86400 + *hh * 3600 + *mm * 60 + *ss - zone;
}

std::optional<Summary> summarize(uint32_t uid, uint64_t size, std::string_view internaldate,
                                 std::string_view message_id_field) {
  const auto date = parse_internaldate(internaldate);
  if (!date || size == 0 || uid == 0) return std::nullopt;
  Summary s{uid, size, *date, std::nullopt};
  if (const std::string id = message_id(message_id_field); !id.empty()) s.id = digest_of(id);
  return s;
}

DigestPlan plan_digests(const PerSide<std::vector<Summary>>& summaries) {
  DigestPlan plan;
  for (const auto& [key, uids] : group(summaries)) {
    if (uids[0].empty() || uids[1].empty()) continue;
    // One message on each side with this Message-ID, size and date: the
    // header's digest confirms it.  Otherwise only the body tells.
    const bool by_header = key.has_id && uids[0].size() == 1 && uids[1].size() == 1;
    for (Side s : kSides)
      for (uint32_t uid : uids[index(s)]) (by_header ? plan.header : plan.body)[index(s)].insert(uid);
  }
  return plan;
}

std::vector<Mapping> pair_messages(const PerSide<std::vector<Summary>>& summaries,
                                   const PerSide<std::map<uint32_t, Digest>>& digests) {
  std::vector<Mapping> pairs;
  for (const auto& [key, uids] : group(summaries)) {
    if (uids[0].empty() || uids[1].empty()) continue;
    // Per digest, each side's UIDs in ascending order.
    std::map<Digest, PerSide<std::vector<uint32_t>>> by_digest;
    for (Side s : kSides)
      for (uint32_t uid : uids[index(s)]) {
        const auto it = digests[index(s)].find(uid);
        if (it != digests[index(s)].end()) by_digest[it->second][index(s)].push_back(uid);
      }
    for (const auto& [digest, both] : by_digest)
      for (size_t k = 0; k < both[0].size() && k < both[1].size(); ++k) pairs.push_back(Mapping{both[0][k], both[1][k]});
  }
  std::sort(pairs.begin(), pairs.end(), [](const Mapping& a, const Mapping& b) { return a.local < b.local; });
  return pairs;
}

}  // namespace interimap::detail::sync
