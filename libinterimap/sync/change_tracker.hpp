// How one side of a mailbox tells what changed among the messages the
// engine already knows (UIDs below the clean UIDNEXT) since the last clean
// state.  One implementation today, QRESYNC (RFC 7162): the changes come
// with the SELECT.  Servers with CONDSTORE only, or with neither, get
// their own implementation of the same interface.
#pragma once

#include <interimap/connection.hpp>
#include <interimap/mailbox.hpp>
#include <interimap/statedb.hpp>
#include <interimap/syncsession.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace interimap::detail::sync {

// What changed among the known messages of one side.
struct KnownChanges {
  UidSet vanished;                         // expunged, all below the clean UIDNEXT
  std::map<uint32_t, std::string> flags;   // UID -> its flags (flag_string form), none vanished
  // The current flags of messages for which the tracker cannot tell
  // whether they changed (a plain side with no record yet, after runs in
  // another mode): sync_known() settles them against the other side.
  std::map<uint32_t, std::string> unsure;
  bool empty() const { return vanished.empty() && flags.empty() && unsure.empty(); }
};

class ChangeTracker {
 public:
  virtual ~ChangeTracker() = default;
  // On the engine's thread, before select(): reads from the database what
  // select() will need (the database is not used from the sides' threads).
  virtual void prepare(const StateDB& db, MailboxId idx, Side side, const SideState& clean) = 0;
  // SELECTs the mailbox (read-write), asking for what changed since
  // `clean` where the server can say it at once.
  virtual void select(Mailbox& mailbox, const SideState& clean) = 0;
  // The known messages that vanished or whose flags changed since `clean`
  // (what the server announced, with the flags it did not give fetched),
  // then raises clean.highestmodseq to what the server has shown.  Called
  // again after each round of updates: returns what came since.
  virtual KnownChanges changes(Mailbox& mailbox, SideState& clean) = 0;
  // The UNCHANGEDSINCE of STOREs over known messages (RFC 7162 3.1.3), so
  // that a change made meanwhile is not overwritten; nullopt: none.
  virtual std::optional<uint64_t> unchanged_since(const SideState& clean) const = 0;
  // The UIDs of copies this run appended to the side (from the thread
  // that appended them, never while changes() runs): a tracker that does
  // not learn their MODSEQ from the server must not take them for changes.
  virtual void appended(const std::vector<uint32_t>& /*uids*/) {}
  // What the engine did on the side (update_side()): flags replaced, UIDs
  // expunged.
  virtual void stored(const UidSet& /*uids*/, const std::string& /*flags*/) {}
  virtual void expunged(const UidSet& /*uids*/) {}
  // The flags a message of the side had when the run read it (a new
  // message it copies) or made it (a copy it appended).
  virtual void known_flags(uint32_t /*uid*/, const std::string& /*flags*/) {}
  // In the transaction that records the side's new clean state: what the
  // tracker keeps in the database (the plain tracker's flags).
  virtual void save(StateDB& /*db*/, Mailbox& /*mailbox*/, MailboxId /*idx*/, Side /*side*/) {}
};

// The mapped UIDs of one side of a mailbox below `below` (all by default),
// read in ascending order into ranges.
UidSet mapped_uids(const StateDB& db, MailboxId idx, Side side, uint64_t below = UINT64_MAX);

// What the modseq trackers (QRESYNC, CONDSTORE) share.  keep(uid, modseq,
// flags) is called for each flag change the connection recorded (and the
// VANISHED UIDs go to *vanished when given); a change announced without
// its flags (RFC 7162 3.1.3 example 8) has them fetched, for UIDs below
// fetch_below, until nothing is pending.
using KeepChange = std::function<void(uint32_t uid, uint64_t modseq, const std::vector<std::string>& flags)>;
void take_pending(Mailbox& mailbox, uint32_t fetch_below, UidSet* vanished, const KeepChange& keep);
// Then: no flag change for a vanished UID, and the clean HIGHESTMODSEQ
// raised to what the server has shown.
void finish_changes(KnownChanges& out, Mailbox& mailbox, SideState& clean);

// The tracker of a side's resolved mode (Qresync or Condstore; see
// ChangeTracking and SyncSession::open()).
std::unique_ptr<ChangeTracker> make_change_tracker(ChangeTracking mode);
std::unique_ptr<ChangeTracker> make_qresync_tracker();
std::unique_ptr<ChangeTracker> make_condstore_tracker();
std::unique_ptr<ChangeTracker> make_plain_tracker();

}  // namespace interimap::detail::sync
