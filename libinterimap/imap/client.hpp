// The IMAP client engine under interimap::Connection: one stream, a
// framing reader, pipelined commands (many tags in flight, doc/design.md
// "Pipelining") and dispatch of responses by shape (doc/design.md
// "Dispatching responses").
#pragma once

#include "imap/command.hpp"
#include "imap/dry_run.hpp"
#include "imap/mailbox_session.hpp"
#include "imap/parser.hpp"
#include "imap/response.hpp"
#include "net/stream.hpp"

#include <interimap/connection.hpp>
#include <interimap/log.hpp>
#include <interimap/options.hpp>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace interimap::detail::imap {

class Client {
 public:
  // Gets each untagged response; returns true when it consumed it.
  using UntaggedHandler = std::function<bool(const Response&)>;

  Client(ConnectionOptions options, Logger& logger);
  ~Client();

  // Opens the transport and performs greeting, STARTTLS, authentication
  // and COMPRESS (see Connection::open).
  void open();
  // LOGOUT (waiting for the BYE and tagged OK) unless !logout, then
  // closes; never throws.
  void close(bool logout = true) noexcept;
  bool is_open() const { return stream_ != nullptr; }

  const ConnectionOptions& options() const { return options_; }
  const std::string& name() const { return options_.name; }
  Logger& logger() { return *logger_; }
  void set_logger(Logger& logger) { logger_ = &logger; }

  const std::vector<std::string>& capabilities() const { return capabilities_; }
  // From now on has_capability() says no to these, advertised or not.
  void ignore_capabilities(std::vector<std::string> caps);
  bool has_capability(std::string_view cap) const;
  void require_capability(std::string_view cap) const;
  bool compressed() const { return compressed_; }
  bool encrypted() const { return encrypted_; }
  // The literal form commands should use (LITERAL+, LITERAL- or synchronizing).
  LiteralMode literal_mode() const;
  // A builder using literal_mode().
  CommandBuilder command(std::string_view name) const { return CommandBuilder(name, literal_mode()); }

  // Queues a command and writes it as far as possible without waiting
  // (pipelining).  `on_untagged`, if set, is offered the untagged responses
  // that arrive while this is the oldest command in flight with a handler.
  // Returns the command's id for wait().
  uint64_t send(Command cmd, UntaggedHandler on_untagged = {});
  // Reads and dispatches responses until command `id` completes.  OK
  // returns its status; NO or BAD throws CommandError naming the command,
  // unless allow_failure, when it is returned.
  StatusResponse wait(uint64_t id, bool allow_failure = false);
  // send() then wait().
  StatusResponse run(Command cmd, UntaggedHandler on_untagged = {}, bool allow_failure = false) {
    return wait(send(std::move(cmd), std::move(on_untagged)), allow_failure);
  }
  // Number of commands sent or queued but not completed.
  size_t in_flight() const { return inflight_.size(); }

  // Handler for untagged responses no command handler consumed (the
  // connection-level state is updated before handlers see anything).
  void set_untagged_handler(UntaggedHandler handler) { untagged_ = std::move(handler); }
  // Chooses which literals stream to a sink (FETCH bodies).
  void set_sink_chooser(ResponseReader::SinkChooser chooser) { reader_.set_sink_chooser(std::move(chooser)); }

  // IDLE (RFC 2177): sends IDLE and returns once the server's continuation
  // request came (or the command already completed, e.g. with a NO);
  // meanwhile and afterwards untagged responses go to `on_untagged` and
  // the untagged handler as usual; read them with poll().  Commands sent
  // later wait until idle_done().  Returns the command's id.
  uint64_t idle_start(UntaggedHandler on_untagged = {});
  // Ends IDLE command `id` with DONE (unless it already completed) and
  // waits for its completion, as wait() does.
  StatusResponse idle_done(uint64_t id, bool allow_failure = false);
  // Closes the stream at once, without LOGOUT and without reading what
  // the server is still sending (commands in flight are forgotten): to
  // give up on a connection in the middle of a long answer.  Never throws.
  void abort() noexcept;

