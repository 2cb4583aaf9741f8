// interimap: fast bidirectional synchronization of two IMAP servers
// (QRESYNC, CONDSTORE alone or neither, per side).  The command line of interimap(1) 0.5.7; everything else
// is libinterimap's SyncSession.
#include <interimap/config.hpp>
#include <interimap/connection.hpp>
#include <interimap/dry_run.hpp>
#include <interimap/error.hpp>
#include <interimap/log.hpp>
#include <interimap/syncsession.hpp>
#include <interimap/watch.hpp>

#include "interimap_config.h"

#include <getopt.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

constexpr const char* kName = "interimap";
// --dry-run's exit status when the run would change something (0: nothing
// to do; 1 stays an error's).
constexpr int kChangesPending = 3;

[[noreturn]] void usage(int rv) {
  if (rv != 0) {
    std::fprintf(stderr,
                 "Usage: %s [OPTIONS] [COMMAND] [MAILBOX [..]]\n"
                 "Try '%s --help' or consult the manpage for more information.\n",
                 kName, kName);
  } else {
    std::fprintf(stderr,
                 "Usage: %s [OPTIONS] [MAILBOX [..]]\n"
                 "  or: %s [OPTIONS] --repair [MAILBOX [..]]\n"
                 "  or: %s [OPTIONS] --delete MAILBOX [..]\n"
                 "  or: %s [OPTIONS] --rename SOURCE DEST\n"
                 "Consult the manpage for more information.\n",
                 kName, kName, kName, kName);
    // Ours: after the reference's text (test_cli compares that part).
    std::fputs(interimap::auth_options_help(kName).c_str(), stderr);
    std::fputs(
        "\n"
        "Servers: each side uses the best change tracking its server offers:\n"
        "QRESYNC (Dovecot, Cyrus/Fastmail), CONDSTORE alone (Gmail) or neither\n"
        "(Microsoft 365, Yahoo: every known message's flags are read each run);\n"
        "change-tracking = auto|qresync|condstore|plain in [local] or [remote]\n"
        "forces one.  Both servers need UIDPLUS.\n"
        "\n"
        "  --dry-run  read both servers and the database, print what the run\n"
        "             would change (per mailbox and side: messages to append\n"
        "             with their bytes, flags to add and remove, messages to\n"
        "             expunge; mailboxes to create, subscribe, delete, rename)\n"
        "             and change nothing (EXAMINE, no write; the database is\n"
        "             read into memory).  Lines start with \"(dry run) \".\n"
        "             Works with --repair, --delete, --rename; not with\n"
        "             --watch or --notify.  Exit status: 0 nothing to do,\n"
        "             3 changes pending, 1 an error (as without --dry-run).\n"
        "\n"
        "Safety (README.md, \"Safety: mass deletions and self-sync\"): a run stops before\n"
        "changing anything when a side lost more than mass-deletion-share percent\n"
        "(default 50, or off) and at least mass-deletion-minimum messages (default 10) of\n"
        "the synchronized ones (a store emptied or replaced, a database of another\n"
        "account), or when [local] and [remote] reach the same store.\n"
        "mailbox-deletion-share (default off) and mailbox-deletion-minimum (default 10)\n"
        "set the same limit per mailbox, checked before its expunges.\n"
        "  --allow-mass-deletion   let this run's deletions through\n",
        stderr);
  }
  std::exit(rv);
}

std::vector<std::string> split_commas(std::string_view s) {
  std::vector<std::string> out;
  size_t i = 0;
  for (;;) {
    const size_t j = s.find(',', i);
    out.emplace_back(s.substr(i, j == std::string_view::npos ? std::string_view::npos : j - i));
    if (j == std::string_view::npos) break;
    i = j + 1;
  }
  return out;
}

// An error's component goes before "ERROR: ", as in the reference's
// "remote: ERROR: ...".
void report(interimap::Logger& logger, const interimap::Error& e) { logger.error(e.component(), e.message()); }

