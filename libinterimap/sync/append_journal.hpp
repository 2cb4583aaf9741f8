// The copies in flight, for recover() and resume(): before a batch of
// APPENDs goes out, one line per message (source UID, body digest, the
// flags it is appended with) is written to a file next to the database,
// `DATABASE-appends`.  Should the run die between the server's execution
// of the APPEND and the commit of its mappings, and the source message
// then be expunged, the next run finds its unrecorded copy by digest and
// expunges it, as an uninterrupted run would have; and where the two
// copies of an interrupted pair differ, the flags it was appended with
// tell which side changed since (doc/design.md "Crash consistency").
//
// The file is written without fsync (a line costs one write(), not the
// four fsyncs of a database commit): it survives the process's death,
// which is what it is for, but not always the system's.  It is advisory:
// a missing, torn or stale line only means a copy is kept (and copied
// back) as before, never that a message is removed.  Lines carry the
// pending-append row they belong to (mailbox, target side, the target's
// UIDNEXT before the first APPEND); others are ignored.
#pragma once

#include <interimap/statedb.hpp>

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace interimap::detail::sync {

using Digest = std::array<unsigned char, 32>;  // SHA-256 of a message body
Digest digest_of(std::string_view body);

class AppendJournal {
 public:
  // path "": disabled (records nothing, finds nothing).  read_only (a dry
  // run): the file is read, never written, created or removed; record()
  // does nothing, and after clear() nothing is found, as if removed.
  explicit AppendJournal(std::string path = {}, bool read_only = false);

  struct Copy {
    uint32_t source_uid = 0;
    std::string_view body;
    std::string flags;  // flag_string() form: no blank inside a flag
  };
  struct Entry {
    uint32_t source_uid = 0;
    Digest digest{};
    std::string flags;
  };

  // Before the APPEND of `copies` to `target` of mailbox `idx`, whose
  // pending-append row says `target_next`.  Thread-safe; one write().
  // Throws Error when the file cannot be written (the APPEND must not go
  // out unrecorded).
  void record(MailboxId idx, Side target, uint32_t target_next, const std::vector<Copy>& copies);
  // The lines of that pending-append row, in the order written.
  std::vector<Entry> entries(MailboxId idx, Side target, uint32_t target_next) const;
  // The last line for each source UID copied to `target` of mailbox `idx`,
  // whatever its row.
  std::map<uint32_t, Entry> latest(MailboxId idx, Side target) const;
  // Once no pending-append row is left (committed): removes the file.
  void clear();
  // Whether the file is there (an interrupted run's lines).
  bool exists() const;
  // Mailbox `idx` needs the file's lines until done(idx) (an interrupted
  // run's mailbox, before it is recovered or resumed).
  void hold(MailboxId idx);
  // Once mailbox `idx`'s copies are recorded (committed): removes the file
  // unless another mailbox recorded copies since and is not done yet (the
  // workers of a pass: sync/workers.hpp).
  void done(MailboxId idx);

 private:
  std::string path_;
  bool read_only_ = false;
  bool cleared_ = false;  // read_only: clear() was called
  mutable std::mutex mutex_;
  std::set<MailboxId> active_;  // recorded and not done yet
};

}  // namespace interimap::detail::sync