  // From now on (or no longer), records what the server announces on its
  // own (ServerActivity, interimap/connection.hpp) for take_activity():
  // the watch loop's NOTIFY (RFC 5465) support.
  void track_activity(bool on) { track_activity_ = on; }
  // Returns and forgets what was recorded since the last call.
  ServerActivity take_activity();
  // The bytes exchanged so far (also after close()).
  ServerTraffic traffic() const;

  // Reads and dispatches what arrives within timeout_ms (-1: wait forever);
  // returns false if nothing arrived.  For IDLE and NOTIFY.
  bool poll(int timeout_ms);
  // The descriptor to poll, and whether input is already buffered.
  int fd() const;
  bool buffered() const;

  // The Mailbox layer's state of this connection (imap/mailbox.cpp).
  MailboxSession& mailbox_session() { return mailbox_session_; }
  // With options().dry_run, the dry-run state (imap/dry_run.hpp); else null.
  DryRunState* dry_run() { return dry_run_.get(); }

 private:
  struct Pending {
    uint64_t id;
    std::string tag;
    Command cmd;
    size_t next_chunk = 0;  // chunks sent so far
    UntaggedHandler handler;
    bool manual_continuation = false;  // IDLE: the next chunk waits for idle_done()
    bool continued = false;            // a continuation request came for it
    // AUTHENTICATE: the line answering each continuation request (without CRLF).
    std::function<std::string(std::string_view)> on_continuation;
    bool done = false;
    StatusResponse status;
  };

  void greeting();
  void refresh_capabilities();
  void starttls();
  void authenticate();
  void start_compress();
  void set_capabilities(std::vector<std::string> caps);

  void pump_sends();
  // Reads once from the stream (blocking) and dispatches every complete response.
  void read_some();
  void dispatch(std::string_view raw);
  void trace_out(const Pending& p, size_t first, size_t last);
  // Appends chunk p.next_chunk and the chunks sent with it to parts.
  void send_chunks(Pending& p, std::vector<std::string_view>& parts);
  void write_parts(const std::vector<std::string_view>& parts);
  [[noreturn]] void lost(std::string_view why);
  // Forgets the stream, keeping its compressed byte counts for traffic().
  void drop_stream() noexcept;
  [[noreturn]] void command_failed(const Pending& p);
  // Records an untagged response into activity_; `claimed`: a command's
  // own handler consumed it (a solicited LIST or STATUS).
  void note_activity(const Response& r, bool claimed);

  ConnectionOptions options_;
  Logger* logger_;
  std::unique_ptr<detail::Stream> stream_;
  ResponseReader reader_;
  std::vector<std::string> capabilities_;
  std::vector<std::string> ignored_;  // ignore_capabilities()
  bool compressed_ = false;
  bool encrypted_ = false;
  bool preauth_ = false;
  bool bye_ = false;
  // During STARTTLS / COMPRESS: after their tagged OK no byte may follow
  // in the old layer (RFC 3501 6.2.1, RFC 4978 3).
  bool switching_ = false;
  bool switched_ = false;
  // During AUTHENTICATE: challenges are redacted below debug level 2.
  bool authenticating_ = false;
  std::string bye_text_;
  uint64_t next_id_ = 1;
  std::deque<Pending> inflight_;  // in sending order; front is the oldest
  UntaggedHandler untagged_;
  bool track_activity_ = false;
  ServerActivity activity_;
  ServerTraffic traffic_;  // IMAP bytes; the compressed counts come from the stream
  std::optional<std::pair<uint64_t, uint64_t>> closed_compressed_;  // the DEFLATE layer's, once closed
  std::pair<uint64_t, uint64_t> before_compress_{};  // traffic_ when COMPRESS started
  std::vector<char> buf_;
  MailboxSession mailbox_session_;
  std::unique_ptr<DryRunState> dry_run_;
};

}  // namespace interimap::detail::imap
