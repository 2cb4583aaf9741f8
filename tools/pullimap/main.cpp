// pullimap: pull mails from an IMAP mailbox and deliver them over SMTP or
// LMTP (in progress: lands with the pullimap issue).
#include <CLI/CLI.hpp>

#include "interimap_config.h"

#include <cstdio>

int main(int argc, char** argv) {
  CLI::App app{"pullimap: pull mails from an IMAP mailbox and deliver them to an SMTP or LMTP server"};
  app.set_version_flag("--version", "pullimap " INTERIMAP_VERSION);
  CLI11_PARSE(app, argc, argv);
  std::fprintf(stderr, "pullimap: not implemented yet\n");
  return 1;
}
