// ChangeTracker for servers with QRESYNC (RFC 7162): the reference's
// algorithm.  SELECT ... (QRESYNC (uidvalidity modseq known-uids
// seq-match)) brings the VANISHED (EARLIER) UIDs and the flag changes of
// the known messages in its answer; later changes arrive as untagged
// VANISHED and FETCH responses, which Mailbox records.
#include "sync/change_tracker.hpp"

#include "sync/flags.hpp"
#include "util/ascii.hpp"

#include <algorithm>
#include <string>
#include <tuple>

namespace interimap::detail::sync {

namespace {

class QresyncTracker final : public ChangeTracker {
 public:
  void prepare(const StateDB& db, MailboxId idx, Side side, const SideState& clean) override {
    match_seqs_.clear();
    match_uids_.clear();
    if (!resynchronizes(clean)) return;
    // RFC 7162 3.2.5.2 message sequence match data, as the reference: the
    // highest mapped UIDs (at most 1024, about 256 bytes once compacted),
    // which are the last sequence numbers of a clean mailbox; they let a
    // server that forgot the MODSEQ of expunged messages answer precisely.
    const uint64_t count = db.mapping_count(idx);
    if (count == 0) return;
    UidSet uids;
    uint64_t n = 0;
    size_t text = 0;
    db.for_each_mapping(idx, side, UidOrder::Descending, [&](const Mapping& m) {
      if (n >= 1024 || text > 256) return false;
      const uint32_t u = m.uid(side);
      if (!uids.contains(u + 1)) text += std::to_string(u).size() + 2;  // a new range, roughly "a:b,"
      uids.insert(u);
      ++n;
      return true;
    });
    if (n == 0 || n > count) return;
    match_seqs_ = UidSet::range(static_cast<uint32_t>(count - n + 1), static_cast<uint32_t>(count));
    match_uids_ = std::move(uids);
  }

  void select(Mailbox& mailbox, const SideState& clean) override {
    if (!resynchronizes(clean)) {
      mailbox.select();
      return;
    }
    // RFC 7162 3.2.5: QRESYNC with the last clean state gives the UIDs
    // vanished and the flags changed since, in the SELECT's answer.
    QresyncParams q;
    q.uidvalidity = clean.uidvalidity;
    q.highestmodseq = clean.highestmodseq;
    q.known_uids = UidSet::range(1, clean.uidnext - 1);
    q.match_seqs = match_seqs_;
    q.match_uids = match_uids_;
    mailbox.select(q);
  }

  // The reference's pull_updates: the pending VANISHED UIDs and flag
  // changes of known messages (UID below the clean UIDNEXT, MODSEQ above
  // the clean HIGHESTMODSEQ), fetching the flags the server did not give;
  // then the clean HIGHESTMODSEQ becomes the server's.
  KnownChanges changes(Mailbox& mailbox, SideState& clean) override {
    const uint32_t next = clean.uidnext == 0 ? 1 : clean.uidnext;
    KnownChanges out;
    UidSet vanished;
    auto keep = [&](uint32_t uid, uint64_t modseq, const std::vector<std::string>& flags) {
      if (uid < next && modseq > clean.highestmodseq) out.flags[uid] = flag_string(flags);
    };
    take_pending(mailbox, kMaxUid, &vanished, keep);
    for (const auto& [first, last] : vanished.ranges()) {
      if (first >= next) break;
      out.vanished.insert(first, std::min(last, next - 1));
    }
    finish_changes(out, mailbox, clean);
    return out;
  }

  std::optional<uint64_t> unchanged_since(const SideState& clean) const override {
    return clean.highestmodseq > 0 ? std::optional(clean.highestmodseq) : std::nullopt;
  }

 private:
  // A mailbox synchronized before: its clean state can be resumed from.
  static bool resynchronizes(const SideState& clean) { return clean.highestmodseq > 0 && clean.uidnext > 1; }

  UidSet match_seqs_, match_uids_;
};

}  // namespace

std::unique_ptr<ChangeTracker> make_qresync_tracker() { return std::make_unique<QresyncTracker>(); }

}  // namespace interimap::detail::sync
