// ChangeTracker for servers without mod-sequences (no CONDSTORE: Microsoft
// 365, Yahoo).  Nothing tells what changed, so each run reads the flags of
// every known message (UID FETCH 1:n (FLAGS), one command) and compares
// them with the flags that side had when the last run ended, kept in the
// database (StateDB::synced_flags); a mapped UID the answer lacks was
// expunged.  No UNCHANGEDSINCE either: a STORE may overwrite a change
// another client makes during the run (mbsync has the same limit).
#include "sync/change_tracker.hpp"

#include "sync/flags.hpp"

#include <fmt/format.h>

#include <string>

namespace interimap::detail::sync {

namespace {

class PlainTracker final : public ChangeTracker {
 public:
  void prepare(const StateDB& db, MailboxId idx, Side side, const SideState& clean) override {
    synced_.clear();
    mapped_.clear();
    current_.clear();
    first_ = true;
    // Known messages to read only if the last run left some (not for a
    // new mailbox, whose first copy hands its flags over: known_flags()).
    scan_ = clean.uidnext > 1;
    synced_ = db.synced_flags(idx, side);
    mapped_ = mapped_uids(db, idx, side, clean.uidnext);
  }

  void select(Mailbox& mailbox, const SideState& /*clean*/) override { mailbox.select(); }

  KnownChanges changes(Mailbox& mailbox, SideState& clean) override {
    KnownChanges out;
    const bool first = first_;
    first_ = false;
    if (first && scan_ && clean.uidnext > 1) {
      const uint32_t next = clean.uidnext;
      UidSet seen;
      mailbox.fetch_flags(UidSet::range(1, next - 1), [&](MessageFlags& f) {
        if (!f.flags || f.uid >= next) return;
        seen.insert(f.uid);
        current_.insert_or_assign(f.uid, flag_string(*f.flags));
      });
      out.vanished = mapped_;
      out.vanished.erase(seen);
      for (const auto& [uid, flags] : current_) {
        if (!mapped_.contains(uid)) continue;
        const auto it = synced_.find(uid);
        if (it == synced_.end())
          out.unsure.emplace(uid, flags);  // no record: the last run was in another mode
        else if (it->second != flags)
          out.flags[uid] = flags;
      }
    }
    // Unsolicited FETCHes are of no use: the next run compares anyway.
    (void)mailbox.take_changes();
    return out;
  }

  std::optional<uint64_t> unchanged_since(const SideState& /*clean*/) const override { return std::nullopt; }

  void stored(const UidSet& uids, const std::string& flags) override {
    for (const auto& [first, last] : uids.ranges())
      for (uint64_t uid = first; uid <= last; ++uid) current_.insert_or_assign(static_cast<uint32_t>(uid), flags);
  }
  void known_flags(uint32_t uid, const std::string& flags) override { current_.insert_or_assign(uid, flags); }
  void expunged(const UidSet& uids) override {
    for (auto it = current_.begin(); it != current_.end();)
      it = uids.contains(it->first) ? current_.erase(it) : std::next(it);
  }

  // The flags of every mapped message as the run leaves them: what it read,
  // copied or stored, and for the rest one UID FETCH.  A change another
  // client made since is found by the next run's comparison.
  void save(StateDB& db, Mailbox& mailbox, MailboxId idx, Side side) override {
    const UidSet mapped = mapped_uids(db, idx, side);
    UidSet have;
    for (const auto& [uid, flags] : current_) have.insert(uid);  // ascending: appended at the end
    UidSet unknown = mapped;
    unknown.erase(have);
    if (!unknown.empty())
      mailbox.fetch_flags(unknown, [&](MessageFlags& f) {
        if (f.flags && unknown.contains(f.uid)) current_.insert_or_assign(f.uid, flag_string(*f.flags));
      });
    for (const auto& [uid, flags] : synced_)
      if (!mapped.contains(uid)) db.forget_synced_flags(idx, side, uid);
    for (const auto& [uid, flags] : current_) {
      if (!mapped.contains(uid)) continue;
      const auto it = synced_.find(uid);
      if (it == synced_.end() || it->second != flags) db.set_synced_flags(idx, side, uid, flags);
    }
    synced_.clear();
    for (const auto& [uid, flags] : current_)
      if (mapped.contains(uid)) synced_.emplace(uid, flags);
  }

 private:
  std::map<uint32_t, std::string> synced_;   // the database's record
  std::map<uint32_t, std::string> current_;  // as read or stored this run
  UidSet mapped_;                            // known mapped UIDs (below the clean UIDNEXT)
  bool first_ = true;
  bool scan_ = false;  // prepare()d with a clean state to compare with
};

}  // namespace

std::unique_ptr<ChangeTracker> make_plain_tracker() { return std::make_unique<PlainTracker>(); }

}  // namespace interimap::detail::sync
