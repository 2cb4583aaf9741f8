// fuzz_util.hpp: what the libFuzzer harnesses (tests/fuzz/fuzz_*.cpp) share:
// a property check that aborts (libFuzzer reports it as a crash, with the
// input), and the reading of a fuzz input's leading control bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

// A property the harness checks; false is a bug (an abort, reported by
// libFuzzer with the input that caused it).
#define FUZZ_CHECK(cond)                                                                              \
  do {                                                                                                \
    if (!(cond)) {                                                                                    \
      std::fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond);                \
      std::abort();                                                                                   \
    }                                                                                                 \
  } while (0)

namespace fuzz {

// A fuzz input read from the front: control bytes first (0 once exhausted),
// then the rest as the payload.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : rest_(reinterpret_cast<const char*>(data), size) {}
  uint8_t byte() {
    if (rest_.empty()) return 0;
    const auto b = static_cast<uint8_t>(rest_.front());
    rest_.remove_prefix(1);
    return b;
  }
  std::string_view take(size_t n) {
    const std::string_view out = rest_.substr(0, n);
    rest_.remove_prefix(out.size());
    return out;
  }
  std::string_view rest() const { return rest_; }
  bool empty() const { return rest_.empty(); }

 private:
  std::string_view rest_;
};

}  // namespace fuzz
