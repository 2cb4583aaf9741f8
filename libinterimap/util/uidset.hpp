// Sets of UIDs (or sequence numbers) in IMAP's compact form "1:5,7,9:12".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace interimap::detail {

class UidSet {
 public:
  using Range = std::pair<uint32_t, uint32_t>;  // inclusive, first <= second

  UidSet() = default;
  // Parses "1:5,7,9:12" (ranges may be reversed, "5:1"; "*" is not accepted).
  // Throws std::invalid_argument on malformed input.
  static UidSet parse(std::string_view text);

  void insert(uint32_t uid);
  void insert(uint32_t first, uint32_t last);
  void insert(const UidSet& other);
  void erase(uint32_t uid);
  bool contains(uint32_t uid) const;
  bool empty() const { return ranges_.empty(); }
  // Number of UIDs in the set.
  uint64_t size() const;
  void clear() { ranges_.clear(); }
  // Sorted, disjoint, non-adjacent ranges.
  const std::vector<Range>& ranges() const { return ranges_; }
  // Every UID in ascending order (materializes the set).
  std::vector<uint32_t> to_vector() const;

  // "1:5,7,9:12"; empty string for an empty set.
  std::string to_string() const;
  // The same set split into strings no longer than max_len bytes each (a
  // single range is never split into a longer string; max_len >= 21).
  std::vector<std::string> split(size_t max_len) const;

  friend bool operator==(const UidSet&, const UidSet&) = default;

 private:
  std::vector<Range> ranges_;
};

}  // namespace interimap::detail
