// pullimap's run (pullimap(1), CONTROL FLOW): the statefile, one IMAP
// connection with the mailbox selected, one SMTP/LMTP session per pull.
#include <interimap/connection.hpp>
#include <interimap/error.hpp>
#include <interimap/mailbox.hpp>
#include <interimap/pullsession.hpp>

#include "pull/statefile.hpp"
#include "smtp/smtp_client.hpp"
#include "util/ascii.hpp"

#include <fmt/format.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <set>
#include <vector>

namespace interimap {

namespace {

using detail::kMaxUid;
using detail::has_control;

using detail::pull::Statefile;
namespace smtp = detail::smtp;

// pullimap(1) purge-after: "if --idle is set then the SEARCH command is
// issued again every 12 hours".
constexpr std::chrono::hours kPurgeInterval{12};
// A bound on purge-after that keeps the SEARCH date after year 1.
constexpr uint64_t kMaxPurgeDays = 365000;

// The reference's /\A(\P{Control}+)\z/.
std::optional<std::string> printable_option(const Config& config, std::string_view section, std::string_view option) {
  auto value = config.get(section, option);
  if (!value) return value;
  if (value->empty()) config.fail(section, option, "must not be empty");
  if (has_control(*value)) config.fail(section, option, "must not hold control characters");
  return value;
}

std::string effective_user() {
  std::vector<char> buf(16384);
  struct passwd pw {};
  struct passwd* result = nullptr;
  const uid_t uid = ::geteuid();
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &result) != 0 || result == nullptr)
    throw ConfigError(fmt::format("deliver-rcpt is unset and the effective user ID {} has no user name; set "
                                  "deliver-rcpt",
                                  uid));
  return pw.pw_name;
}

// Thrown out of the delivery callback to end a fetch when a stop was requested.
struct StopRequested {};

}  // namespace

// ---------------------------------------------------------------------------
// PullOptions

PullOptions PullOptions::from_config(const Config& config, std::string_view section) {
  // The reference's usage: exactly one SECTION, not the default one.
  if (section.empty() || section == "_")
    throw ConfigError(fmt::format("{}: invalid section name \"{}\"", config.origin(), section));
  if (!config.has_section(section))
    throw ConfigError(fmt::format("{}: No such section {}", config.origin(), section));
  for (const auto& option : config.options(section))
    if (!is_pullimap_option(option))
      config.fail(section, option, "Invalid option (not a pullimap option)");

  PullOptions o;
  o.section = std::string(section);
  // pullimap(1): compress defaults to YES.
  o.connection = config.connection(section, true);
  o.connection.name = o.section;

  if (auto mailbox = config.get(section, "mailbox")) {
    // The reference's /\A([\x01-\x7F]+)\z/: modified UTF-7 is ASCII.
    if (mailbox->empty()) config.fail(section, "mailbox", "must not be empty");
    if (std::any_of(mailbox->begin(), mailbox->end(),
                    [](char c) { return c == '\0' || static_cast<unsigned char>(c) >= 0x80; }))
      config.fail(section, "mailbox", "must be ASCII (modified UTF-7, RFC 3501 5.1.3)");
    if (mailbox->find_first_of("\r\n") != std::string::npos)
      config.fail(section, "mailbox", "must not hold CR or LF");
    o.mailbox = *mailbox;
  }

  if (auto method = config.get(section, "deliver-method")) {
    try {
      (void)smtp::parse_deliver_method(*method);
    } catch (const ConfigError& e) {
      config.fail(section, "deliver-method", e.what());
    }
    o.deliver_method = *method;
  }

  if (auto ehlo = printable_option(config, section, "deliver-ehlo")) o.deliver_ehlo = *ehlo;

  if (auto rcpt = printable_option(config, section, "deliver-rcpt")) {
    // It goes between the brackets of RCPT TO:<...> as is.
    if (rcpt->find_first_of("<>") != std::string::npos)
      config.fail(section, "deliver-rcpt", "must not hold '<' or '>' (give the address alone)");
    o.deliver_rcpt = *rcpt;
  } else {
    o.deliver_rcpt = effective_user();
  }

  if (auto purge = config.get(section, "purge-after")) {
    // The reference's /\A(\d*)\z/; empty means no purge.
    if (!purge->empty()) {
      uint64_t days = 0;
      const char* end = purge->data() + purge->size();
      auto [ptr, ec] = std::from_chars(purge->data(), end, days);
      if (!std::all_of(purge->begin(), purge->end(), [](char c) { return c >= '0' && c <= '9'; }))
        config.fail(section, "purge-after", "must be a number of days (digits only)");
      if (ec != std::errc() || ptr != end || days > kMaxPurgeDays)
        config.fail(section, "purge-after", fmt::format("must be at most {} days", kMaxPurgeDays));
      o.purge_after = static_cast<uint32_t>(days);
    }
  }

  auto statefile = printable_option(config, section, "statefile");
  try {
    o.statefile = detail::pull::statefile_path(statefile, section, xdg_data_home());
  } catch (const detail::pull::StatefileError& e) {
    throw ConfigError(fmt::format("{}: [{}] statefile: {}", config.origin(), section, e.what()));
  }
  return o;
}

