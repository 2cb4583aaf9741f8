// pullimap's statefile: the file's exact bytes after each operation, files
// in the reference's format made by hand, the lock against a second opener
// (ours, the reference's kind of lock, the reference itself), corrupt files
// and a UIDVALIDITY change.  Each test works in its own temp directory.
#include "pull/statefile.hpp"

#include "test_util.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

using interimap::detail::pull::Statefile;
using interimap::detail::pull::StatefileError;
using interimap::detail::pull::StatefileLockedError;
using interimap::detail::pull::statefile_path;
using test_util::TempDir;

namespace {

// The file's bytes as hex, 4 bytes per group: "01020304 00000001".
std::string hex_of_file(const std::string& path) {
  const std::string bytes = test_util::read_file(path);
  std::string out;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (i > 0 && i % 4 == 0) out += ' ';
    out += fmt::format("{:02x}", static_cast<unsigned char>(bytes[i]));
  }
  return out;
}

// Writes bytes given as hex (blanks ignored), as a hand-made statefile.
void write_hex(const std::string& path, std::string_view hex) {
  std::string bytes;
  std::string digits;
  for (char c : hex)
    if (c != ' ') digits += c;
  for (size_t i = 0; i + 1 < digits.size(); i += 2) bytes += static_cast<char>(std::stoi(digits.substr(i, 2), nullptr, 16));
  test_util::write_file(path, bytes);
}

// The StatefileError opening `path` throws, or "" if it opens.
std::string error_of(const std::string& path, bool create = true) {
  return test_util::error_of<StatefileError>([&] { Statefile sf(path, create); });
}

// In a child process, tries the reference's lock (fcntl F_SETLK, F_WRLCK,
// whole file, a process-associated POSIX lock) on `path`.  Returns the
// child's exit status: 0 locked, 1 refused (EAGAIN/EACCES), 2 other error.
int try_reference_lock_in_child(const std::string& path) {
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int fd = ::open(path.c_str(), O_RDWR);
    if (fd < 0) ::_exit(2);
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (::fcntl(fd, F_SETLK, &fl) == 0) ::_exit(0);
    ::_exit(errno == EAGAIN || errno == EACCES ? 1 : 2);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 3;
}

}  // namespace

TEST_CASE("statefile: a new file, byte by byte through a whole run") {
  TempDir dir("statefile");
  const std::string path = dir.file("account");
  {
    Statefile sf(path, true);
    CHECK_FALSE(sf.uidvalidity());
    CHECK_FALSE(sf.uidnext());
    CHECK(sf.delivered().empty());
    CHECK(hex_of_file(path) == "");
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);  // the reference's sysopen mode

    // After SELECT: UIDVALIDITY, then UIDNEXT 1.
    sf.set_uidvalidity(0x01020304, "INBOX");
    CHECK(hex_of_file(path) == "01020304 00000001");
    CHECK(sf.uidvalidity() == 0x01020304u);
    CHECK(sf.uidnext() == 1u);

    // Each delivered UID, appended big-endian.
    sf.append_delivered(5);
    CHECK(hex_of_file(path) == "01020304 00000001 00000005");
    sf.append_delivered(0xfffffffe);
    CHECK(hex_of_file(path) == "01020304 00000001 00000005 fffffffe");
    CHECK(sf.delivered() == std::vector<uint32_t>{5, 0xfffffffe});

    // The fetch finished: UIDNEXT at bytes 4-7, truncated to 8 bytes.
    sf.finish(0xffffffff);
    CHECK(hex_of_file(path) == "01020304 ffffffff");
    CHECK(sf.uidnext() == 0xffffffffu);
    CHECK(sf.delivered().empty());

    // The next fetch appends after byte 8 again.
    sf.append_delivered(300);
    CHECK(hex_of_file(path) == "01020304 ffffffff 0000012c");
  }
  // Reopened: what the file says.
  Statefile again(path, false);
  CHECK(again.uidvalidity() == 0x01020304u);
  CHECK(again.uidnext() == 0xffffffffu);
  CHECK(again.delivered() == std::vector<uint32_t>{300});
  // Same UIDVALIDITY: nothing written.
  again.set_uidvalidity(0x01020304, "INBOX");
  CHECK(hex_of_file(path) == "01020304 ffffffff 0000012c");
}

TEST_CASE("statefile: reads a file in the reference's format, stalled UIDs included") {
  TempDir dir("statefile");
  const std::string path = dir.file("ref");
  // pack('N', 12345), pack('N', 42), then UIDs 43 and 45 delivered by a run
  // that was interrupted before its UID FETCH completed.
  write_hex(path, "00003039 0000002a 0000002b 0000002d");
  Statefile sf(path, false);
  CHECK(sf.uidvalidity() == 12345u);
  CHECK(sf.uidnext() == 42u);
  CHECK(sf.delivered() == std::vector<uint32_t>{43, 45});
  sf.set_uidvalidity(12345, "INBOX");
  CHECK(hex_of_file(path) == "00003039 0000002a 0000002b 0000002d");
  // New deliveries go after the stalled UIDs (the reference's invariant:
  // position 8 + 4 * (stalled + delivered)).
  sf.append_delivered(46);
  CHECK(hex_of_file(path) == "00003039 0000002a 0000002b 0000002d 0000002e");
  CHECK(sf.delivered() == std::vector<uint32_t>{43, 45, 46});
  sf.finish(47);
  CHECK(hex_of_file(path) == "00003039 0000002f");
}

