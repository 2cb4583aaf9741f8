// The pure part of adoption and UIDVALIDITY recovery (doc/design.md
// "Adoption and UIDVALIDITY recovery"): which messages of two sides are
// the same message.  Unit-tested (tests/unit/test_sync_units.cpp).
//
// Cheap first: a message's key is its RFC822.SIZE, its INTERNALDATE and
// its Message-ID (a digest of it; absent for a message without one), read
// with one UID FETCH per side that reads no body.  Only keys present on
// both sides go further, confirmed by a digest:
//  - a key with a Message-ID held by exactly one message on each side:
//    SHA-256 of the whole header (BODY.PEEK[HEADER]);
//  - any other shared key (no Message-ID, or several messages with the
//    key on a side): SHA-256 of the whole message (BODY.PEEK[]).
// Pairs are made one to one within a key and digest, lowest UIDs first:
// two copies on one side and one on the other make one pair and one copy.
#pragma once

#include <interimap/statedb.hpp>
#include <interimap/uidset.hpp>

#include "sync/append_journal.hpp"
#include "sync/context.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string_view>
#include <vector>

namespace interimap::detail::sync {

// One message as the cheap pass read it.
struct Summary {
  uint32_t uid = 0;
  uint64_t size = 0;
  int64_t date = 0;          // INTERNALDATE, seconds since the epoch (UTC)
  std::optional<Digest> id;  // SHA-256 of the normalized Message-ID; none without one
};

// The Message-ID of a BODY[HEADER.FIELDS (MESSAGE-ID)] reply (the first
// such field, unfolded, every blank removed: "<a@b>"); "" without one.
std::string message_id(std::string_view header);
// INTERNALDATE ("17-Jul-1996 02:44:25 -0700", the day possibly
// space-padded) in seconds since the epoch; nullopt when malformed.
std::optional<int64_t> parse_internaldate(std::string_view date);
// The summary of a message from its fetched fields; nullopt when it cannot
// be matched (a malformed INTERNALDATE, an empty message).
std::optional<Summary> summarize(uint32_t uid, uint64_t size, std::string_view internaldate,
                                 std::string_view message_id_field);

// The messages whose key is present on both sides, per side: those to
// confirm by the header's digest, and those to confirm by the body's.
struct DigestPlan {
  PerSide<UidSet> header, body;
};
DigestPlan plan_digests(const PerSide<std::vector<Summary>>& summaries);

// The pairs (local UID, remote UID), ascending by local UID: messages of
// the same key and the same digest (either kind, as plan_digests() chose),
// one to one, lowest UIDs first.  A message without a digest is not paired.
std::vector<Mapping> pair_messages(const PerSide<std::vector<Summary>>& summaries,
                                   const PerSide<std::map<uint32_t, Digest>>& digests);

}  // namespace interimap::detail::sync