// ---------------------------------------------------------------------------
// PullSession

struct INTERIMAP_LOCAL PullSession::Impl {
  Impl(PullOptions options, Logger& logger, PullSession& owner)
      : opts(std::move(options)), log(logger), session(owner) {}

  PullOptions opts;
  Logger& log;
  PullSession& session;

  std::optional<Statefile> state;
  std::optional<Connection> imap;
  std::optional<Mailbox> mailbox;
  std::optional<smtp::Client> mta;
  std::vector<std::string> recipients;

  // The reference's persistent cache: every message below it was delivered
  // (or was there before the statefile was made).
  uint32_t known_next = 1;
  // EXISTS grew and no fetch looked at it yet.
  bool fresh = false;
  std::optional<std::chrono::steady_clock::time_point> last_purge;

  bool stopping() const { return session.stop_requested() || (opts.interrupted && opts.interrupted()); }

  // "NAME(MAILBOX)", as the log prefix writes it.
  std::string where() const { return fmt::format("{}({})", opts.section, opts.mailbox); }

  void info(std::string_view message) { log.log(LogLevel::Info, opts.section, opts.mailbox, message); }
  // A line about the session, without the mailbox ("acct: ...").
  void info_session(std::string_view message) { log.log(LogLevel::Info, opts.section, {}, message); }

  bool take_fresh() {
    fresh = mailbox->take_new_messages() || fresh;
    return std::exchange(fresh, false);
  }

  void run() {
    // 1. The statefile first, as the reference: a second pullimap on it
    //    fails before connecting anywhere.  The reference does not create
    //    it in --idle mode (a long-lived service needs a first run).
    state.emplace(opts.statefile, !opts.idle.has_value());

    smtp::ClientOptions mo;
    mo.endpoint = smtp::parse_deliver_method(opts.deliver_method);
    mo.helo_name = opts.deliver_ehlo;
    mo.name = opts.section;
    if (log.debug() > 0) mo.trace = [this](std::string_view line) { log.log(LogLevel::Debug, {}, {}, line); };
    try {
      mta.emplace(std::move(mo));
    } catch (const std::invalid_argument& e) {
      throw ConfigError(opts.section, fmt::format("deliver-ehlo: {}", e.what()));
    }
    recipients = {opts.deliver_rcpt};

    ConnectionOptions co = opts.connection;
    co.name = opts.section;
    // pullimap(1) --idle "also enables SO_KEEPALIVE on the socket".
    if (opts.idle) co.keepalive = true;
    imap.emplace(std::move(co), log);
    imap->open();
    mailbox.emplace(*imap, opts.mailbox);
    mailbox->select();

    // A new statefile gets UIDVALIDITY then UIDNEXT 1; an existing one must
    // hold this UIDVALIDITY (else the UIDs it records mean nothing).
    state->set_uidvalidity(mailbox->uidvalidity(), opts.mailbox);
    known_next = state->uidnext().value_or(1);
    // UIDs delivered during a fetch that did not finish: not delivered
    // again, marked \Seen by this pull.
    UidSet already;
    for (uint32_t uid : state->delivered()) already.insert(uid);

    try {
      pull(already);
      purge();
      if (opts.idle) watch();
    } catch (const StopRequested&) {
      // Stopped in the middle of a fetch: the UIDs delivered so far are in
      // the statefile, which the next run finishes.  Reading the rest of
      // the FETCH would only delay the exit.
      abort_mta();
      imap->abort();
      info("stopped; the next run resumes from the statefile");
      return;
    } catch (...) {
      // The statefile is consistent at every step; close the sessions
      // without waiting for a FETCH still streaming.
      abort_mta();
      imap->abort();
      throw;
    }
    if (stopping()) info("stopped");
    imap->close();
    // As the reference (unless --quiet, like every info line).
    info_session(describe(imap->traffic()));
  }

  // pullimap(1) step 6: IDLE, pull when messages arrive, purge.
  void watch() {
    const std::chrono::seconds period = opts.idle->count() > 0 ? *opts.idle : PullOptions::kDefaultIdle;
    while (!stopping()) {
      mailbox->idle(period, [this] { return stopping(); });
      if (stopping()) break;
      (void)mailbox->take_changes();
      if (take_fresh() || known_next < mailbox->uidnext().value_or(0)) {
        fresh = true;
        pull({});
      }
      purge();
    }
  }

