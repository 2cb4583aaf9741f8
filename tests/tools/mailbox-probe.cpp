// mailbox-probe: drives the public Mailbox API for the integration tests
// (tests/integration/test_mailbox.py).
//
//   mailbox-probe --config FILE [--section NAME] [--debug N] MAILBOX STEP [; STEP]...
//
// Steps run in order on one connection; each prints tab-separated lines:
//   enable                               ENABLED QRESYNC
//   select [examine] [qresync UIDVALIDITY MODSEQ [KNOWN-UIDS]]
//                                        SELECTED <uidvalidity> <uidnext> <highestmodseq> <exists> <rw|ro>
//                                        FLAGS <flags...> / PERMANENTFLAGS <flags...>
//   changes                              take_changes(): VANISHED <set|->, then CHANGE <uid> <modseq> <flags|?>
//   changedsince MODSEQ [SET]            fetch_changes(): same lines as changes
//   flags SET                            FLAGS <uid> <modseq> <flags>
//   store add|remove|replace SET "FLAGS" [UNCHANGEDSINCE]
//                                        MODIFIED <set|->
//   expunge SET                          NOTEXPUNGED <set|->
//   fetch SET [envelope] [nobody]        MESSAGE <uid> <size> <sha256> <modseq> <internaldate> <flags>
//                                        (EMPTY <uid> for an empty body), then FETCHED <n> and
//                                        VMHWM <RSS kB before> <peak RSS kB during> (peak reset before)
//   fetchabort SET N                     ABORTED <N> (the callback throws at message N)
//   append MANIFEST                      BATCH <first index> <uids...> per confirmed batch, then
//                                        APPENDED <uids...>; MANIFEST lines: PATH<TAB>FLAGS<TAB>INTERNALDATE
//   search CRITERIA                      SEARCH <set|->
//   state                                STATE <uidvalidity> <uidnext> <highestmodseq> <exists> <selected 0|1>
//   newmail                              NEWMAIL <0|1> (take_new_messages())
//   use MAILBOX                          switches to another Mailbox object on the same connection
//   shell COMMAND...                     SHELL (runs COMMAND with system(3), e.g. another client)
//   noop                                 NOOP (Connection::noop, processes unsolicited responses)
//   close                                CLOSED
// Errors: "mailbox-probe: MESSAGE" on stderr, exit status 1; a CommandError
// also prints "ERROR <command> <status> <code>" on stdout.
#include <interimap/config.hpp>
#include <interimap/connection.hpp>
#include <interimap/error.hpp>
#include <interimap/log.hpp>
#include <interimap/mailbox.hpp>

#include "probe_util.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {

using interimap::Mailbox;
using interimap::UidSet;
using probe::opt;
using probe::read_file;
using probe::sha256_hex;

std::string set_or_dash(const UidSet& s) { return s.empty() ? "-" : s.to_string(); }

// A field of /proc/self/status in kB: "VmHWM:" (peak resident set size), "VmRSS:".
long status_kb(std::string_view field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field, 0) == 0) return std::stol(line.substr(field.size()));
  return -1;
}

// Resets VmHWM to the current RSS (Linux >= 4.0: "5" > /proc/self/clear_refs).
void reset_hwm() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
}

std::vector<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

void print_changes(const interimap::Changes& c) {
  fmt::print("VANISHED\t{}\n", set_or_dash(c.vanished));
  for (const auto& f : c.flags)
    fmt::print("CHANGE\t{}\t{}\t{}\n", f.uid, f.modseq, f.flags ? fmt::format("{}", fmt::join(*f.flags, " ")) : "?");
}

class Runner {
 public:
  Runner(interimap::Connection& conn, const std::string& mailbox) : conn_(conn) { use(mailbox); }

