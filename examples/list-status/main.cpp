// list-status: connect with one section of an interimap configuration file
// and print each mailbox with its STATUS.  Built against the installed
// library through pkg-config (see meson.build beside this file).
//
//   list-status CONFIG [SECTION]
#include <interimap/config.hpp>
#include <interimap/connection.hpp>
#include <interimap/error.hpp>
#include <interimap/log.hpp>

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s CONFIG [SECTION]\n", argv[0]);
    return 2;
  }
  const char* section = argc == 3 ? argv[2] : "remote";
  try {
    auto config = interimap::Config::load(argv[1]);
    interimap::Logger logger;
    interimap::Connection conn(config.connection(section, /*compress_default=*/true), logger);
    conn.open();
    for (const auto& m : conn.list({"*"})) {
      if (!m.selectable()) continue;
      std::printf("%-30s messages=%u uidnext=%u uidvalidity=%u\n", m.name.c_str(), m.messages.value_or(0),
                  m.uidnext.value_or(0), m.uidvalidity.value_or(0));
    }
    conn.close();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "list-status: %s\n", e.what());
    return 1;
  }
  return 0;
}
