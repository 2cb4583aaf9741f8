// pullimap: pull mails from an IMAP mailbox and deliver them to an SMTP or
// LMTP server.  A drop-in for pullimap(1) 0.5.7: the same command line
// (parsed as the reference's Getopt::Long configuration does: permuted
// arguments, --opt=VALUE or --opt VALUE, bundled short options), the same
// configuration file; the work is PullSession's.
#include <interimap/config.hpp>
#include <interimap/connection.hpp>
#include <interimap/error.hpp>
#include <interimap/log.hpp>
#include <interimap/pullsession.hpp>
#include <interimap/stop_signals.hpp>

#include "interimap_config.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr const char* kName = "pullimap";

[[noreturn]] void usage(int status, std::string_view error = {}) {
  if (!error.empty()) std::fprintf(stderr, "%.*s\n", static_cast<int>(error.size()), error.data());
  std::fprintf(stderr, "Usage: %s [OPTIONS] SECTION\n", kName);
  if (status != 0) {
    std::fprintf(stderr, "Try '%s --help' or consult the manpage for more information.\n", kName);
  } else {
    std::fputs("Options: --config=FILE  --idle[=SECONDS]  --no-delivery  -q, --quiet  --debug (repeatable)\n"
               "         -h, --help  --version\n"
               "Consult the manpage for more information.\n",
               stderr);
    std::fputs(interimap::auth_options_help(kName).c_str(), stderr);
  }
  std::exit(status);
}

struct CommandLine {
  std::optional<std::string> config;
  std::optional<long> idle;
  bool no_delivery = false;
  bool quiet = false;
  int debug = 0;
  std::vector<std::string> args;
};

bool all_digits(std::string_view s) {
  return !s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string_view::npos;
}

CommandLine parse(int argc, char** argv) {
  CommandLine cl;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--") {
      for (++i; i < argc; ++i) cl.args.emplace_back(argv[i]);
      break;
    }
    if (arg.starts_with("--")) {
      std::string_view name = arg.substr(2);
      std::optional<std::string_view> value;
      if (auto eq = name.find('='); eq != std::string_view::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      }
      auto no_value = [&] {
        if (value) usage(1, "Option " + std::string(name) + " does not take an argument");
      };
      if (name == "config") {
        if (!value) {
          if (i + 1 >= argc) usage(1, "Option config requires an argument");
          value = argv[++i];
        }
        cl.config = std::string(*value);
      } else if (name == "idle") {
        // Getopt::Long's idle:i: an optional integer, in the same argument
        // or the next one when that is a number; none (or empty) means 0.
        if (!value && i + 1 < argc && all_digits(argv[i + 1])) value = argv[++i];
        if (value && !value->empty() && !all_digits(*value))
          usage(1, "Value \"" + std::string(*value) + "\" invalid for option idle (number expected)");
        cl.idle = value && !value->empty() ? std::strtol(std::string(*value).c_str(), nullptr, 10) : 0;
      } else if (name == "no-delivery") {
        no_value();
        cl.no_delivery = true;
      } else if (name == "quiet") {
        no_value();
        cl.quiet = true;
      } else if (name == "debug") {
        no_value();
        ++cl.debug;
      } else if (name == "help") {
        usage(0);
      } else if (name == "version") {
        std::printf("%s (interimap-cpp) %s\n", kName, INTERIMAP_VERSION);
        std::exit(0);
      } else {
        usage(1, "Unknown option: " + std::string(name));
      }
    } else if (arg.size() > 1 && arg[0] == '-') {
      // Bundled short options: -q, -h.
      for (char c : arg.substr(1)) {
        if (c == 'q')
          cl.quiet = true;
        else if (c == 'h')
          usage(0);
        else
          usage(1, std::string("Unknown option: ") + c);
      }
    } else {
      cl.args.emplace_back(arg);
    }
  }
  return cl;
}

}  // namespace

int main(int argc, char** argv) {
  CommandLine cl = parse(argc, argv);
  if (cl.args.size() != 1 || cl.args[0] == "_") usage(1);
  const std::string& section = cl.args[0];

  interimap::Logger logger;
  logger.set_quiet(cl.quiet);
  logger.set_debug(cl.debug);
  // SIGTERM and SIGINT, caught from just before the run until the process
  // exits, an error report included.
  std::optional<interimap::StopSignals> stop;
  try {
    // pullimap(1): a relative --config starts from $XDG_CONFIG_HOME/pullimap.
    if (cl.config && cl.config->empty()) throw interimap::ConfigError("--config: empty file name");
    const interimap::Config config = interimap::Config::load(interimap::config_path(kName, cl.config));
    interimap::PullOptions options = interimap::PullOptions::from_config(config, section);
    options.no_delivery = cl.no_delivery;
    if (cl.idle) options.idle = std::chrono::seconds(*cl.idle);

    // The first SIGTERM or SIGINT stops at the next safe point (the
    // statefile is consistent at every step anyway); a second one ends the
    // process at once.  SIGHUP keeps its default action.
    stop.emplace({SIGTERM, SIGINT});
    options.interrupted = [&stop] { return stop->received() != 0; };
    // --idle: a server ending the session (its OAuth access token
    // expired, say) is answered with a new session, whose connection runs
    // password-command again for a fresh secret; at most one such
    // reconnection every 30 s, and only with a password-command.
    std::optional<std::chrono::steady_clock::time_point> last_reconnect;
    while (true) {
      interimap::PullSession session(options, logger);
      try {
        session.run();
      } catch (const interimap::Error& e) {
        const auto now = std::chrono::steady_clock::now();
        if (!options.idle || stop->received() != 0 || options.connection.password_command.empty() ||
            !interimap::may_be_expired_session(e) || (last_reconnect && now - *last_reconnect < std::chrono::seconds(30)))
          throw;
        logger.warning(e.component(), std::string(e.message()) + "; reconnecting (password-command runs again)");
        last_reconnect = now;
        continue;
      }
      break;
    }
    // As interimap(1): SIGTERM is a normal end, SIGINT an interruption.
    return stop->received() == SIGINT ? 1 : 0;
  } catch (const std::exception& e) {
    logger.log(interimap::LogLevel::Error, kName, {}, e.what());
    return 1;
  }
}