  // Steps 1 to 5: fetch and deliver every message from known_next on
  // (except `already`), mark them \Seen, record the new UIDNEXT.
  void pull(const UidSet& already) {
    UidSet delivered;  // this pull's, to mark \Seen
    UidSet seen;       // marked \Seen already
    FetchOptions fo;
    fo.envelope = true;
    // BODY.PEEK[]: a message not delivered is not marked \Seen either.
    fo.body = !opts.no_delivery;
    const std::string mbox_name = opts.mailbox;

    auto on_message = [&](Message& m) {
      // Nothing delivered after a stop request; the message stays new.
      if (stopping()) throw StopRequested{};
      // The reverse-path: the ENVELOPE's sender (RFC 3501 7.4.2: the
      // Sender header, else From), as the reference takes it.
      std::string sender;
      if (!m.envelope_sender.empty())
        sender = smtp::envelope_mailbox(m.envelope_sender.front().mailbox, m.envelope_sender.front().host);
      info(fmt::format("UID {} from <{}> ({})", m.uid, sender, m.internaldate));
      if (!opts.no_delivery) {
        try {
          mta->deliver(sender, recipients, m.body);
        } catch (const smtp::DeliveryError& e) {
          std::string_view text = e.what();
          const std::string prefix = opts.section + ": ";
          if (text.starts_with(prefix)) text.remove_prefix(prefix.size());
          throw Error(fmt::format("{}: UID {} not delivered: {}", where(), m.uid, text));
        }
      }
      // Step 1.iii: recorded once the server took it (on disk on return).
      state->append_delivered(m.uid);
      delivered.insert(m.uid);
    };

    bool new_mail = take_fresh();
    while (true) {
      // The reference's pull_new_messages(): UID FETCH known_next:4294967295
      // minus the UIDs already delivered, when there can be anything.
      UidSet range = UidSet::range(known_next, kMaxUid);
      range.erase(already);
      // Without UIDNEXT (RFC 3501 makes it optional), always look.
      const uint32_t server_next = mailbox->uidnext().value_or(kMaxUid);
      if (!range.empty() && (range.ranges().front().first < server_next || new_mail))
        mailbox->fetch_messages(range, on_message, fo);
      // FETCHed UIDs raised the mailbox's UIDNEXT past them.
      known_next = std::max(known_next, mailbox->uidnext().value_or(known_next));
      new_mail = take_fresh();
      if (new_mail || known_next < mailbox->uidnext().value_or(0)) continue;

      // Step 3: \Seen on what this run delivered and on the UIDs the
      // statefile listed (delivered by an interrupted run).
      UidSet to_mark = delivered;
      to_mark.insert(already);
      to_mark.erase(seen);
      if (!to_mark.empty()) {
        mailbox->store_flags(to_mark, StoreMode::Add, {"\\Seen"});
        seen.insert(to_mark);
      }
      // Messages that arrived meanwhile go in this pull too.
      new_mail = take_fresh();
      if (!new_mail) break;
    }

    // Flag changes and expunges the server announced are of no use here;
    // dropping them keeps a long --idle run's memory flat.
    (void)mailbox->take_changes();
    // Step 2: end the SMTP/LMTP session gracefully (RFC 5321 4.5.3.2).
    quit_mta();
    // Steps 4 and 5: the new UIDNEXT, then truncate to 8 bytes.
    state->finish(known_next);
  }

  // The reference's purge(): remove delivered messages older than
  // purge-after days (all of them for 0).
  void purge() {
    if (!opts.purge_after) return;
    const uint32_t days = *opts.purge_after;
    while (known_next > 1) {
      UidSet set = UidSet::range(1, known_next - 1);
      if (days != 0) {
        const auto now = std::chrono::steady_clock::now();
        if (last_purge && now - *last_purge < kPurgeInterval) return;
        last_purge = now;
        // SEARCH BEFORE compares dates only, in the server's time zone
        // (RFC 3501 6.4.4): "at best 24h accurate", as pullimap(1) says.
        const std::string date =
            Mailbox::imap_date(std::chrono::system_clock::now() - std::chrono::hours(24) * days);
        set = mailbox->search(fmt::format("UID {} BEFORE {}", set.to_string(), date));
        if (!set.empty()) info(fmt::format("Removing {} UID(s) {}", set.size(), set.to_string()));
      }
      if (!set.empty()) mailbox->expunge(set);
      // Messages that arrived in the meantime: deliver them, then purge
      // again (with purge-after 0 they go at once, not at the next IDLE
      // wake-up; otherwise the interval check above ends the loop).
      if (!take_fresh()) return;
      fresh = true;
      pull({});
    }
  }

  void quit_mta() {
    if (!mta || !mta->connected()) return;
    mta->quit();
  }

  void abort_mta() noexcept {
    if (!mta || !mta->connected()) return;
    try {
      mta->quit();
    } catch (...) {
    }
  }
};

PullSession::PullSession(PullOptions options, Logger& logger)
    : impl_(std::make_unique<Impl>(std::move(options), logger, *this)) {}

PullSession::~PullSession() = default;

void PullSession::run() { impl_->run(); }

}  // namespace interimap