  void run(const std::vector<std::string>& step) {
    const std::string& verb = step.at(0);
    auto arg = [&](size_t i) -> const std::string& {
      if (i >= step.size()) throw interimap::Error(fmt::format("step {}: missing argument {}", verb, i));
      return step[i];
    };
    Mailbox& mbx = *current_;
    if (verb == "enable") {
      Mailbox::enable_qresync(conn_);
      fmt::print("ENABLED QRESYNC\n");
    } else if (verb == "select") {
      bool examine = false;
      std::optional<interimap::QresyncParams> q;
      for (size_t i = 1; i < step.size(); ++i) {
        if (step[i] == "examine") {
          examine = true;
        } else if (step[i] == "qresync") {
          q.emplace();
          q->uidvalidity = static_cast<uint32_t>(std::stoul(arg(i + 1)));
          q->highestmodseq = std::stoull(arg(i + 2));
          i += 2;
          if (i + 1 < step.size() && step[i + 1] != "examine") q->known_uids = UidSet::parse(step[++i]);
        } else {
          throw interimap::Error("select: unknown argument " + step[i]);
        }
      }
      examine ? mbx.examine(q) : mbx.select(q);
      fmt::print("SELECTED\t{}\t{}\t{}\t{}\t{}\n", mbx.uidvalidity(), opt(mbx.uidnext()), opt(mbx.highestmodseq()),
                 mbx.exists(), mbx.read_only() ? "ro" : "rw");
      fmt::print("FLAGS\t{}\nPERMANENTFLAGS\t{}\n", fmt::join(mbx.flags(), " "), fmt::join(mbx.permanent_flags(), " "));
    } else if (verb == "changes") {
      print_changes(mbx.take_changes());
    } else if (verb == "changedsince") {
      print_changes(step.size() > 2 ? mbx.fetch_changes(std::stoull(arg(1)), UidSet::parse(arg(2)))
                                    : mbx.fetch_changes(std::stoull(arg(1))));
    } else if (verb == "flags") {
      for (const auto& f : mbx.fetch_flags(UidSet::parse(arg(1))))
        fmt::print("FLAGS\t{}\t{}\t{}\n", f.uid, f.modseq, fmt::join(*f.flags, " "));
    } else if (verb == "store") {
      const std::string& m = arg(1);
      auto mode = m == "add"      ? interimap::StoreMode::Add
                  : m == "remove" ? interimap::StoreMode::Remove
                  : m == "replace" ? interimap::StoreMode::Replace
                                   : throw interimap::Error("store: bad mode " + m);
      std::optional<uint64_t> since;
      if (step.size() > 4) since = std::stoull(arg(4));
      fmt::print("MODIFIED\t{}\n", set_or_dash(mbx.store_flags(UidSet::parse(arg(2)), mode, words(arg(3)), since)));
    } else if (verb == "update") {
      // update EXPUNGE-SET UIDS FLAGS [SINCE]: one replace store and the
      // expunge, pipelined together.
      std::optional<uint64_t> since;
      if (step.size() > 4) since = std::stoull(arg(4));
      const auto r = mbx.update(arg(1) == "-" ? UidSet{} : UidSet::parse(arg(1)),
                                {{UidSet::parse(arg(2)), interimap::StoreMode::Replace, words(arg(3))}}, since);
      fmt::print("NOTEXPUNGED\t{}\nMODIFIED\t{}\n", set_or_dash(r.not_expunged), set_or_dash(r.refused.front()));
    } else if (verb == "expunge") {
      fmt::print("NOTEXPUNGED\t{}\n", set_or_dash(mbx.expunge(UidSet::parse(arg(1)))));
    } else if (verb == "fetch") {
      interimap::FetchOptions options;
      for (size_t i = 2; i < step.size(); ++i) {
        if (step[i] == "envelope") options.envelope = true;
        else if (step[i] == "nobody") options.body = false;
        else throw interimap::Error("fetch: unknown argument " + step[i]);
      }
      std::fflush(stdout);
      sha256_hex("");  // OpenSSL's lazy initialization is not the FETCH's doing
      reset_hwm();
      const long before = status_kb("VmRSS:");
      size_t n = 0;
      mbx.fetch_messages(UidSet::parse(arg(1)), [&](interimap::Message& m) {
        ++n;
        if (m.body.empty() && options.body) {
          fmt::print("EMPTY\t{}\n", m.uid);
          return;
        }
        std::string sender;
        if (!m.envelope_sender.empty())
          sender = fmt::format("\t{}@{}", m.envelope_sender[0].mailbox.value_or(""), m.envelope_sender[0].host.value_or(""));
        fmt::print("MESSAGE\t{}\t{}\t{}\t{}\t{}\t{}{}\n", m.uid, m.body.size(), sha256_hex(m.body), m.modseq,
                   m.internaldate, fmt::join(m.flags, " "), sender);
      }, options);
      fmt::print("FETCHED\t{}\nVMHWM\t{}\t{}\n", n, before, status_kb("VmHWM:"));
    } else if (verb == "fetchabort") {
      // The callback throws at message N: the FETCH is abandoned mid-way.
      const size_t stop = std::stoul(arg(2));
      size_t n = 0;
      try {
        mbx.fetch_messages(UidSet::parse(arg(1)), [&](interimap::Message&) {
          if (++n == stop) throw std::runtime_error("abort");
        });
      } catch (const std::runtime_error& e) {
        if (std::string_view(e.what()) != "abort") throw;
      }
      fmt::print("ABORTED\t{}\n", n);
    } else if (verb == "append") {
      std::vector<interimap::AppendMessage> messages;
      std::istringstream manifest(read_file(arg(1)));
      for (std::string line; std::getline(manifest, line);) {
        if (line.empty()) continue;
        std::vector<std::string> fields;
        std::istringstream fs(line);
        for (std::string f; std::getline(fs, f, '\t');) fields.push_back(f);
        fields.resize(3);
        messages.push_back({read_file(fields[0]), words(fields[1]), fields[2]});
      }
      auto uids = mbx.append(messages, [](size_t first, const std::vector<uint32_t>& batch) {
        fmt::print("BATCH\t{}\t{}\n", first, fmt::join(batch, " "));
      });
      fmt::print("APPENDED\t{}\n", fmt::join(uids, " "));
    } else if (verb == "search") {
      std::vector<std::string> criteria(step.begin() + 1, step.end());
      fmt::print("SEARCH\t{}\n", set_or_dash(mbx.search(fmt::format("{}", fmt::join(criteria, " ")))));
    } else if (verb == "state") {
      fmt::print("STATE\t{}\t{}\t{}\t{}\t{}\n", mbx.uidvalidity(), opt(mbx.uidnext()), opt(mbx.highestmodseq()),
                 mbx.exists(), mbx.selected() ? 1 : 0);
    } else if (verb == "newmail") {
      fmt::print("NEWMAIL\t{}\n", mbx.take_new_messages() ? 1 : 0);
    } else if (verb == "use") {
      use(arg(1));
    } else if (verb == "shell") {
      // Lets the test change the mailbox from another client mid-session.
      std::vector<std::string> cmd(step.begin() + 1, step.end());
      std::fflush(stdout);
      const int rc = std::system(fmt::format("{}", fmt::join(cmd, " ")).c_str());
      if (rc != 0) throw interimap::Error(fmt::format("shell step failed with status {}", rc));
      fmt::print("SHELL\n");
    } else if (verb == "noop") {
      conn_.noop();
      fmt::print("NOOP\n");
    } else if (verb == "close") {
      mbx.close();
      fmt::print("CLOSED\n");
    } else {
      throw interimap::Error("unknown step: " + verb);
    }
    std::fflush(stdout);
  }

