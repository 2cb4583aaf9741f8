#include "pull/statefile.hpp"

#include <interimap/config.hpp>

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace interimap::detail::pull {

namespace {

// pullimap(1): "a series of 32-bits big-endian integers".
std::array<unsigned char, 4> encode_be32(uint32_t v) {
  return {static_cast<unsigned char>(v >> 24), static_cast<unsigned char>(v >> 16),
          static_cast<unsigned char>(v >> 8), static_cast<unsigned char>(v)};
}

uint32_t decode_be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Takes an exclusive lock on the whole file without waiting.  Returns 0 or
// an errno.
//
// The reference locks with fcntl(F_SETLK, F_WRLCK, whole file), a
// process-associated POSIX lock.  We take an open file description lock
// (F_OFD_SETLK, Linux 3.15) of the same type: the two kinds conflict with
// each other (fcntl(2), "Open file description locks"), so ours and the
// reference's pullimap exclude each other; unlike the older kind, an OFD
// lock also conflicts with a second open in the same process and is not
// dropped when the process closes some other descriptor of the file.
int lock_whole_file(int fd) {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 0;
  fl.l_len = 0;  // to the end, however the file grows
  fl.l_pid = 0;  // must be 0 for F_OFD_SETLK
#ifdef F_OFD_SETLK
  if (::fcntl(fd, F_OFD_SETLK, &fl) == 0) return 0;
  if (errno != EINVAL) return errno;
  // A kernel without OFD locks: fall back to the reference's own kind.
#endif
  if (::fcntl(fd, F_SETLK, &fl) == 0) return 0;
  return errno;
}

}  // namespace

std::string statefile_path(const std::optional<std::string>& statefile, std::string_view section,
                           const std::string& data_home) {
  const std::string name = statefile ? *statefile : std::string(section);
  try {
    return xdg_basedir("pullimap", data_home, name);
  } catch (const Error& e) {
    throw StatefileError(e.what());
  }
}

Statefile::Statefile(std::string path, bool create) : path_(std::move(path)) {
  // pullimap(1): "opens the statefile ... with O_DSYNC to ensure that
  // written data is flushed to the underlying hardware by the time
  // write(2) returns"; mode 0600 as the reference's sysopen.
  int flags = O_RDWR | O_DSYNC | O_CLOEXEC;
  if (create) flags |= O_CREAT;
  fd_.reset(::open(path_.c_str(), flags, 0600));
  if (!fd_) throw StatefileError(fmt::format("Can't open {}: {}", path_, std::strerror(errno)));

  // "an exclusive lock is placed on the file descriptor immediately after
  // opening", before anything is read: the holder may be writing.
  if (int err = lock_whole_file(fd_.get()); err != 0) {
    if (err == EAGAIN || err == EACCES)
      throw StatefileLockedError(fmt::format("Can't lock {}: {} (is another pullimap running on it?)", path_,
                                             std::strerror(err)));
    throw StatefileError(fmt::format("Can't lock {}: {}", path_, std::strerror(err)));
  }

  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) throw StatefileError(fmt::format("{}: fstat: {}", path_, std::strerror(errno)));
  if (!S_ISREG(st.st_mode)) throw StatefileError(fmt::format("{}: not a regular file", path_));
  const auto size = static_cast<uint64_t>(st.st_size);
  // The reference reads 4 bytes at a time and dies on a short read
  // ("Corrupted state file!"); its comment reserves other sizes for a
  // future format with a version header.
  if (size % 4 != 0)
    throw StatefileError(fmt::format(
        "{}: corrupted statefile: its size ({} bytes) is not a multiple of 4 (32-bit big-endian integers)", path_,
        size));

  std::vector<unsigned char> bytes(size);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::pread(fd_.get(), bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw StatefileError(fmt::format("{}: read: {}", path_, std::strerror(errno)));
    if (n == 0)
      throw StatefileError(fmt::format("{}: read: the file shrank to {} bytes while read", path_, done));
    done += static_cast<size_t>(n);
  }
  size_ = size;

  // UIDVALIDITY and UIDs are nz-numbers (RFC 3501 9), UIDNEXT too (2.3.1.1):
  // a 0 is not something the reference writes.
  auto corrupt_zero = [&](std::string_view what, uint64_t offset) {
    return StatefileError(fmt::format("{}: corrupted statefile: {} is 0 (bytes {}-{})", path_, what, offset,
                                      offset + 3));
  };
  for (uint64_t off = 0; off < size; off += 4) {
    uint32_t v = decode_be32(bytes.data() + off);
    if (off == 0) {
      if (v == 0) throw corrupt_zero("UIDVALIDITY", off);
      uidvalidity_ = v;
    } else if (off == 4) {
      if (v == 0) throw corrupt_zero("UIDNEXT", off);
      uidnext_ = v;
    } else {
      if (v == 0) throw corrupt_zero("a delivered UID", off);
      delivered_.push_back(v);
    }
  }
}