// Getopt::Long's errors, as the reference prints them, for what getopt_long
// would word differently or accept: exact option names only (the
// reference does not take "--conf" for "--config"), "Unknown option: X",
// "Option X requires an argument", "Option X does not take an argument",
// each followed by the short usage.  Stops where getopt_long's "+" mode
// stops: at "--" or at the first argument that is not an option.
void check_option_words(int argc, char** argv, const option* longopts) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--") return;
    if (a.size() < 2 || a[0] != '-') return;
    if (a[1] != '-') {
      for (char c : a.substr(1))
        if (c != 'q' && c != 'h') {
          std::fprintf(stderr, "Unknown option: %c\n", c);
          usage(1);
        }
      continue;
    }
    const std::string_view body = a.substr(2);
    const size_t eq = body.find('=');
    const std::string name(body.substr(0, eq));
    const option* o = longopts;
    while (o->name != nullptr && name != o->name) ++o;
    if (o->name == nullptr) {
      std::fprintf(stderr, "Unknown option: %s\n", name.c_str());
      usage(1);
    }
    if (o->has_arg == no_argument && eq != std::string_view::npos) {
      std::fprintf(stderr, "Option %s does not take an argument\n", name.c_str());
      usage(1);
    }
    if (o->has_arg == required_argument && eq == std::string_view::npos) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "Option %s requires an argument\n", name.c_str());
        usage(1);
      }
      ++i;  // its value
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  enum { kConfig = 256, kTarget, kDebug, kWatch, kNotify, kRepair, kDelete, kRename, kVersion, kDryRun, kAllowMassDeletion };
  static const option longopts[] = {
      {"config", required_argument, nullptr, kConfig}, {"quiet", no_argument, nullptr, 'q'},
      {"target", required_argument, nullptr, kTarget}, {"debug", no_argument, nullptr, kDebug},
      {"help", no_argument, nullptr, 'h'},             {"watch", optional_argument, nullptr, kWatch},
      {"notify", no_argument, nullptr, kNotify},       {"repair", no_argument, nullptr, kRepair},
      {"delete", no_argument, nullptr, kDelete},       {"rename", no_argument, nullptr, kRename},
      {"version", no_argument, nullptr, kVersion},     {"dry-run", no_argument, nullptr, kDryRun},
      {"allow-mass-deletion", no_argument, nullptr, kAllowMassDeletion},
      {nullptr, 0, nullptr, 0},
  };
  std::optional<std::string> config_file;
  std::vector<std::string> targets;
  std::optional<unsigned long> watch;  // seconds; 0: the default
  bool notify = false, quiet = false, help = false, dry_run = false, allow_mass_deletion = false;
  int debug = 0, commands = 0;
  interimap::SyncMode mode = interimap::SyncMode::Sync;
  check_option_words(argc, argv, longopts);
  opterr = 1;
  int ch;
  // "+": options before MAILBOX arguments only (Getopt::Long's posix_default).
  while ((ch = getopt_long(argc, argv, "+qh", longopts, nullptr)) != -1) {
    switch (ch) {
      case kConfig: config_file = optarg; break;
      case 'q': quiet = true; break;
      case kTarget: targets.emplace_back(optarg); break;
      case kDebug: ++debug; break;
      case 'h': help = true; break;
      case kWatch: {
        watch = 0;
        if (optarg != nullptr && *optarg != '\0') {
          char* end = nullptr;
          const unsigned long v = std::strtoul(optarg, &end, 10);
          if (*end != '\0' || optarg[0] == '-') {
            std::fprintf(stderr, "Value \"%s\" invalid for option watch (number expected)\n", optarg);
            usage(1);
          }
          watch = v;
        }
        break;
      }
      case kNotify: notify = true; break;
      case kDryRun: dry_run = true; break;
      case kAllowMassDeletion: allow_mass_deletion = true; break;  // ours (issue 15)
      case kRepair: mode = interimap::SyncMode::Repair; ++commands; break;
      case kDelete: mode = interimap::SyncMode::Delete; ++commands; break;
      case kRename: mode = interimap::SyncMode::Rename; ++commands; break;
      case kVersion: std::printf("%s version %s\n", kName, INTERIMAP_VERSION); return 0;
      default: usage(1);
    }
  }
  if (help) usage(0);
  std::vector<std::string> args(argv + optind, argv + argc);
  // The reference's refusals of invalid combinations.
  if (commands > 1) usage(1);
  if (mode == interimap::SyncMode::Delete && args.empty()) usage(1);
  if (mode == interimap::SyncMode::Rename && args.size() != 2) usage(1);
  const bool has_command = commands == 1;
  if (has_command && (watch || notify)) usage(1);
  if (dry_run && (watch || notify)) usage(1);
  if (!targets.empty() && !(mode == interimap::SyncMode::Delete || mode == interimap::SyncMode::Rename)) usage(1);
  if ((watch || notify) && (!watch || *watch == 0)) watch = notify ? 900 : 60;
  for (auto& a : args) {
    std::string up = a;
    for (auto& c : up) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (up == "INBOX") a = "INBOX";  // INBOX is case-insensitive
    bool ok = !a.empty();
    for (unsigned char c : a)
      if (c == 0 || c > 0x7f) ok = false;
    if (!ok) {
      std::fprintf(stderr, "Invalid mailbox name %s\n", a.c_str());
      return 1;
    }
  }

  interimap::SyncTargets sync_targets;
  interimap::Logger logger;
  try {
    const interimap::Config config = interimap::Config::load(interimap::config_path(kName, config_file));
    // Checked after the configuration is read, as the reference does.
    if (!targets.empty()) {
      sync_targets = {false, false, false};
      for (const auto& t : targets)
        for (const auto& w : split_commas(t)) {
          if (w == "local")
            sync_targets.local = true;
          else if (w == "remote")
            sync_targets.remote = true;
          else if (w == "database")
            sync_targets.database = true;
          else {
            std::fprintf(stderr, "Invalid target %s\n", w.c_str());
            return 1;
          }
        }
    }
    interimap::SyncSettings settings = interimap::SyncSettings::from_config(config);
    settings.mode = mode;
    settings.mailboxes = args;
    settings.targets = sync_targets;
    settings.watch = watch.has_value();
    settings.notify = notify;
    settings.dry_run = dry_run;
    if (dry_run) logger.set_marker("(dry run) ");
    settings.mass_deletion.allow = allow_mass_deletion;
    logger.set_quiet(quiet);
    logger.set_debug(debug);
    settings.configure_logger(logger);

    // SIGTERM, SIGINT, SIGHUP: finish the mailbox in progress, log out, exit 0.
    const interimap::StopSignals stop;
    settings.interrupted = [&stop] { return stop.received() != 0; };
    // --watch / --notify: a server ending the session (its OAuth access
    // token expired, say) is answered with a new session, whose
    // connections run password-command again for a fresh secret; at most
    // one such reconnection every kReconnectInterval, and only for a side
    // whose secret comes from a command.
    constexpr auto kReconnectInterval = std::chrono::seconds(30);
    std::optional<std::chrono::steady_clock::time_point> last_reconnect;
    auto reconnectable = [&](const interimap::Error& e) {
      if (!watch || stop.received() != 0 || !interimap::may_be_expired_session(e)) return false;
      if (last_reconnect && std::chrono::steady_clock::now() - *last_reconnect < kReconnectInterval) return false;
      return std::any_of(settings.connections.begin(), settings.connections.end(), [&](const auto& c) {
        return c.name == e.component() && !c.password_command.empty();
      });
    };
    while (true) {
      interimap::SyncSession session(settings, logger);
      try {
        session.open();
        if (watch)
          interimap::watch(session, interimap::WatchOptions{*watch, notify}, stop, logger);
        else if (stop.received() == 0)
          session.run();
      } catch (const interimap::Error& e) {
        if (reconnectable(e)) {
          logger.warning(e.component(),
                         std::string(e.message()) + "; reconnecting (password-command runs again)");
          session.close();
          last_reconnect = std::chrono::steady_clock::now();
          continue;
        }
        report(logger, e);
        session.close();
        return 1;
      }
      session.close();
      if (dry_run) {
        // A stopped dry run saw only part of what there is to do.
        if (stop.received() != 0) {
          logger.error("", "dry run stopped by a signal: the plan above is incomplete");
          return 1;
        }
        if (interimap::report_dry_run(session, logger)) return kChangesPending;
      }
      break;
    }
  } catch (const interimap::ConfigError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  } catch (const interimap::Error& e) {
    report(logger, e);
    return 1;
  } catch (const std::exception& e) {
    logger.error("", e.what());
    return 1;
  }
  return 0;
}
