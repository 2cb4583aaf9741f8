// Flag lists, UID lists and mappings as the sync engine compares and logs them.
// Pure functions, unit-tested (tests/unit/test_sync_units.cpp).
#pragma once

#include <interimap/statedb.hpp>
#include <interimap/uidset.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace interimap::detail::sync {

// A flag list in the form the reference compares: sorted, each flag once,
// blank-separated ("\Seen \Answered" -> "\Answered \Seen").
std::string flag_string(std::vector<std::string> flags);
// The words of a blank-separated flag string.
std::vector<std::string> split_flags(std::string_view flags);
// The union of two flag strings, in flag_string() form (a conflict's
// resolution: both sides get every flag either side set).
std::string flag_union(std::string_view a, std::string_view b);
// The reference's compact_list: runs of consecutive UIDs in the given
// order ("1:3,7,5"); not sorted, unlike UidSet::to_string().
std::string compact_list(const std::vector<uint32_t>& uids);
// The set of a list of UIDs.
UidSet to_set(const std::vector<uint32_t>& uids);
// The mapping of `uid` on `side` and `peer` on the other side.
constexpr Mapping mapping_of(Side side, uint32_t uid, uint32_t peer) {
  return side == Side::Local ? Mapping{uid, peer} : Mapping{peer, uid};
}

}  // namespace interimap::detail::sync
