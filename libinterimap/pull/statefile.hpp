// pullimap's statefile (pullimap(1), CONTROL FLOW), byte for byte the
// reference's (pullimap 0.5.7): a series of 32-bit big-endian integers,
//
//   bytes 0-3   the mailbox's UIDVALIDITY
//   bytes 4-7   its UIDNEXT as of the last finished fetch: every message
//               with a smaller UID has been delivered
//   bytes 8-    the UIDs delivered during a fetch that has not finished
//               (a crash or lost connection left them there); they are
//               not delivered again and are marked \Seen by the next run
//
// The run goes: open() (and read), set_uidvalidity() after SELECT,
// append_delivered() after each message the SMTP/LMTP server accepted,
// finish() once the UID FETCH completed and the UIDs were marked \Seen.
//
// Each write is durable when it returns (O_DSYNC), and each one leaves a
// file that the reference and we read back correctly: a crash at any
// point loses no message and delivers none twice.
//
// One process per file: the file is locked for the object's lifetime with
// a write lock that also excludes the reference's (fcntl F_SETLK, F_WRLCK
// on the whole file), so whichever of the two comes second fails at once.
#pragma once

#include "net/socket_stream.hpp"  // UniqueFd

#include <interimap/error.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace interimap::detail::pull {

// A statefile that cannot be opened, read or written, holds something else
// than the reference's format, or belongs to another UIDVALIDITY.  what()
// names the file.
class StatefileError : public Error {
 public:
  using Error::Error;
};

// Another process (ours or the reference's pullimap) holds the statefile.
class StatefileLockedError : public StatefileError {
 public:
  using StatefileError::StatefileError;
};

// Where the statefile of `section` lives, as the reference finds it: the
// statefile option (default: the section name); an absolute path as is,
// else relative to DATA_HOME/pullimap, DATA_HOME being $XDG_DATA_HOME or
// ~/.local/share (config.hpp's xdg_data_home()).  DATA_HOME must exist; its
// pullimap subdirectory is created with mode 0700 when missing.  Throws
// StatefileError "No such directory: DIR" or "Couldn't create DIR: REASON".
std::string statefile_path(const std::optional<std::string>& statefile, std::string_view section,
                           const std::string& data_home);

class Statefile {
 public:
  // Opens `path` read-write with O_DSYNC and close-on-exec (created with
  // mode 0600 when `create`; the reference does not create it in --idle
  // mode), locks it, and reads it.  Throws StatefileError "Can't open PATH:
  // REASON"; StatefileLockedError "Can't lock PATH: ... (is another
  // pullimap running on it?)" without waiting; StatefileError
  // "PATH: corrupted statefile: ..." when the size is not a multiple of 4
  // or UIDVALIDITY, UIDNEXT or a UID is 0.
  //
  // A 4-byte file (UIDVALIDITY alone: a first run interrupted between its
  // two writes) is read as the reference reads it: set_uidvalidity()
  // completes it.
  Statefile(std::string path, bool create);
  // Destruction closes the file, which releases the lock.

  const std::string& path() const { return path_; }
  // Bytes 0-3, nullopt for an empty file.
  std::optional<uint32_t> uidvalidity() const { return uidvalidity_; }
  // Bytes 4-7, nullopt for a file shorter than 8 bytes.
  std::optional<uint32_t> uidnext() const { return uidnext_; }
  // The UIDs after byte 8, in file order: those found at open(), then those
  // appended since.  finish() empties it.
  const std::vector<uint32_t>& delivered() const { return delivered_; }

  // Records the mailbox's UIDVALIDITY (after SELECT, before any delivery).
  // A new file gets UIDVALIDITY and UIDNEXT 1 (as the reference: two
  // writes, the first at byte 0); a 4-byte file gets UIDNEXT 1 after the
  // check.  Throws StatefileError "PATH: UIDVALIDITY of MAILBOX changed
  // (statefile: A, server: B)..." when the file holds another value, the
  // file untouched.  Precondition: uidvalidity > 0.
  void set_uidvalidity(uint32_t uidvalidity, std::string_view mailbox);

  // Appends a UID the SMTP/LMTP server accepted (4 bytes at the end of the
  // file, on disk when this returns).  Precondition: set_uidvalidity()
  // done, uid > 0.
  void append_delivered(uint32_t uid);

  // Ends a fetch (pullimap(1) CONTROL FLOW, steps 4 and 5): writes `uidnext`
  // at bytes 4-7, then truncates the file to 8 bytes.  A crash between the
  // two leaves UIDs below the new UIDNEXT, which the next run merely marks
  // \Seen again.  Precondition: set_uidvalidity() done, uidnext > 0.
  void finish(uint32_t uidnext);

 private:
  void write_at(uint64_t offset, uint32_t value);

  std::string path_;
  UniqueFd fd_;  // holds the lock: an open file description lock (see .cpp)
  uint64_t size_ = 0;
  std::optional<uint32_t> uidvalidity_;
  std::optional<uint32_t> uidnext_;
  std::vector<uint32_t> delivered_;
};

}  // namespace interimap::detail::pull
