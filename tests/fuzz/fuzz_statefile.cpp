// Fuzzes pullimap's statefile reader (libinterimap/pull/statefile.hpp): the
// input is the file's contents.  One temporary file per process (in
// /dev/shm when it exists: the statefile is opened with O_DSYNC), rewritten
// for each input and removed at exit.
//
// Input: the file's bytes.  When the file is read, the statefile is also
// driven through a run (set_uidvalidity, append_delivered, finish) and read
// back.
//
// Properties: StatefileError is the only error; a file is read exactly
// when its size is a multiple of 4 and none of its integers is 0, and then
// gives back its integers (UIDVALIDITY, UIDNEXT, the delivered UIDs); the
// writes leave the file a run of pullimap leaves.
#include "fuzz_util.hpp"

#include "pull/statefile.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using interimap::detail::pull::Statefile;
using interimap::detail::pull::StatefileError;

namespace {

std::string g_path;

void remove_file() { ::unlink(g_path.c_str()); }

const std::string& path() {
  if (g_path.empty()) {
    struct stat st {};
    std::string dir = ::stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && ::access("/dev/shm", W_OK) == 0
                          ? "/dev/shm"
                          : (std::getenv("TMPDIR") != nullptr ? std::getenv("TMPDIR") : "/tmp");
    std::string pattern = dir + "/interimap-fuzz-statefile-XXXXXX";
    const int fd = ::mkstemp(pattern.data());
    FUZZ_CHECK(fd >= 0);
    ::close(fd);
    g_path = pattern;
    std::atexit(remove_file);
  }
  return g_path;
}

void write_all(std::string_view bytes) {
  const int fd = ::open(path().c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  FUZZ_CHECK(fd >= 0);
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    FUZZ_CHECK(n > 0);
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  ::close(fd);
}

std::vector<uint32_t> integers(std::string_view bytes) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i + 4 <= bytes.size(); i += 4) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data() + i);
    out.push_back((uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]});
  }
  return out;
}

std::vector<uint32_t> read_back() {
  const int fd = ::open(path().c_str(), O_RDONLY | O_CLOEXEC);
  FUZZ_CHECK(fd >= 0);
  std::string bytes;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) bytes.append(buf, static_cast<size_t>(n));
  ::close(fd);
  FUZZ_CHECK(bytes.size() % 4 == 0);
  return integers(bytes);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  write_all(bytes);
  const std::vector<uint32_t> ints = integers(bytes);
  bool readable = size % 4 == 0;
  for (uint32_t v : ints) readable = readable && v != 0;

  std::optional<Statefile> sf;
  try {
    sf.emplace(path(), false);
  } catch (const StatefileError& e) {
    FUZZ_CHECK(!readable);
    FUZZ_CHECK(std::strstr(e.what(), path().c_str()) != nullptr);  // names the file
    return 0;
  }
  FUZZ_CHECK(readable);
  FUZZ_CHECK(sf->uidvalidity() == (ints.size() >= 1 ? std::optional<uint32_t>(ints[0]) : std::nullopt));
  FUZZ_CHECK(sf->uidnext() == (ints.size() >= 2 ? std::optional<uint32_t>(ints[1]) : std::nullopt));
  FUZZ_CHECK(sf->delivered() ==
             std::vector<uint32_t>(ints.begin() + static_cast<std::ptrdiff_t>(std::min<size_t>(ints.size(), 2)),
                                   ints.end()));

  // A run: the same UIDVALIDITY (another one is refused, the file untouched).
  const uint32_t uidvalidity = ints.empty() ? 7 : ints[0];
  if (!ints.empty()) {
    bool refused = false;
    try {
      sf->set_uidvalidity(uidvalidity == 1 ? 2 : uidvalidity - 1, "INBOX");
    } catch (const StatefileError&) {
      refused = true;
    }
    FUZZ_CHECK(refused);
  }
  sf->set_uidvalidity(uidvalidity, "INBOX");
  std::vector<uint32_t> expected = ints;
  if (expected.empty()) expected.push_back(uidvalidity);
  if (expected.size() == 1) expected.push_back(1);
  FUZZ_CHECK(sf->uidnext() == expected[1]);
  const uint32_t uid = expected.back() == 4294967295u ? 1 : expected.back() + 1;
  sf->append_delivered(uid);
  expected.push_back(uid);
  sf.reset();  // unlocks
  FUZZ_CHECK(read_back() == expected);

  sf.emplace(path(), false);
  FUZZ_CHECK(sf->delivered().back() == uid);
  sf->finish(uid);
  sf.reset();
  FUZZ_CHECK(read_back() == (std::vector<uint32_t>{uidvalidity, uid}));
  return 0;
}
