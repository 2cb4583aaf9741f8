// pullimap(1): pull one IMAP mailbox and deliver each new message to an
// SMTP or LMTP server, keeping track of what was delivered in a statefile
// (the reference's format, see pullimap(1) CONTROL FLOW), optionally
// purging old messages and watching the mailbox with IDLE.
#pragma once

#include <interimap/export.hpp>

#include <interimap/config.hpp>
#include <interimap/log.hpp>
#include <interimap/options.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace interimap {

// One pullimap account: the options of its configuration section plus the
// command line's.  Defaults are those of pullimap(1) 0.5.7.
struct INTERIMAP_API PullOptions {
  // The configuration section (SECTION on the command line): the name in
  // log lines and error messages, and the default statefile name.
  std::string section;
  // type, host, port, proxy, command, STARTTLS, auth, username, password,
  // compress (default YES), null-stderr, SSL_*.
  ConnectionOptions connection;
  // mailbox: the wire name (modified UTF-7).  Default INBOX.
  std::string mailbox = "INBOX";
  // statefile, resolved: an absolute path, or relative to
  // $XDG_DATA_HOME/pullimap.  Default: the section name.
  std::string statefile;
  // deliver-method: "smtp:[ADDRESS]:PORT" or "lmtp:[ADDRESS]:PORT".
  std::string deliver_method = "smtp:[127.0.0.1]:25";
  // deliver-ehlo: the EHLO/LHLO domain.
  std::string deliver_ehlo = "localhost.localdomain";
  // deliver-rcpt: the envelope recipient.  Empty: the name of the
  // effective user (resolved by from_config()).
  std::string deliver_rcpt;
  // purge-after: days after which delivered messages are removed (0: right
  // after delivery); nullopt (unset or empty): never.
  std::optional<uint32_t> purge_after;
  // --no-delivery: record the state only, deliver nothing.
  bool no_delivery = false;
  // --idle[=SECONDS]: after the first pull, IDLE (RFC 2177) and pull again
  // when messages arrive; each IDLE lasts at most this long.  nullopt: pull
  // once and return.
  std::optional<std::chrono::seconds> idle;
  // Polled where request_stop() is (before each delivery, and at least
  // every half second during IDLE): once it returns true, run() stops as
  // after request_stop().  For SIGTERM and SIGINT (StopSignals).  Default:
  // none.
  std::function<bool()> interrupted;

  // The idle period of `--idle[=SECONDS]`: 0 (no value) means 29 minutes.
  static constexpr std::chrono::seconds kDefaultIdle{1740};

  // Reads SECTION of a pullimap configuration file as the reference does:
  // the default section's options, overridden by the section's; an option
  // pullimap does not know is an error, so is a bad value (each a
  // ConfigError naming the file, the section, the option and the value).
  // Resolves the statefile (creating $XDG_DATA_HOME/pullimap when missing,
  // as the reference does) and the default recipient.  Throws ConfigError
  // also for a missing section or the section "_".
  static PullOptions from_config(const Config& config, std::string_view section);
};

class INTERIMAP_API PullSession {
 public:
  // The logger must outlive the session.  Nothing happens until run().
  PullSession(PullOptions options, Logger& logger);
  ~PullSession();
  PullSession(const PullSession&) = delete;
  PullSession& operator=(const PullSession&) = delete;

  // Locks and reads the statefile, connects, SELECTs the mailbox, then
  // follows pullimap(1)'s CONTROL FLOW: delivers the messages at or above
  // the statefile's UIDNEXT (skipping the UIDs it lists as delivered),
  // marks them \Seen, records the new UIDNEXT, purges; with idle, IDLEs
  // and does it again as messages arrive, until request_stop() or
  // PullOptions::interrupted.  Returns normally when done or stopped.
  // Throws Error (ConfigError, NetworkError, ProtocolError,
  // CommandError...) with a message naming what failed and where: a
  // message the server refused names its UID and the server's reply; it is
  // not recorded as delivered.  Whatever happens, the statefile stays
  // consistent: a new run delivers every message not delivered yet, and
  // none twice (except the one in flight when the process is killed
  // between its delivery and its record).
  void run();

  // Asks run() to stop at the next safe point: before the next message
  // is delivered, or during IDLE (within half a second).  Async-signal-safe.
  void request_stop() noexcept { stop_.store(true); }
  bool stop_requested() const noexcept { return stop_.load(); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stop_{false};
  static_assert(std::atomic<bool>::is_always_lock_free, "request_stop() must be async-signal-safe");
};

}  // namespace interimap