TEST_CASE("statefile: a 4-byte file (first run interrupted between its writes) is completed") {
  TempDir dir("statefile");
  const std::string path = dir.file("half");
  write_hex(path, "00000007");
  Statefile sf(path, false);
  CHECK(sf.uidvalidity() == 7u);
  CHECK_FALSE(sf.uidnext());
  CHECK_THROWS_AS(sf.append_delivered(1), std::logic_error);
  sf.set_uidvalidity(7, "INBOX");
  CHECK(hex_of_file(path) == "00000007 00000001");
}

TEST_CASE("statefile: a crash after deliveries leaves them for the next run") {
  TempDir dir("statefile");
  const std::string path = dir.file("crash");
  {
    Statefile sf(path, true);
    sf.set_uidvalidity(99, "INBOX");
    sf.append_delivered(1);
    sf.append_delivered(2);
    // destroyed without finish(): the process died during the UID FETCH
  }
  CHECK(hex_of_file(path) == "00000063 00000001 00000001 00000002");
  Statefile sf(path, false);
  CHECK(sf.uidnext() == 1u);
  CHECK(sf.delivered() == std::vector<uint32_t>{1, 2});
}

TEST_CASE("statefile: UIDVALIDITY changed is an error naming the file and both values") {
  TempDir dir("statefile");
  const std::string path = dir.file("uv");
  write_hex(path, "00000064 0000000a 0000000b");
  Statefile sf(path, false);
  const std::string what = test_util::error_of<StatefileError>([&] { sf.set_uidvalidity(200, "Lists/debian"); });
  CHECK(what.find(path) != std::string::npos);
  CHECK(what.find("statefile: 100") != std::string::npos);
  CHECK(what.find("server: 200") != std::string::npos);
  CHECK(what.find("Lists/debian") != std::string::npos);
  CHECK(what.find("UIDVALIDITY") != std::string::npos);
  // Untouched.
  CHECK(hex_of_file(path) == "00000064 0000000a 0000000b");
  CHECK(sf.uidvalidity() == 100u);
}

TEST_CASE("statefile: corrupt files are refused with a clear message") {
  TempDir dir("statefile");
  const std::string path = dir.file("bad");
  // Sizes that are not a multiple of 4, below and above 8 bytes.
  for (std::string_view hex : {"01", "0102", "010203", "0102030405", "010203040506", "01020304050607",
                               "0102030405060708 09"}) {
    CAPTURE(hex);
    write_hex(path, hex);
    const std::string what = error_of(path);
    CHECK(what.find(path) != std::string::npos);
    CHECK(what.find("corrupted statefile") != std::string::npos);
    CHECK(what.find("not a multiple of 4") != std::string::npos);
    CHECK(what.find(fmt::format("({} bytes)", std::filesystem::file_size(path))) != std::string::npos);
  }
  // Zeros the reference never writes.
  write_hex(path, "00000000 00000001");
  CHECK(error_of(path).find("UIDVALIDITY is 0") != std::string::npos);
  write_hex(path, "00000001 00000000");
  CHECK(error_of(path).find("UIDNEXT is 0") != std::string::npos);
  write_hex(path, "00000001 00000002 00000000");
  CHECK(error_of(path).find("a delivered UID is 0 (bytes 8-11)") != std::string::npos);
  // Not a regular file.
  CHECK(error_of(dir.path().string()).find("Can't open") != std::string::npos);
}

