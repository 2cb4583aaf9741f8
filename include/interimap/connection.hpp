// An authenticated IMAP connection (interimap's [local] or [remote], a
// pullimap account): transport, TLS, authentication, COMPRESS, capabilities.
#pragma once

#include <interimap/export.hpp>

#include <interimap/log.hpp>
#include <interimap/options.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace interimap {

namespace detail::imap {
class Client;
class ConnectionInternal;
}  // namespace detail::imap

// A mailbox as LIST (with RETURN (STATUS ...) where supported) reports it.
struct INTERIMAP_API MailboxInfo {
  std::string name;                 // as on the wire (modified UTF-7)
  std::optional<char> delimiter;    // hierarchy delimiter; nullopt for NIL
  std::vector<std::string> flags;   // LIST flags: \Noselect, \HasChildren, \Subscribed...
  std::optional<uint32_t> messages, uidnext, uidvalidity;
  std::optional<uint64_t> highestmodseq;
  bool selectable() const;          // no \Noselect or \NonExistent flag
  bool subscribed() const;          // \Subscribed flag
  bool operator==(const MailboxInfo&) const = default;
};

// What a server announced without being asked, since the last
// Connection::take_activity() (recorded once track_activity(true) or
// notify_set()): RFC 5465 NOTIFY's STATUS and LIST responses, and the
// EXISTS, VANISHED and FETCH responses about the selected mailbox.
struct ServerActivity {
  // Wire names of the mailboxes an unrequested STATUS response was about
  // (new or expunged messages, flag changes), sorted, each once.
  std::vector<std::string> mailboxes;
  // An unrequested LIST response: a mailbox was created, deleted, renamed,
  // subscribed or unsubscribed (RFC 5465 MailboxName, SubscriptionChange).
  bool mailbox_list = false;
  // EXISTS, EXPUNGE, VANISHED (not EARLIER) or FETCH: the selected mailbox
  // changed.  These also answer SELECT and FETCH commands, so after
  // commands this means "maybe".
  bool selected = false;
  // [NOTIFICATIONOVERFLOW] (RFC 5465 5.8): the server stopped notifying;
  // call notify_set() again and look at everything.
  bool overflow = false;
  bool any() const { return !mailboxes.empty() || mailbox_list || selected || overflow; }
};

// The bytes exchanged with a server: IMAP bytes (decompressed), and with
// COMPRESS=DEFLATE the compressed bytes on the wire since it began.
struct ServerTraffic {
  uint64_t received = 0, sent = 0;
  std::optional<uint64_t> received_compressed, sent_compressed;
};
// The reference's closing line: "IMAP traffic (bytes): recv N [(compr. C,
// factor F)] sent N [(compr. C, factor F)]", sizes from 1 KiB up with two
// decimals and K, M or G.
INTERIMAP_API std::string describe(const ServerTraffic& traffic);

// The completion of a command whose NO or BAD the caller may survive
// (doc/design.md "Errors": a NO or BAD the caller may survive is a value).
struct INTERIMAP_API CommandStatus {
  enum class Kind { Ok, No, Bad };
  Kind kind = Kind::Ok;
  std::string code;       // response code name without brackets, e.g. "TRYCREATE"; "" if none
  // The rest inside the brackets, as sent, for the codes the library does
  // not interpret (e.g. "[ALREADYEXISTS]", "[BADCHARSET (...)]"); "" if none.
  std::string code_data;
  std::string text;       // the server's human-readable text
  bool ok() const { return kind == Kind::Ok; }
  // "NO [CODE data] text", "BAD text", "OK text".
  std::string describe() const;
};

class Error;
struct PlannedChanges;  // interimap/dry_run.hpp

// Whether an error that ended a long run (interimap --watch / --notify,
// pullimap --idle) may be the server ending the session because its
// credentials expired, as servers do with OAuth 2.0 access tokens: a BYE
// or a closed connection (NetworkError), or a NO [AUTHENTICATIONFAILED],
// [AUTHORIZATIONFAILED] or [EXPIRED] (RFC 5530).  A new connection, with
// a fresh secret from password-command, may go on.
INTERIMAP_API bool may_be_expired_session(const Error& error);

