// imap-probe: drives the public Connection API (and Mailbox, for fetch) for the
// integration tests.
//   imap-probe --config FILE [--section NAME] [--debug N] ACTION [ARGS...]
// See tests/integration/harness.py for the output lines each action prints.
#include <interimap/config.hpp>
#include <interimap/connection.hpp>
#include <interimap/error.hpp>
#include <interimap/log.hpp>
#include <interimap/mailbox.hpp>

#include "probe_util.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"imap-probe: exercise libinterimap's Connection"};
  std::string config_path, section = "remote";
  int debug = 0;
  std::vector<std::string> action;
  app.add_option("--config", config_path, "configuration file")->required();
  app.add_option("--section", section, "section of the configuration file");
  app.add_option("--debug", debug, "debug level");
  app.add_option("action", action, "capabilities | require CAP... | list [PATTERN...] | append MAILBOX FILE [FLAG...] | "
                                   "fetch MAILBOX UID | create MAILBOX")->required();
  CLI11_PARSE(app, argc, argv);

  interimap::Logger logger;
  logger.set_debug(debug);
  try {
    interimap::Connection conn(probe::connection_options(config_path, section), logger);
    conn.open();
    const std::string& verb = action[0];
    if (verb == "capabilities") {
      fmt::print("CAPABILITY {}\nTLS {}\nCOMPRESS {}\n", fmt::join(conn.capabilities(), " "),
                 conn.encrypted() ? "yes" : "no", conn.compressed() ? "yes" : "no");
    } else if (verb == "require") {
      for (size_t i = 1; i < action.size(); ++i) conn.require_capability(action[i]);
      fmt::print("HAS {}\n", fmt::join(action.begin() + 1, action.end(), " "));
    } else if (verb == "list") {
      std::vector<std::string> patterns(action.begin() + 1, action.end());
      for (const auto& m : conn.list(patterns))
        fmt::print("MAILBOX\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n", m.name, m.delimiter ? std::string(1, *m.delimiter) : "NIL",
                   probe::opt(m.messages), probe::opt(m.uidnext), probe::opt(m.uidvalidity),
                   probe::opt(m.highestmodseq), fmt::join(m.flags, " "));
    } else if (verb == "append" && action.size() >= 3) {
      std::vector<std::string> flags(action.begin() + 3, action.end());
      auto uid = conn.append(action[1], probe::read_file(action[2]), flags);
      if (!uid) throw interimap::Error("no APPENDUID in the server's answer");
      fmt::print("APPENDED {} {}\n", uid->first, uid->second);
    } else if (verb == "fetch" && action.size() == 3) {
      // EXAMINE, then UID FETCH uid (... BODY.PEEK[]).
      interimap::Mailbox mailbox(conn, action[1]);
      mailbox.examine();
      std::optional<std::string> body;
      const auto uid = static_cast<uint32_t>(std::stoul(action[2]));
      mailbox.fetch_messages(interimap::UidSet::range(uid, uid), [&](interimap::Message& m) {
        if (m.uid == uid) body = std::move(m.body);
      });
      if (!body) throw interimap::Error("no such UID " + action[2]);
      fmt::print("BODY {} {}\n", body->size(), probe::sha256_hex(*body));
    } else if (verb == "create" && action.size() == 2) {
      const interimap::CommandStatus st = conn.create(action[1]);
      if (!st.ok()) throw interimap::Error(fmt::format("{}: CREATE {}: {}", conn.name(), action[1], st.describe()));
      fmt::print("CREATED {}\n", action[1]);
    } else {
      throw interimap::Error("bad action: " + verb);
    }
    std::fflush(stdout);
    conn.close();
  } catch (const std::exception& e) {
    return probe::fail("imap-probe", e);
  }
  return 0;
}
