#include "sync/append_journal.hpp"

#include <interimap/error.hpp>

#include <fmt/format.h>
#include <openssl/evp.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace interimap::detail::sync {

Digest digest_of(std::string_view body) {
  Digest d{};
  unsigned int len = 0;
  EVP_Digest(body.data(), body.size(), d.data(), &len, EVP_sha256(), nullptr);
  return d;
}

AppendJournal::AppendJournal(std::string path, bool read_only) : path_(std::move(path)), read_only_(read_only) {}

void AppendJournal::record(MailboxId idx, Side target, uint32_t target_next, const std::vector<Copy>& copies) {
  if (path_.empty() || copies.empty() || read_only_) return;
  std::string text;
  text.reserve(copies.size() * 112);
  for (const Copy& c : copies) {
    fmt::format_to(std::back_inserter(text), "{} {} {} {} {:02x}{}{}\n", idx, static_cast<int>(target), target_next,
                   c.source_uid, fmt::join(digest_of(c.body), ""), c.flags.empty() ? "" : " ", c.flags);
  }
  const std::lock_guard<std::mutex> lock(mutex_);
  active_.insert(idx);
  const int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    throw Error("database", fmt::format("cannot open {}: {}", path_, std::strerror(errno)));
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      throw Error("database", fmt::format("cannot write {}: {}", path_, std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

namespace {

template <class T>
bool number(std::string_view& line, T& out) {
  const auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), out);
  if (ec != std::errc() || end == line.data()) return false;
  line.remove_prefix(static_cast<size_t>(end - line.data()));
  if (line.empty() || line.front() != ' ') return false;
  line.remove_prefix(1);
  return true;
}

bool digest(std::string_view hex, Digest& out) {
  if (hex.size() < 2 * out.size()) return false;
  for (size_t i = 0; i < out.size(); ++i) {
    const auto [end, ec] = std::from_chars(hex.data() + 2 * i, hex.data() + 2 * i + 2, out[i], 16);
    if (ec != std::errc() || end != hex.data() + 2 * i + 2) return false;
  }
  return true;
}

// Calls fn(target_next, entry) for each whole line of mailbox idx, side target.
template <class Fn>
void read_lines(const std::string& path, MailboxId idx, Side target, Fn fn) {
  std::ifstream in(path, std::ios::binary);
  std::string raw;
  while (std::getline(in, raw)) {
    if (in.eof()) break;  // no newline: a torn last line
    std::string_view line = raw;
    MailboxId i = 0;
    int side = 0;
    uint32_t next = 0;
    AppendJournal::Entry e;
    if (!number(line, i) || !number(line, side) || !number(line, next) || !number(line, e.source_uid) ||
        !digest(line, e.digest))
      continue;
    line.remove_prefix(2 * e.digest.size());
    if (!line.empty()) {
      if (line.front() != ' ') continue;
      e.flags = line.substr(1);
    }
    if (i == idx && side == static_cast<int>(target)) fn(next, std::move(e));
  }
}

}  // namespace

std::vector<AppendJournal::Entry> AppendJournal::entries(MailboxId idx, Side target, uint32_t target_next) const {
  std::vector<Entry> out;
  if (path_.empty() || cleared_) return out;
  const std::lock_guard<std::mutex> lock(mutex_);
  read_lines(path_, idx, target, [&](uint32_t next, Entry e) {
    if (next == target_next) out.push_back(std::move(e));
  });
  return out;
}

std::map<uint32_t, AppendJournal::Entry> AppendJournal::latest(MailboxId idx, Side target) const {
  std::map<uint32_t, Entry> out;
  if (path_.empty() || cleared_) return out;
  const std::lock_guard<std::mutex> lock(mutex_);
  read_lines(path_, idx, target, [&](uint32_t, Entry e) {
    const uint32_t uid = e.source_uid;
    out.insert_or_assign(uid, std::move(e));
  });
  return out;
}

bool AppendJournal::exists() const {
  if (path_.empty()) return false;
  struct stat st {};
  return ::stat(path_.c_str(), &st) == 0;
}

void AppendJournal::hold(MailboxId idx) {
  const std::lock_guard<std::mutex> lock(mutex_);
  active_.insert(idx);
}

void AppendJournal::done(MailboxId idx) {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    active_.erase(idx);
    if (!active_.empty()) return;
  }
  clear();
}

void AppendJournal::clear() {
  if (path_.empty()) return;
  const std::lock_guard<std::mutex> lock(mutex_);
  active_.clear();
  if (read_only_) {
    cleared_ = true;
    return;
  }
  if (::unlink(path_.c_str()) != 0 && errno != ENOENT)
    throw Error("database", fmt::format("cannot remove {}: {}", path_, std::strerror(errno)));
}

}  // namespace interimap::detail::sync