class INTERIMAP_API Connection {
 public:
  // Nothing is opened until open().  The logger must outlive the connection.
  Connection(ConnectionOptions options, Logger& logger);
  ~Connection();
  Connection(Connection&&) noexcept;
  Connection& operator=(Connection&&) noexcept;

  // Connects (tunnel, TCP, SOCKS5, TLS), reads the greeting, upgrades with
  // STARTTLS, authenticates with the first advertised mechanism of
  // options().auth, and turns COMPRESS=DEFLATE on per options().compress.
  // Throws NetworkError, ProtocolError or CommandError; each names the
  // connection (options().name) and what failed.
  void open();
  // How close() ends the session.  Hangup closes without LOGOUT: for a
  // tunnel, the end of its input ends the session as LOGOUT would (the
  // commands sent have all completed), one round trip and about 80 bytes
  // fewer, as the reference ends every run.
  enum class Goodbye { Logout, Hangup };
  // Sends LOGOUT (unless Hangup) and closes; never throws.
  void close(Goodbye goodbye = Goodbye::Logout) noexcept;
  bool is_open() const;

  const ConnectionOptions& options() const;
  const std::string& name() const;
  // Logs to this logger from now on (it must outlive the connection or
  // the next call): the sync engine's workers capture each mailbox's lines.
  void set_logger(Logger& logger);
  // Capabilities as last announced (case preserved).
  const std::vector<std::string>& capabilities() const;
  // Case-insensitive test, e.g. has_capability("QRESYNC"), ("AUTH=PLAIN").
  bool has_capability(std::string_view capability) const;
  // Throws ProtocolError "NAME: server lacks required capability CAP" when missing.
  void require_capability(std::string_view capability) const;
  // From now on, has_capability() says no to these even when advertised,
  // and the library does not use them (interimap's change-tracking for a
  // server that implements an extension badly).  capabilities() still
  // lists what the server announced.
  void ignore_capabilities(const std::vector<std::string>& capabilities);
  // True once COMPRESS=DEFLATE is active / once the transport is TLS.
  bool compressed() const;
  bool encrypted() const;

  // ENABLE (RFC 5161) the given capabilities; returns those the server enabled.
  std::vector<std::string> enable(const std::vector<std::string>& capabilities);

  // LIST [(SELECT-OPTS)] reference (patterns...) [RETURN (SUBSCRIBED STATUS (...))]:
  // with LIST-STATUS the STATUS items come in the same round trip, else one
  // STATUS per selectable mailbox is pipelined.  Patterns are wire names
  // (modified UTF-7, wildcards * and %).  The STATUS items are UIDNEXT,
  // UIDVALIDITY, HIGHESTMODSEQ (with CONDSTORE) and, when with_messages,
  // MESSAGES (interimap does without it: fewer bytes per poll).
  std::vector<MailboxInfo> list(const std::vector<std::string>& patterns,
                                const std::vector<std::string>& select_opts = {},
                                std::string_view reference = "", bool with_status = true,
                                bool with_messages = true);
  // list() in two halves, so that one thread can keep several servers
  // busy at once: list_begin() sends the command and returns; list_end()
  // waits for its answer.  Other commands may be sent in between.
  class PendingList {
   public:
    PendingList() = default;
    struct State;  // opaque