 private:
  void use(const std::string& name) {
    auto it = mailboxes_.find(name);
    if (it == mailboxes_.end()) it = mailboxes_.emplace(name, std::make_unique<Mailbox>(conn_, name)).first;
    current_ = it->second.get();
  }

  interimap::Connection& conn_;
  std::map<std::string, std::unique_ptr<Mailbox>> mailboxes_;
  Mailbox* current_ = nullptr;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mailbox-probe: exercise libinterimap's Mailbox"};
  std::string config_path, section = "remote", mailbox;
  int debug = 0;
  std::vector<std::string> steps;
  app.add_option("--config", config_path, "configuration file")->required();
  app.add_option("--section", section, "section of the configuration file");
  app.add_option("--debug", debug, "debug level");
  app.add_option("mailbox", mailbox, "mailbox (wire name)")->required();
  app.add_option("steps", steps, "steps separated by ';' (see the source)")->required();
  CLI11_PARSE(app, argc, argv);

  interimap::Logger logger;
  logger.set_debug(debug);
  try {
    interimap::Connection conn(probe::connection_options(config_path, section), logger);
    conn.open();
    Runner runner(conn, mailbox);
    std::vector<std::string> step;
    for (size_t i = 0; i <= steps.size(); ++i) {
      if (i == steps.size() || steps[i] == ";") {
        if (!step.empty()) runner.run(step);
        step.clear();
      } else {
        step.push_back(steps[i]);
      }
    }
    conn.close();
  } catch (const interimap::CommandError& e) {
    fmt::print("ERROR\t{}\t{}\t{}\n", e.command(), e.status(), e.code().empty() ? "-" : e.code());
    return probe::fail("mailbox-probe", e);
  } catch (const std::exception& e) {
    return probe::fail("mailbox-probe", e);
  }
  return 0;
}