TEST_CASE("statefile: missing file without create (--idle) is not created") {
  TempDir dir("statefile");
  const std::string path = dir.file("absent");
  const std::string what = error_of(path, false);
  CHECK(what == fmt::format("Can't open {}: No such file or directory", path));
  CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("statefile: a second opener fails at once while the first holds the lock") {
  TempDir dir("statefile");
  const std::string path = dir.file("locked");
  auto first = std::make_unique<Statefile>(path, true);
  first->set_uidvalidity(1, "INBOX");

  const auto start = std::chrono::steady_clock::now();
  const std::string what = test_util::error_of<StatefileLockedError>([&] { Statefile second(path, true); });
  const auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(what.find(fmt::format("Can't lock {}", path)) != std::string::npos);
  CHECK(what.find("another pullimap") != std::string::npos);
  CHECK(elapsed < std::chrono::seconds(1));

  // The reference's kind of lock, from another process, is refused too...
  CHECK(try_reference_lock_in_child(path) == 1);
  // ...and once we let go, both kinds get it.
  first.reset();
  CHECK(try_reference_lock_in_child(path) == 0);
  Statefile third(path, false);
  CHECK(third.uidvalidity() == 1u);
}

TEST_CASE("statefile: the reference's lock keeps us out") {
  TempDir dir("statefile");
  const std::string path = dir.file("held");
  write_hex(path, "00000001 00000001");
  // A child holds the reference's lock (F_SETLK) until we close the pipe.
  int to_child[2], from_child[2];
  REQUIRE(::pipe(to_child) == 0);
  REQUIRE(::pipe(from_child) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(to_child[1]);
    ::close(from_child[0]);
    int fd = ::open(path.c_str(), O_RDWR);
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    char ok = (fd >= 0 && ::fcntl(fd, F_SETLK, &fl) == 0) ? 'L' : 'E';
    (void)!::write(from_child[1], &ok, 1);
    char c;
    (void)!::read(to_child[0], &c, 1);  // EOF when the parent closes
    ::_exit(0);
  }
  ::close(to_child[0]);
  ::close(from_child[1]);
  char ok = 0;
  REQUIRE(::read(from_child[0], &ok, 1) == 1);
  REQUIRE(ok == 'L');
  CHECK_THROWS_AS(Statefile(path, false), StatefileLockedError);
  ::close(to_child[1]);
  ::close(from_child[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  Statefile sf(path, false);  // released with the child
  CHECK(sf.uidnext() == 1u);
}

TEST_CASE("statefile: the reference pullimap itself is locked out by us") {
  // pullimap 0.5.7 reads its configuration, then opens and locks the
  // statefile before connecting anywhere: while we hold the file it must
  // die with "Can't lock".
  const char* reference = "/usr/bin/pullimap";
  if (::access(reference, X_OK) != 0) {
    MESSAGE("reference pullimap not installed: skipped");
    return;
  }
  TempDir dir("statefile");
  std::filesystem::create_directories(dir.path() / "data");
  const std::string config = dir.file("config");
  test_util::write_file(config, "[acct]\ntype = imap\nhost = 127.0.0.1\nport = 1\nSTARTTLS = NO\n");
  const std::string data_home = (dir.path() / "data").string();
  const std::string path = statefile_path(std::nullopt, "acct", data_home);
  Statefile ours(path, true);

  int out_pipe[2];
  REQUIRE(::pipe(out_pipe) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(out_pipe[1], 2);
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    ::setenv("XDG_DATA_HOME", data_home.c_str(), 1);
    ::execl(reference, reference, "--config", config.c_str(), "acct", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  std::string err;
  char buf[512];
  for (ssize_t n; (n = ::read(out_pipe[0], buf, sizeof buf)) > 0;) err.append(buf, static_cast<size_t>(n));
  ::close(out_pipe[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CAPTURE(err);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) != 0);
  CHECK(err.find("Can't lock " + path) != std::string::npos);
}

TEST_CASE("statefile: its path, as the reference's xdg_basedir finds it") {
  TempDir dir("statefile");
  const std::string data_home = dir.path().string();
  // Default: the section name, under DATA_HOME/pullimap (created 0700).
  CHECK(statefile_path(std::nullopt, "work", data_home) == data_home + "/pullimap/work");
  struct stat st {};
  REQUIRE(::stat((data_home + "/pullimap").c_str(), &st) == 0);
  CHECK(S_ISDIR(st.st_mode));
  CHECK((st.st_mode & 07777) == 0700);
  // The statefile option, relative or absolute.
  CHECK(statefile_path(std::string("state.bin"), "work", data_home) == data_home + "/pullimap/state.bin");
  CHECK(statefile_path(std::string("/var/tmp/x"), "work", data_home) == "/var/tmp/x");
  // An absolute path needs no DATA_HOME at all.
  CHECK(statefile_path(std::string("/var/tmp/x"), "work", "/nonexistent") == "/var/tmp/x");
  // A missing DATA_HOME is not created.
  const std::string missing = data_home + "/missing";
  CHECK(test_util::error_of<StatefileError>([&] { statefile_path(std::nullopt, "work", missing); }) ==
        "No such directory: " + missing);
  CHECK_FALSE(std::filesystem::exists(missing));
}

TEST_CASE("statefile: preconditions") {
  TempDir dir("statefile");
  Statefile sf(dir.file("p"), true);
  CHECK_THROWS_AS(sf.append_delivered(1), std::logic_error);
  CHECK_THROWS_AS(sf.finish(2), std::logic_error);
  CHECK_THROWS_AS(sf.set_uidvalidity(0, "INBOX"), std::invalid_argument);
  sf.set_uidvalidity(3, "INBOX");
  CHECK_THROWS_AS(sf.append_delivered(0), std::invalid_argument);
  CHECK_THROWS_AS(sf.finish(0), std::invalid_argument);
  CHECK(hex_of_file(dir.file("p")) == "00000003 00000001");
}