   private:
    friend class Connection;
    std::shared_ptr<State> state_;
  };
  PendingList list_begin(const std::vector<std::string>& patterns, const std::vector<std::string>& select_opts = {},
                         std::string_view reference = "", bool with_status = true, bool with_messages = true);
  std::vector<MailboxInfo> list_end(PendingList& pending);
  // Mailbox commands (RFC 3501 6.3.3-6.3.7) on wire names (modified
  // UTF-7).  A NO or BAD is returned, not thrown: the caller decides
  // (interimap warns about a failed CREATE and stops at a failed DELETE).
  // In dry-run mode nothing is sent: the command is recorded and OK
  // returned (a mailbox so created is then emulated, empty, by Mailbox).
  [[nodiscard]] CommandStatus create(std::string_view mailbox);          // CREATE
  // Several CREATEs pipelined (one round trip, not one per mailbox): the
  // status of each, in order.
  [[nodiscard]] std::vector<CommandStatus> create(const std::vector<std::string>& mailboxes);
  [[nodiscard]] CommandStatus delete_mailbox(std::string_view mailbox);  // DELETE
  [[nodiscard]] CommandStatus rename(std::string_view from, std::string_view to);  // RENAME
  [[nodiscard]] CommandStatus subscribe(std::string_view mailbox);
  [[nodiscard]] CommandStatus unsubscribe(std::string_view mailbox);
  // LIST reference "" (RFC 3501 6.3.8; the basic form, not LIST-EXTENDED:
  // servers answer the empty pattern only in the basic form): the
  // hierarchy delimiter of the reference (or of the root), nullopt for a
  // flat namespace (NIL).  Throws ProtocolError "NAME: Missing or
  // unexpected (unsolicited) LIST response." (component() NAME) unless
  // exactly one LIST response (LSUB aside) came.
  std::optional<char> hierarchy_delimiter(std::string_view reference = "");
  // APPEND one message; returns the APPENDUID (UIDVALIDITY, UID) when the
  // server gives it.  Unlike Mailbox::append, it needs no UIDPLUS: a
  // server without it still takes the message (no UIDs come back).  In
  // dry-run mode it is recorded, not sent, and nullopt returned.
  std::optional<std::pair<uint32_t, uint32_t>> append(std::string_view mailbox, std::string_view message,
                                                      const std::vector<std::string>& flags = {},
                                                      std::string_view internaldate = "");
  // NOOP, processing whatever the server sends.
  void noop();
  // UNSELECT (RFC 3691) the selected mailbox, back to the authenticated
  // state without expunging; a NO or BAD (nothing was selected) is
  // ignored.  Precondition: the server advertises UNSELECT.
  void unselect();
  // Closes the stream at once without LOGOUT and without reading what the
  // server is still sending (commands in flight are forgotten): to give up
  // on a connection in the middle of a long answer.  Never throws.
  void abort() noexcept;

  // RFC 5465 NOTIFY SET with interimap's --notify event set:
  //   (SELECTED (MessageNew MessageExpunge FlagChange))
  //   (MAILBOXES (mailboxes...) (MessageNew MessageExpunge FlagChange))
  //   (PERSONAL (MailboxName SubscriptionChange))
  // `mailboxes` are wire names (none: no MAILBOXES group).  Replaces an
  // earlier NOTIFY SET (a NOTIFY NONE goes first, in the same write: see
  // connection.cpp), and turns track_activity() on.  Throws
  // ProtocolError "NAME: server lacks required capability NOTIFY ..." when
  // it is not advertised, CommandError for a NO/BAD (e.g. [BADEVENT]).
  void notify_set(const std::vector<std::string>& mailboxes);
  // NOTIFY NONE: no more notifications.
  void notify_none();
  // Start or stop recording ServerActivity; take it (and forget it).
  void track_activity(bool on);
  ServerActivity take_activity();

  enum class WaitResult {
    Data,     // at least one connection had data; it was read and dispatched
    Woken,    // wake_fd became readable (nothing was read from it)
    Timeout,  // nothing within the timeout
  };
  // Waits until one of the open connections has data, wake_fd (if >= 0)
  // is readable, or the timeout passes; reads and dispatches what each
  // ready connection sent (its untagged responses update the Mailbox
  // state and ServerActivity as usual).  Data already buffered (TLS,
  // DEFLATE) counts at once.  Throws NetworkError when a connection was
  // closed (naming it), ProtocolError for a malformed response.
  static WaitResult wait_any(const std::vector<Connection*>& connections, std::chrono::milliseconds timeout,
                             int wake_fd = -1);

  // The bytes exchanged so far; still available after close().
  ServerTraffic traffic() const;
  // With options().dry_run: what was asked of the server and not sent
  // (include/interimap/dry_run.hpp); otherwise always empty.
  const PlannedChanges& planned_changes() const;

 private:
  friend class detail::imap::ConnectionInternal;
  std::unique_ptr<detail::imap::Client> client_;
};

}  // namespace interimap
