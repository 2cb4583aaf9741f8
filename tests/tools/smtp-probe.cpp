// smtp-probe: drives libinterimap's SMTP/LMTP client (libinterimap/smtp)
// for tests/integration/test_smtp.py.
//
//   smtp-probe deliver [--rcpt R]... [--from ADDR] [--ehlo NAME] [--chunk N]
//                      [--debug] [--no-quit] METHOD FILE...
//       Delivers each FILE in one session to METHOD (a deliver-method,
//       "smtp:[127.0.0.1]:25"), the reverse-path ADDR (default "" = "<>"),
//       each recipient R (default: the effective user's name, as
//       pullimap).  Prints per file "DELIVERED FILE" or "REFUSED FILE:
//       STAGE: REPLY", then "EXTENSIONS KEYWORD..." and "STATS N SECONDS
//       MSG/S".  --chunk N hands each message to the client in N-byte
//       pieces (begin/write/end) instead of whole.  --debug traces the
//       session on stderr.  Exit 0 when all were delivered, 2 when some
//       were refused, 1 on another error ("smtp-probe: MESSAGE" on stderr).
//   smtp-probe encode [--chunk N] FILE
//       Writes FILE's DATA encoding (dot-stuffed, CRLF, end of data) to
//       stdout, handing it to the encoder in N-byte pieces.
//   smtp-probe mailbox LOCAL DOMAIN
//       Prints "<MAILBOX>" as envelope_mailbox() builds it ("NIL" for an
//       absent part).
//   smtp-probe method VALUE
//       Prints the parsed deliver-method as "PROTOCOL ADDRESS PORT", or
//       exits 1 with the error.
#include "probe_util.hpp"
#include "smtp/smtp_client.hpp"

#include <interimap/error.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <pwd.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace smtp = interimap::detail::smtp;

namespace {

using probe::read_file;

std::optional<std::string> nil_or(const std::string& s) {
  if (s == "NIL") return std::nullopt;
  return s;
}

std::string effective_user() {
  const passwd* pw = ::getpwuid(::geteuid());
  if (pw == nullptr) throw interimap::Error("no user name for the effective user ID");
  return pw->pw_name;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"smtp-probe: exercise libinterimap's SMTP/LMTP client"};
  app.require_subcommand(1);

  std::vector<std::string> rcpts, files;
  std::string method, from, ehlo = std::string(smtp::kDefaultDeliverEhlo), file, local, domain;
  size_t chunk = 0;
  bool debug = false, no_quit = false;

  auto* deliver = app.add_subcommand("deliver", "deliver files in one session");
  // One value per --rcpt, or a vector option would swallow METHOD and FILEs.
  deliver->add_option("--rcpt", rcpts, "recipient (repeatable)")->allow_extra_args(false);
  deliver->add_option("--from", from, "reverse-path");
  deliver->add_option("--ehlo", ehlo, "EHLO/LHLO name");
  deliver->add_option("--chunk", chunk, "hand messages over in pieces of this size");
  deliver->add_flag("--debug", debug, "trace the session on stderr");
  deliver->add_flag("--no-quit", no_quit, "close without QUIT");
  deliver->add_option("method", method, "deliver-method")->required();
  deliver->add_option("files", files, "messages")->required();

  auto* encode = app.add_subcommand("encode", "print the DATA encoding of a file");
  encode->add_option("--chunk", chunk, "piece size");
  encode->add_option("file", file, "message")->required();

  auto* mailbox = app.add_subcommand("mailbox", "print envelope_mailbox(LOCAL, DOMAIN)");
  mailbox->add_option("local", local)->required();
  mailbox->add_option("domain", domain)->required();

  auto* parse = app.add_subcommand("method", "parse a deliver-method");
  parse->add_option("value", method)->required();

  CLI11_PARSE(app, argc, argv);

  try {
    if (*encode) {
      const std::string message = read_file(file);
      smtp::DataEncoder encoder;
      std::string out;
      const size_t step = chunk == 0 ? message.size() + 1 : chunk;
      for (size_t i = 0; i < message.size(); i += step) encoder.encode(std::string_view(message).substr(i, step), out);
      encoder.finish(out);
      std::fwrite(out.data(), 1, out.size(), stdout);
      return 0;
    }
    if (*mailbox) {
      fmt::print("<{}>\n", smtp::envelope_mailbox(nil_or(local), nil_or(domain)));
      return 0;
    }
    if (*parse) {
      smtp::Endpoint ep = smtp::parse_deliver_method(method);
      fmt::print("{} {} {}\n", ep.protocol == smtp::Protocol::Lmtp ? "lmtp" : "smtp", ep.address, ep.port);
      return 0;
    }

    smtp::ClientOptions options;
    options.endpoint = smtp::parse_deliver_method(method);
    options.helo_name = ehlo;
    options.name = "smtp-probe";
    if (debug) options.trace = [](std::string_view line) { fmt::print(stderr, "{}\n", line); };
    if (rcpts.empty()) rcpts.push_back(effective_user());
    smtp::Client client(std::move(options));

    bool refused_any = false;
    const auto start = std::chrono::steady_clock::now();
    for (const std::string& path : files) {
      const std::string message = read_file(path);
      try {
        if (chunk == 0) {
          client.deliver(from, rcpts, message);
        } else {
          client.begin(from, rcpts, smtp::has_8bit(message));
          for (size_t i = 0; i < message.size(); i += chunk) client.write(std::string_view(message).substr(i, chunk));
          client.end();
        }
        fmt::print("DELIVERED {}\n", path);
      } catch (const smtp::DeliveryError& e) {
        refused_any = true;
        fmt::print("REFUSED {}: {}: {}\n", path, e.stage(), e.reply().to_string());
      }
      std::fflush(stdout);
    }
    const std::vector<std::string> extensions(client.extensions().begin(), client.extensions().end());
    if (!no_quit) client.quit();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print("EXTENSIONS {}\n", fmt::join(extensions, " "));
    fmt::print("STATS {} {:.3f} {:.1f}\n", files.size(), seconds, seconds > 0 ? static_cast<double>(files.size()) / seconds : 0.0);
    return refused_any ? 2 : 0;
  } catch (const std::exception& e) {
    return probe::fail("smtp-probe", e);
  }
}
