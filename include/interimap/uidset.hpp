// A set of UIDs (or sequence numbers) in IMAP's compact form "1:5,7,9:12".
#pragma once

#include <interimap/export.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace interimap {

// Kept as sorted, disjoint, non-adjacent inclusive ranges.  UIDs are 1 to
// 4294967295 (RFC 3501 2.3.1.1); "*" is not representable: use
// UidSet::range(n, 4294967295) for "n:*".
class INTERIMAP_API UidSet {
 public:
  using Range = std::pair<uint32_t, uint32_t>;  // inclusive, first <= second

  UidSet() = default;
  // The set [first, last] (either order).  Throws std::invalid_argument for 0.
  static UidSet range(uint32_t first, uint32_t last);
  // Parses "1:5,7,9:12" (ranges may be reversed, "5:1"; "*" is not
  // accepted).  Throws std::invalid_argument naming the text when
  // malformed, empty or holding 0.
  static UidSet parse(std::string_view text);

  // Insertions in ascending order are amortized O(1).  Throws
  // std::invalid_argument for UID 0.
  void insert(uint32_t uid) { insert(uid, uid); }
  void insert(uint32_t first, uint32_t last);
  void insert(const UidSet& other);
  void erase(uint32_t uid);
  // Removes every UID of other (linear in both sizes).
  void erase(const UidSet& other);
  // The UIDs in both sets (linear in the number of ranges; nothing is
  // expanded): how a set a server sent is clipped to what was asked.
  UidSet intersection(const UidSet& other) const;
  bool contains(uint32_t uid) const;
  bool empty() const { return ranges_.empty(); }
  // Number of UIDs.
  uint64_t size() const;
  void clear() { ranges_.clear(); }
  // Sorted, disjoint, non-adjacent ranges.
  const std::vector<Range>& ranges() const { return ranges_; }
  // Every UID in ascending order (materializes the set).
  std::vector<uint32_t> to_vector() const;

  // "1:5,7,9:12"; "" for the empty set.
  std::string to_string() const;
  // The same set split into strings no longer than max_len bytes each (a
  // single range is never split into a longer string; max_len >= 21).
  std::vector<std::string> split(size_t max_len) const;

  friend bool operator==(const UidSet&, const UidSet&) = default;

 private:
  std::vector<Range> ranges_;
};

}  // namespace interimap
