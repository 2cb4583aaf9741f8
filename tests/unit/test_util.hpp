// test_util.hpp: helpers the unit test files (tests/unit/test_*.cpp) share:
// temporary directories and files that clean up after themselves, whole-file
// reads and writes, environment variables put back as they were, the message
// of an expected exception, and an input cut into pieces for the split tests.
// No doctest here: the helpers throw, and a test case that throws fails.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <unistd.h>

namespace test_util {

// A new directory PREFIX-XXXXXX in the temporary directory, removed with its contents when destroyed.
class TempDir {
 public:
  explicit TempDir(std::string_view prefix) {
    std::string pattern = (std::filesystem::temp_directory_path() / (std::string(prefix) + "-XXXXXX")).string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(std::string_view name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A new empty file PREFIX-XXXXXX in the temporary directory, removed (if still there) when destroyed.
class TempFile {
 public:
  explicit TempFile(std::string_view prefix) {
    std::string pattern = (std::filesystem::temp_directory_path() / (std::string(prefix) + "-XXXXXX")).string();
    const int fd = ::mkstemp(pattern.data());
    if (fd < 0) throw std::runtime_error("mkstemp failed");
    ::close(fd);
    path_ = std::move(pattern);
  }
  ~TempFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The file's bytes; std::runtime_error when it cannot be opened.
inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Creates or truncates the file and writes `bytes`; std::runtime_error on failure.
inline void write_file(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

// Sets and unsets environment variables; when destroyed, each one touched is set back to its first value, or unset.
class EnvOverride {
 public:
  EnvOverride() = default;
  ~EnvOverride() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second) {
        ::setenv(it->first.c_str(), it->second->c_str(), 1);
      } else {
        ::unsetenv(it->first.c_str());
      }
    }
  }
  EnvOverride(const EnvOverride&) = delete;
  EnvOverride& operator=(const EnvOverride&) = delete;
  void set(const std::string& name, const std::string& value) {
    save(name);
    ::setenv(name.c_str(), value.c_str(), 1);
  }
  void unset(const std::string& name) {
    save(name);
    ::unsetenv(name.c_str());
  }

 private:
  void save(const std::string& name) {
    for (const auto& s : saved_)
      if (s.first == name) return;
    const char* old = std::getenv(name.c_str());
    saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
  }

  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

// The what() of the E that `fn` throws, or "" when it returns; any other exception goes through.
template <typename E, typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  return {};
}

// `s` cut into consecutive pieces of `step` bytes (the last may be shorter; none for an empty `s`).
inline std::vector<std::string_view> pieces(std::string_view s, std::size_t step) {
  if (step == 0) throw std::invalid_argument("pieces: step 0");
  std::vector<std::string_view> out;
  for (std::size_t i = 0; i < s.size(); i += step) out.push_back(s.substr(i, step));
  return out;
}

}  // namespace test_util
