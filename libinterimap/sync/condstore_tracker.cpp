// ChangeTracker for servers with CONDSTORE but no QRESYNC (RFC 7162 3.1;
// Gmail).  Flag changes since the clean state come from one
// UID FETCH 1:n (FLAGS) (CHANGEDSINCE modseq) over the known messages.
// Expunges have no report of their own: the count of known messages the
// server still has is compared with the mapped ones (the SELECT's EXISTS,
// less the new messages: one UID SEARCH UID n:* when UIDNEXT moved), and
// only when it does not add up is the UID list of the known messages
// fetched (UID SEARCH, in ESEARCH's compact form where advertised).
//
// Within a session, other clients' expunges come as EXPUNGE (sequence
// numbers, which this engine does not map): they are found by the next
// run's count, as the mailbox's MESSAGES in LIST-STATUS then differs.
#include "sync/change_tracker.hpp"

#include "sync/flags.hpp"
#include "util/ascii.hpp"

#include <fmt/format.h>

#include <string>

namespace interimap::detail::sync {

namespace {

class CondstoreTracker final : public ChangeTracker {
 public:
  void prepare(const StateDB& db, MailboxId idx, Side side, const SideState& clean) override {
    mapped_.clear();
    first_ = true;
    side_ = side;
    if (!resynchronizes(clean)) return;
    // The known messages only: an interrupted run's pairs lie above.
    mapped_ = mapped_uids(db, idx, side, clean.uidnext);
  }

  void select(Mailbox& mailbox, const SideState& /*clean*/) override {
    mailbox.select();
    own_.clear();
    // RFC 7162 3.1.2.1/3.1.2.2: with CONDSTORE enabled, a mailbox without
    // mod-sequences answers NOMODSEQ (no HIGHESTMODSEQ).
    if (!mailbox.highestmodseq() || *mailbox.highestmodseq() == 0)
      throw ProtocolError(std::string(to_string(side_)),
                          fmt::format("{}: change-tracking condstore: the mailbox has no mod-sequences (NOMODSEQ, "
                                      "RFC 7162 3.1.2.2)",
                                      mailbox.name()));
    selected_modseq_ = *mailbox.highestmodseq();
  }

  KnownChanges changes(Mailbox& mailbox, SideState& clean) override {
    const uint32_t next = clean.uidnext == 0 ? 1 : clean.uidnext;
    KnownChanges out;
    auto keep = [&](uint32_t uid, uint64_t modseq, const std::vector<std::string>& flags) {
      if (uid < next && modseq > clean.highestmodseq) out.flags[uid] = flag_string(flags);
    };
    // The flag changes since `since` of the known messages, but for `skip`.
    auto changed_since = [&](uint64_t since, const UidSet& skip) {
      Changes ch = mailbox.fetch_changes(since, UidSet::range(1, next - 1));
      for (auto& f : ch.flags)
        if (!skip.contains(f.uid) && f.flags && f.modseq > 0) keep(f.uid, f.modseq, *f.flags);
    };
    const bool first = first_;
    first_ = false;
    if (!own_.empty()) {
      // Our own copies: without QRESYNC the server does not say the
      // HIGHESTMODSEQ they brought (Dovecot sends [HIGHESTMODSEQ] only
      // then), so they would look changed on the next run.  One
      // CHANGEDSINCE over the known messages tells their MODSEQs, which
      // become part of the clean state, and shows any other change made
      // meanwhile, which is taken like any other.
      const uint64_t since = clean.highestmodseq > 0 ? clean.highestmodseq : selected_modseq_;
      const UidSet own = std::move(own_);
      own_.clear();
      changed_since(since, own);
    } else if (first && resynchronizes(clean)) {
      out.vanished = expunged(mailbox, next);
      // Changed flags of the known messages, when anything changed at all.
      if (mailbox.highestmodseq().value_or(0) > clean.highestmodseq) changed_since(clean.highestmodseq, {});
    }
    // What came since (unsolicited FETCH, our STOREs refused by
    // UNCHANGEDSINCE); VANISHED never comes without QRESYNC.
    take_pending(mailbox, next, nullptr, keep);
    finish_changes(out, mailbox, clean);
    return out;
  }

  std::optional<uint64_t> unchanged_since(const SideState& clean) const override {
    return clean.highestmodseq > 0 ? std::optional(clean.highestmodseq) : std::nullopt;
  }

  void appended(const std::vector<uint32_t>& uids) override {
    for (uint32_t uid : uids) own_.insert(uid);
  }

 private:
  static bool resynchronizes(const SideState& clean) { return clean.highestmodseq > 0 && clean.uidnext > 1; }

  // The mapped UIDs the server no longer has, found without listing every
  // UID when the counts agree.
  UidSet expunged(Mailbox& mailbox, uint32_t next) {
    if (mapped_.empty()) return {};
    const UidSet known = UidSet::range(1, next - 1);
    uint64_t present = mailbox.exists();
    if (mailbox.uidnext().value_or(0) != next) {
      // New messages since: RFC 3501 6.4.4, "n:*" includes the last
      // message even below n, hence the intersection.
      const UidSet fresh = mailbox.search(fmt::format("UID {}:*", next)).intersection(UidSet::range(next, kMaxUid));
      present = mailbox.exists() >= fresh.size() ? mailbox.exists() - fresh.size() : 0;
    }
    if (present == mapped_.size()) return {};
    // Only the known range, clipped to it whatever the server answers.
    const UidSet there = mailbox.search(fmt::format("UID 1:{}", next - 1)).intersection(known);
    UidSet gone = mapped_;
    gone.erase(there);
    return gone;
  }

  Side side_ = Side::Local;
  UidSet mapped_;
  UidSet own_;                     // appended() since select()
  uint64_t selected_modseq_ = 0;   // the SELECT's HIGHESTMODSEQ
  bool first_ = true;
};

}  // namespace

std::unique_ptr<ChangeTracker> make_condstore_tracker() { return std::make_unique<CondstoreTracker>(); }

}  // namespace interimap::detail::sync
