// sync-one: synchronize one mailbox between two IMAP servers reached
// through tunnel commands, with a state database, from the public headers
// alone: SyncSettings filled in by code, no configuration file.  What a
// mail client embedding libinterimap would do.  Built against the
// installed library through pkg-config (see meson.build beside this file).
//
//   sync-one LOCAL-COMMAND REMOTE-COMMAND DATABASE MAILBOX
//
// Run it twice: the second run finds nothing to do and says nothing.
#include <interimap/error.hpp>
#include <interimap/log.hpp>
#include <interimap/options.hpp>
#include <interimap/syncsession.hpp>

#include <cstdio>
#include <exception>
#include <string>
#include <utility>

namespace {

interimap::ConnectionOptions tunnel(const char* name, const char* command) {
  interimap::ConnectionOptions o;
  o.name = name;
  o.type = interimap::ConnectionOptions::Type::Tunnel;
  o.command = command;
  o.null_stderr = true;
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s LOCAL-COMMAND REMOTE-COMMAND DATABASE MAILBOX\n", argv[0]);
    return 2;
  }
  interimap::SyncSettings settings;
  settings.connections = {tunnel("local", argv[1]), tunnel("remote", argv[2])};
  settings.database = argv[3];
  settings.mailboxes = {argv[4]};
  interimap::Logger logger;  // stderr, the reference's line shapes
  try {
    interimap::SyncSession session(std::move(settings), logger);
    session.open();
    session.run();
    const auto done = session.mailboxes();
    session.close();
    for (const auto& name : done) std::printf("synchronized %s\n", session.pretty_name(name).c_str());
  } catch (const interimap::Error& e) {
    logger.error(e.component(), e.message());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sync-one: %s\n", e.what());
    return 1;
  }
  return 0;
}
