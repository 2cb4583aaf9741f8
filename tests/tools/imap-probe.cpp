// imap-probe: drives the public Connection API (and Mailbox, for fetch) for the
// integration tests.
//   imap-probe --config FILE [--section NAME] [--debug N] ACTION [ARGS...]
// See tests/integration/harness.py for the output lines each action prints.
#include <interimap/config.hpp>
#include <interimap/connection.hpp>
#include <interimap/error.hpp>
#include <interimap/log.hpp>
#include <interimap/mailbox.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <openssl/evp.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

namespace {

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}

template <typename T>
std::string opt(const std::optional<T>& v) { return v ? fmt::format("{}", *v) : "-"; }

}  // namespace

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
    auto config = interimap::Config::load(config_path);
    if (!config.has_section(section)) throw interimap::ConfigError(fmt::format("{}: no section [{}]", config_path, section));
    interimap::Connection conn(config.connection(section, section == "remote"), logger);
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
                   opt(m.messages), opt(m.uidnext), opt(m.uidvalidity), opt(m.highestmodseq), fmt::join(m.flags, " "));
    } else if (verb == "append" && action.size() >= 3) {
      std::ifstream in(action[2], std::ios::binary);
      if (!in) throw interimap::Error("cannot read " + action[2]);
      std::stringstream ss;
      ss << in.rdbuf();
      std::vector<std::string> flags(action.begin() + 3, action.end());
      auto uid = conn.append(action[1], ss.str(), flags);
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
      fmt::print("BODY {} {}\n", body->size(), sha256_hex(*body));
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
    std::fflush(stdout);
    fmt::print(stderr, "imap-probe: {}\n", e.what());
    return 1;
  }
  return 0;
}
