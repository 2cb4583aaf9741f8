// interimap: stateful synchronization of two IMAP servers (in progress:
// the synchronization engine lands with the sync issue).
#include <CLI/CLI.hpp>

#include "interimap_config.h"

#include <cstdio>

int main(int argc, char** argv) {
  CLI::App app{"interimap: fast bidirectional synchronization of IMAP servers with QRESYNC"};
  app.set_version_flag("--version", "interimap " INTERIMAP_VERSION);
  CLI11_PARSE(app, argc, argv);
  std::fprintf(stderr, "interimap: the synchronization engine is not implemented yet\n");
  return 1;
}
