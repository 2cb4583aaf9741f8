// Choosing a side's tracker, and switching modes between runs: a side
// tracked with mod-sequences (QRESYNC, CONDSTORE) whose clean state has
// none (the last run tracked it plain, see change-tracking) is compared
// once as the plain tracker does, from the flags that run recorded; from
// then on its HIGHESTMODSEQ serves, and the recorded flags are dropped
// (a later switch back to plain starts from a fresh record).
#include "sync/change_tracker.hpp"

#include <algorithm>

namespace interimap::detail::sync {

namespace {

class ModseqTracker final : public ChangeTracker {
 public:
  explicit ModseqTracker(std::unique_ptr<ChangeTracker> inner) : inner_(std::move(inner)) {}

  void prepare(const StateDB& db, MailboxId idx, Side side, const SideState& clean) override {
    inner_->prepare(db, idx, side, clean);
    plain_.reset();
    first_ = true;
    if (clean.highestmodseq == 0 && clean.uidnext > 1) {
      plain_ = make_plain_tracker();
      plain_->prepare(db, idx, side, clean);
    }
  }
  void select(Mailbox& mailbox, const SideState& clean) override { inner_->select(mailbox, clean); }
  KnownChanges changes(Mailbox& mailbox, SideState& clean) override {
    const bool first = first_;
    first_ = false;
    if (!plain_ || !first) return inner_->changes(mailbox, clean);
    KnownChanges out = plain_->changes(mailbox, clean);
    KnownChanges more = inner_->changes(mailbox, clean);
    out.vanished.insert(more.vanished);
    for (auto& [uid, flags] : more.flags)
      if (!out.vanished.contains(uid)) out.flags.insert_or_assign(uid, std::move(flags));
    return out;
  }
  std::optional<uint64_t> unchanged_since(const SideState& clean) const override {
    return inner_->unchanged_since(clean);
  }
  void appended(const std::vector<uint32_t>& uids) override { inner_->appended(uids); }
  void stored(const UidSet& uids, const std::string& flags) override { inner_->stored(uids, flags); }
  void expunged(const UidSet& uids) override { inner_->expunged(uids); }
  void known_flags(uint32_t uid, const std::string& flags) override { inner_->known_flags(uid, flags); }
  void save(StateDB& db, Mailbox& mailbox, MailboxId idx, Side side) override {
    inner_->save(db, mailbox, idx, side);
    if (plain_) db.clear_synced_flags(idx, side);
  }

 private:
  std::unique_ptr<ChangeTracker> inner_;
  std::unique_ptr<ChangeTracker> plain_;  // once, after plain runs
  bool first_ = true;
};

}  // namespace

UidSet mapped_uids(const StateDB& db, MailboxId idx, Side side, uint64_t below) {
  UidSet out;
  db.for_each_mapping(idx, side, UidOrder::Ascending, [&](const Mapping& m) {
    if (m.uid(side) >= below) return false;
    out.insert(m.uid(side));
    return true;
  });
  return out;
}

void take_pending(Mailbox& mailbox, uint32_t fetch_below, UidSet* vanished, const KeepChange& keep) {
  for (;;) {
    Changes ch = mailbox.take_changes();
    if (vanished != nullptr) vanished->insert(ch.vanished);
    UidSet missing;
    for (auto& f : ch.flags) {
      if (f.flags && f.modseq > 0)
        keep(f.uid, f.modseq, *f.flags);
      else if (f.uid < fetch_below)
        missing.insert(f.uid);
    }
    if (missing.empty()) break;
    mailbox.fetch_flags(missing, [&](MessageFlags& f) {
      if (f.flags) keep(f.uid, f.modseq, *f.flags);
    });
  }
}

void finish_changes(KnownChanges& out, Mailbox& mailbox, SideState& clean) {
  for (auto it = out.flags.begin(); it != out.flags.end();)
    it = out.vanished.contains(it->first) ? out.flags.erase(it) : std::next(it);
  if (const auto h = mailbox.highestmodseq()) clean.highestmodseq = std::max(clean.highestmodseq, *h);
}

std::unique_ptr<ChangeTracker> make_change_tracker(ChangeTracking mode) {
  switch (mode) {
    case ChangeTracking::Plain: return make_plain_tracker();
    case ChangeTracking::Condstore: return std::make_unique<ModseqTracker>(make_condstore_tracker());
    default: return std::make_unique<ModseqTracker>(make_qresync_tracker());
  }
}

}  // namespace interimap::detail::sync
