#include <interimap/uidset.hpp>

#include <algorithm>
#include <charconv>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

namespace interimap {

namespace {

// Sorts ranges by their first UID and merges overlapping or adjacent ones,
// restoring the class invariant (sorted, disjoint, non-adjacent).
void normalize(std::vector<UidSet::Range>& ranges) {
  std::sort(ranges.begin(), ranges.end());
  std::vector<UidSet::Range> out;
  out.reserve(ranges.size());
  for (const auto& r : ranges) {
    // uint64_t: last + 1 must not wrap at UINT32_MAX.
    if (!out.empty() && uint64_t{r.first} <= uint64_t{out.back().second} + 1) {
      out.back().second = std::max(out.back().second, r.second);
    } else {
      out.push_back(r);
    }
  }
  ranges = std::move(out);
}

// RFC 3501 9: nz-number = digit-nz *DIGIT, within 32 bits (RFC 3501 2.3.1.1).
uint32_t parse_number(std::string_view text, std::string_view whole) {
  if (text.empty()) {
    throw std::invalid_argument(fmt::format("invalid UID set \"{}\": empty element", whole));
  }
  if (text == "*") {
    throw std::invalid_argument(fmt::format("invalid UID set \"{}\": \"*\" is not allowed", whole));
  }
  uint32_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec == std::errc::result_out_of_range) {
    throw std::invalid_argument(fmt::format("invalid UID set \"{}\": {} exceeds 32 bits", whole, text));
  }
  if (ec != std::errc() || ptr != end || text.front() < '0' || text.front() > '9') {
    throw std::invalid_argument(fmt::format("invalid UID set \"{}\": bad number \"{}\"", whole, text));
  }
  if (value == 0) {
    throw std::invalid_argument(fmt::format("invalid UID set \"{}\": 0 is not a valid UID", whole));
  }
  return value;
}

void append_range(std::string& out, const UidSet::Range& r) {
  if (r.first == r.second) {
    fmt::format_to(std::back_inserter(out), "{}", r.first);
  } else {
    fmt::format_to(std::back_inserter(out), "{}:{}", r.first, r.second);
  }
}

}  // namespace

UidSet UidSet::range(uint32_t first, uint32_t last) {
  UidSet s;
  s.insert(first, last);
  return s;
}

UidSet UidSet::parse(std::string_view text) {
  // RFC 3501 9: sequence-set has at least one element, so "" is malformed.
  if (text.empty()) {
    throw std::invalid_argument("invalid UID set \"\": empty");
  }
  UidSet set;
  size_t pos = 0;
  while (true) {
    size_t comma = text.find(',', pos);
    std::string_view item = text.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    size_t colon = item.find(':');
    uint32_t first = 0, last = 0;
    if (colon == std::string_view::npos) {
      first = last = parse_number(item, text);
    } else {
      first = parse_number(item.substr(0, colon), text);
      last = parse_number(item.substr(colon + 1), text);  // a second ':' makes this a bad number
    }
    // RFC 3501 9 (seq-range): "2:4" and "4:2" are equivalent.
    if (first > last) {
      std::swap(first, last);
    }
    set.ranges_.emplace_back(first, last);
    if (comma == std::string_view::npos) {
      break;
    }
    pos = comma + 1;
  }
  normalize(set.ranges_);
  return set;
}

void UidSet::insert(uint32_t first, uint32_t last) {
  if (first > last) {
    std::swap(first, last);
  }
  // RFC 3501 2.3.1.1: UIDs start at 1.
  if (first == 0) {
    throw std::invalid_argument("UID 0 is not a valid UID");
  }
  // Fast path: at or after the end (ascending insertion).
  if (ranges_.empty() || uint64_t{first} > uint64_t{ranges_.back().second} + 1) {
    ranges_.emplace_back(first, last);
    return;
  }
  if (first >= ranges_.back().first) {
    ranges_.back().second = std::max(ranges_.back().second, last);
    return;
  }
  // The first range that ends at or after first - 1 (it may touch or overlap).
  auto lo = std::lower_bound(ranges_.begin(), ranges_.end(), first, [](const Range& r, uint32_t v) {
    return uint64_t{r.second} + 1 < v;
  });
  // Past the last range that starts at or before last + 1.
  auto hi = lo;
  while (hi != ranges_.end() && uint64_t{hi->first} <= uint64_t{last} + 1) {
    ++hi;
  }
  if (lo == hi) {
    ranges_.insert(lo, Range{first, last});
    return;
  }
  Range merged{std::min(first, lo->first), std::max(last, std::prev(hi)->second)};
  *lo = merged;
  ranges_.erase(std::next(lo), hi);
}