void Statefile::write_at(uint64_t offset, uint32_t value) {
  const auto bytes = encode_be32(value);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::pwrite(fd_.get(), bytes.data() + done, bytes.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw StatefileError(fmt::format("{}: write: {}", path_, std::strerror(errno)));
    done += static_cast<size_t>(n);
  }
  // No fsync: O_DSYNC made the write durable before pwrite returned.
}

void Statefile::set_uidvalidity(uint32_t uidvalidity, std::string_view mailbox) {
  if (uidvalidity == 0) throw std::invalid_argument("Statefile::set_uidvalidity: UIDVALIDITY 0");
  if (uidvalidity_) {
    // RFC 3501 2.3.1.1: another UIDVALIDITY means the UIDs we recorded
    // name other messages (or none): continuing would skip or redeliver.
    if (*uidvalidity_ != uidvalidity)
      throw StatefileError(fmt::format(
          "{}: UIDVALIDITY of mailbox {} changed (statefile: {}, server: {}): the UIDs recorded no longer apply; "
          "remove the statefile to deliver the mailbox's messages again from the start",
          path_, mailbox, *uidvalidity_, uidvalidity));
  } else {
    write_at(0, uidvalidity);
    uidvalidity_ = uidvalidity;
    size_ = 4;
  }
  if (!uidnext_) {
    // As the reference: UIDNEXT 1 (nothing delivered yet), a write of its own.
    write_at(4, 1);
    uidnext_ = 1;
    size_ = 8;
  }
}

void Statefile::append_delivered(uint32_t uid) {
  if (!uidnext_) throw std::logic_error("Statefile::append_delivered before set_uidvalidity");
  if (uid == 0) throw std::invalid_argument("Statefile::append_delivered: UID 0");
  // pullimap(1) CONTROL FLOW 1.iii: recorded once the server accepted the
  // message, before the next one, so a crash never delivers it twice.
  write_at(size_, uid);
  size_ += 4;
  delivered_.push_back(uid);
}

void Statefile::finish(uint32_t uidnext) {
  if (!uidnext_) throw std::logic_error("Statefile::finish before set_uidvalidity");
  if (uidnext == 0) throw std::invalid_argument("Statefile::finish: UIDNEXT 0");
  // pullimap(1) CONTROL FLOW 4 then 5; this order keeps every state
  // readable: the new UIDNEXT with stale UIDs below it is harmless.
  write_at(4, uidnext);
  uidnext_ = uidnext;
  // Not synced: a truncation lost in a crash leaves stale UIDs below
  // UIDNEXT, as above.
  while (::ftruncate(fd_.get(), 8) != 0) {
    if (errno != EINTR) throw StatefileError(fmt::format("{}: truncate: {}", path_, std::strerror(errno)));
  }
  size_ = 8;
  delivered_.clear();
}

}  // namespace interimap::detail::pull