void UidSet::insert(const UidSet& other) {
  if (other.ranges_.empty()) {
    return;
  }
  if (ranges_.empty()) {
    ranges_ = other.ranges_;
    return;
  }
  ranges_.insert(ranges_.end(), other.ranges_.begin(), other.ranges_.end());
  normalize(ranges_);
}

void UidSet::erase(uint32_t uid) {
  auto it = std::lower_bound(ranges_.begin(), ranges_.end(), uid,
                             [](const Range& r, uint32_t v) { return r.second < v; });
  if (it == ranges_.end() || it->first > uid) {
    return;
  }
  if (it->first == it->second) {
    ranges_.erase(it);
  } else if (it->first == uid) {
    ++it->first;
  } else if (it->second == uid) {
    --it->second;
  } else {
    Range tail{uid + 1, it->second};
    it->second = uid - 1;
    ranges_.insert(std::next(it), tail);
  }
}

UidSet UidSet::intersection(const UidSet& other) const {
  UidSet out;
  auto a = ranges_.begin();
  auto b = other.ranges_.begin();
  while (a != ranges_.end() && b != other.ranges_.end()) {
    const uint32_t first = std::max(a->first, b->first);
    const uint32_t last = std::min(a->second, b->second);
    if (first <= last) out.ranges_.emplace_back(first, last);  // disjoint, ascending, non-adjacent
    if (a->second < b->second)
      ++a;
    else
      ++b;
  }
  return out;
}

void UidSet::erase(const UidSet& other) {
  if (ranges_.empty() || other.ranges_.empty()) {
    return;
  }
  // Merge walk over both sorted lists: linear.
  std::vector<Range> out;
  out.reserve(ranges_.size() + other.ranges_.size());
  auto o = other.ranges_.begin();
  for (Range r : ranges_) {
    uint64_t first = r.first;
    const uint64_t last = r.second;
    while (o != other.ranges_.end() && o->second < first) {
      ++o;
    }
    auto p = o;
    while (first <= last && p != other.ranges_.end() && p->first <= last) {
      if (p->first > first) {
        out.emplace_back(static_cast<uint32_t>(first), p->first - 1);
      }
      first = uint64_t{p->second} + 1;
      if (p->second > last) {
        break;
      }
      ++p;
    }
    if (first <= last) {
      out.emplace_back(static_cast<uint32_t>(first), static_cast<uint32_t>(last));
    }
  }
  ranges_ = std::move(out);
}

bool UidSet::contains(uint32_t uid) const {
  auto it = std::lower_bound(ranges_.begin(), ranges_.end(), uid,
                             [](const Range& r, uint32_t v) { return r.second < v; });
  return it != ranges_.end() && it->first <= uid;
}

uint64_t UidSet::size() const {
  uint64_t n = 0;
  for (const auto& r : ranges_) {
    n += uint64_t{r.second} - r.first + 1;
  }
  return n;
}

std::vector<uint32_t> UidSet::to_vector() const {
  std::vector<uint32_t> out;
  out.reserve(static_cast<size_t>(size()));
  for (const auto& r : ranges_) {
    for (uint64_t uid = r.first; uid <= r.second; ++uid) {
      out.push_back(static_cast<uint32_t>(uid));
    }
  }
  return out;
}

std::string UidSet::to_string() const {
  std::string out;
  for (const auto& r : ranges_) {
    if (!out.empty()) {
      out += ',';
    }
    append_range(out, r);
  }
  return out;
}

std::vector<std::string> UidSet::split(size_t max_len) const {
  // Greedy packing: a range is never cut, so each chunk is as long as fits.
  // The longest element, "4294967294:4294967295", is 21 bytes.
  std::vector<std::string> out;
  std::string current, item;
  for (const auto& r : ranges_) {
    item.clear();
    append_range(item, r);
    if (!current.empty() && current.size() + 1 + item.size() > max_len) {
      out.push_back(std::move(current));
      current.clear();
    }
    if (!current.empty()) {
      current += ',';
    }
    current += item;
  }
  if (!current.empty()) {
    out.push_back(std::move(current));
  }
  return out;
}

}  // namespace interimap
