#include <interimap/error.hpp>
#include <interimap/mailbox.hpp>

#include "imap/client.hpp"
#include "imap/connection_internal.hpp"
#include "imap/mailbox_session.hpp"
#include "util/utf7.hpp"
#include "util/ascii.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <deque>
#include <exception>
#include <limits>
#include <map>
#include <stdexcept>

namespace interimap {

using detail::imap::BodyQueue;
using detail::imap::Client;
using detail::imap::ConnectionInternal;
using detail::imap::Command;
using detail::imap::EsearchData;
using detail::imap::ExistsData;
using detail::imap::ExpungeData;
using detail::imap::FetchData;
using detail::imap::FlagsData;
using detail::imap::LiteralSink;
using detail::imap::MailboxSession;
using detail::imap::RecentData;
using detail::imap::Response;
using detail::imap::ResponseCode;
using detail::imap::SearchData;
using detail::imap::StatusData;
using detail::imap::StatusResponse;
using detail::imap::VanishedData;

namespace {

using detail::iequals;
using detail::has_flag;
using detail::kMaxUid;

// Dovecot 2.3 gets into trouble with command lines past about 4 KiB; the
// reference splits UID sets at 4096 bytes (with_set).  We bound the whole
// line, tag and CRLF included.
constexpr size_t kMaxLine = 4096;
// The tag and its space: "000123 " now, one digit more after a million commands.
constexpr size_t kTagBudget = 12;
// The longest single range, "4294967294:4294967295".
constexpr size_t kMinSetBudget = 21;
// Pipelining window for commands whose answers are small or streamed: at
// most this many bytes of commands unanswered, so our writes always fit in
// the socket buffers and neither side can block the other.
constexpr size_t kWindowBytes = 64 * 1024;
constexpr size_t kWindowCommands = 16;


bool is_recent(std::string_view flag) { return iequals(flag, "\\Recent"); }

std::vector<std::string> without_recent(std::vector<std::string> flags) {
  flags.erase(std::remove_if(flags.begin(), flags.end(), [](const std::string& f) { return is_recent(f); }),
              flags.end());
  return flags;
}


// RFC 3501 9: flag = "\" atom / flag-keyword (an atom).  We refuse what
// would break the command's syntax (SP, parentheses, quotes, braces, list
// wildcards, CTL, 8-bit); "]" is let through, as some servers use it.
void check_flag(std::string_view flag) {
  std::string_view atom = flag.starts_with('\\') ? flag.substr(1) : flag;
  bool ok = !atom.empty();
  for (unsigned char c : atom)
    if (c <= 0x20 || c >= 0x7f || std::strchr("(){%*\"\\", c) != nullptr) ok = false;
  if (!ok) throw std::invalid_argument(fmt::format("invalid IMAP flag \"{}\"", flag));
}

std::string flag_list(const std::vector<std::string>& flags) {
  for (const auto& f : flags) check_flag(f);
  return fmt::format("({})", fmt::join(flags, " "));
}

const char* status_name(StatusResponse::Kind k) {
  switch (k) {
    case StatusResponse::Kind::Ok: return "OK";
    case StatusResponse::Kind::No: return "NO";
    case StatusResponse::Kind::Bad: return "BAD";
    case StatusResponse::Kind::Bye: return "BYE";
    case StatusResponse::Kind::Preauth: return "PREAUTH";
  }
  return "?";
}

size_t command_bytes(const Command& cmd) {
  size_t n = 0;
  for (const auto& c : cmd.chunks) n += c.size();
  return n;
}

// The UID set in pieces such that `fixed` bytes of command around each piece
// (verb, items, modifiers) plus tag and CRLF stay within kMaxLine.  Only a
// fixed part longer than about 4 KiB (hundreds of flags) can exceed it.
std::vector<std::string> split_set(const UidSet& set, size_t fixed) {
  const size_t overhead = kTagBudget + fixed + 2;
  const size_t budget = overhead + kMinSetBudget <= kMaxLine ? kMaxLine - overhead : kMinSetBudget;
  return set.split(budget);
}

EnvelopeAddress to_public(const detail::imap::Address& a) { return EnvelopeAddress{a.name, a.adl, a.mailbox, a.host}; }

std::vector<EnvelopeAddress> to_public(const std::vector<detail::imap::Address>& list) {
  std::vector<EnvelopeAddress> out;
  out.reserve(list.size());
  for (const auto& a : list) out.push_back(to_public(a));
  return out;
}

// Pipelined commands with a bounded window (doc/design.md "Pipelining"): a command is
// sent once the unanswered ones leave room for it; answers are handed to
// `done` in sending order.  After a failure nothing more should be sent
// (failed()), the commands in flight are still answered, and finish()
// rethrows the first exception `done` threw.  Any other exception (a lost
// connection, a protocol error, a callback's exception from a handler)
// propagates at once; the commands still unanswered are then left in
// `abandoned`, for the next operation to wait for (their handlers only
// hold shared state, so they stay safe to call).
class Window {
 public:
  using Done = std::function<void(size_t index, StatusResponse& status)>;
  Window(Client& client, std::vector<uint64_t>& abandoned, size_t max_bytes, size_t max_commands, Done done)
      : client_(client),
        abandoned_(abandoned),
        max_bytes_(max_bytes),
        max_commands_(max_commands),
        done_(std::move(done)) {}
  Window(const Window&) = delete;
  Window& operator=(const Window&) = delete;
  ~Window() {
    for (const Item& item : queue_) abandoned_.push_back(item.id);
  }

  void send(Command cmd, Client::UntaggedHandler handler, size_t index) {
    const size_t n = command_bytes(cmd);
    while (!queue_.empty() && (bytes_ + n > max_bytes_ || queue_.size() >= max_commands_)) complete_oldest();
    queue_.push_back({client_.send(std::move(cmd), std::move(handler)), n, index});
    bytes_ += n;
  }
  bool failed() const { return error_ != nullptr; }
  void finish() {
    while (!queue_.empty()) complete_oldest();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  struct Item {
    uint64_t id;
    size_t bytes;
    size_t index;
  };
  void complete_oldest() {
    const Item item = queue_.front();
    StatusResponse st = client_.wait(item.id, true);  // may throw: the item stays queued
    queue_.pop_front();
    bytes_ -= item.bytes;
    try {
      done_(item.index, st);
    } catch (...) {
      if (!error_) error_ = std::current_exception();
    }
  }

  Client& client_;
  std::vector<uint64_t>& abandoned_;
  size_t max_bytes_, max_commands_;
  Done done_;
  std::deque<Item> queue_;
  size_t bytes_ = 0;
  std::exception_ptr error_;
};

}  // namespace

// ---------------------------------------------------------------------------
// Per-connection state: the Client's MailboxSession (imap/mailbox_session.hpp)

// One mailbox's view of the server: what SELECT reported, raised by what
// arrives later, and the changes not yet taken (the reference's _VANISHED
// and _MODIFIED).
struct INTERIMAP_LOCAL Mailbox::State final : detail::imap::SelectedMailbox {
  struct Change {
    uint64_t modseq = 0;
    std::optional<std::vector<std::string>> flags;
  };

  Client* client = nullptr;
  MailboxSession* conn = nullptr;  // the client's
  // The client's dry-run state (imap/dry_run.hpp), null outside a dry run.
  detail::imap::DryRunState* dry = nullptr;
  // A dry run's mailbox that the server does not have (its CREATE was not
  // sent): selected locally, empty, nothing asked of the server.
  bool emulated = false;

  // A dry run's record of this mailbox (its expunges, for dry_gone()).
  PlannedChanges::MailboxChanges& planned() { return dry->planned.mailboxes[wire]; }
  // A message this dry run "expunged": the server still has it, but every
  // later read must not see it, as the real run's would not (recover()
  // expunges a copy, the pass after it must not copy that copy back).
  bool dry_gone(uint32_t uid) { return dry != nullptr && planned().expunged.contains(uid); }
  std::string wire;
  std::string display;  // UTF-8 for messages

  bool selected = false;
  bool selecting = false;  // between SELECT's sending and its tagged answer
  bool read_only = false;
  uint32_t uidvalidity = 0;
  std::optional<uint32_t> uidnext;
  std::optional<uint64_t> highestmodseq;
  bool nomodseq = false;
  uint32_t exists = 0;
  // EXISTS grew since the server last announced UIDNEXT: only then may a
  // message it returns have a UID at or above that UIDNEXT.
  bool grown_since_uidnext = false;
  bool new_messages = false;
  // Messages of our own APPENDs to this selected mailbox whose EXISTS has
  // not come yet: that growth is not news (no FETCH for it).
  uint32_t own_appends = 0;
  std::vector<std::string> flags, permanent_flags;
  UidSet vanished;
  std::map<uint32_t, Change> modified;

  std::string where() const { return fmt::format("{}: {}", client->name(), display); }

  // Waits for the commands an earlier operation abandoned (see
  // MailboxSession::abandoned); every operation starts with it.
  void settle() {
    auto& pending = conn->abandoned;
    if (!client->is_open()) pending.clear();
    while (!pending.empty()) {
      const uint64_t id = pending.front();
      client->wait(id, true);  // NO/BAD is for the abandoned operation, not ours
      pending.erase(pending.begin());
    }
  }

  // One command; left in `abandoned` if an exception cuts the wait short.
  StatusResponse run(Command cmd, Client::UntaggedHandler handler = {}) {
    const uint64_t id = client->send(std::move(cmd), std::move(handler));
    try {
      return client->wait(id, true);
    } catch (...) {
      conn->abandoned.push_back(id);
      throw;
    }
  }

  void reset() {
    uidvalidity = 0;
    uidnext.reset();
    highestmodseq.reset();
    nomodseq = false;
    exists = 0;
    grown_since_uidnext = false;
    new_messages = false;
    own_appends = 0;
    flags.clear();
    permanent_flags.clear();
    vanished.clear();
    modified.clear();
  }

  // UIDNEXT moves only on the server's evidence for this mailbox (doc/design.md
  // "Bounding what a server sends"): its UIDNEXT code, an APPENDUID, or the
  // UID of a message it returned for a UID FETCH that asked for it.  A
  // FETCH or VANISHED it volunteers moves nothing: one bogus UID would
  // otherwise stop all future mail.  `uid` < kMaxUid (checked by callers).
  void raise_uidnext(uint32_t uid) {
    const uint32_t next = uid + 1;
    if (!uidnext || *uidnext < next) uidnext = next;
  }
  // A message the server returned for our UID FETCH: its UID is at most
  // 4294967294 (UIDNEXT is a 32-bit nz-number above every UID, RFC 3501
  // 2.3.1.1 and 9), and below the announced UIDNEXT unless the mailbox
  // has grown since.
  void check_message_uid(uint32_t uid) const {
    if (uid == kMaxUid)
      throw ProtocolError(client->name(), fmt::format("{}: the server returned a message with UID {}, above any "
                                                      "valid UID (RFC 3501 2.3.1.1: UIDNEXT would overflow)",
                                                      display, uid));
    if (uidnext && uid >= *uidnext && !grown_since_uidnext)
      throw ProtocolError(client->name(),
                          fmt::format("{}: the server returned a message with UID {}, at or above its UIDNEXT {}, "
                                      "although no new message was announced (RFC 3501 2.3.1.1)",
                                      display, uid, *uidnext));
  }
  void raise_modseq(uint64_t modseq) {
    if (!highestmodseq || *highestmodseq < modseq) highestmodseq = modseq;
  }

  void require_selected(std::string_view operation) const {
    if (!selected)
      throw Error(client->name(),
                  fmt::format("{}: {}: mailbox not selected (select() it first, or it was deselected by "
                              "another selection on the connection)",
                              display, operation));
  }
  void require_writable(std::string_view operation) const {
    require_selected(operation);
    // A dry run EXAMINEs, and its writes are not sent (update(), append()).
    if (read_only && dry == nullptr)
      throw Error(client->name(), fmt::format("{}: {}: mailbox is selected read-only", display, operation));
  }
  // RFC 4315 2.1: UID EXPUNGE only removes the given UIDs, leaving
  // \Deleted messages of other clients alone.
  void require_uidplus() const {
    if (!client->has_capability("UIDPLUS"))
      throw ProtocolError(
          client->name(),
          fmt::format("{}: server lacks required capability UIDPLUS (RFC 4315) for UID EXPUNGE", display));
  }

  [[noreturn]] void command_failed(std::string_view command, std::string_view what, const StatusResponse& st) const {
    const std::string code = st.code.kind == ResponseCode::Kind::None ? "" : "[" + st.code.name + "] ";
    throw CommandError(client->name(),
                       fmt::format("{}: {} failed: {} {}{}", display, what, status_name(st.kind), code, st.text),
                       std::string(command), status_name(st.kind), st.code.name, st.text);
  }

  // A response code, untagged or on a tagged OK.  Returns whether it
  // concerns the mailbox.
  bool process_code(const ResponseCode& code) {
    switch (code.kind) {
      case ResponseCode::Kind::UidValidity: {
        const auto v = static_cast<uint32_t>(code.number);
        if (!selecting && uidvalidity != 0 && v != uidvalidity)
          throw Error(client->name(),
                      fmt::format("{}: UIDVALIDITY changed! ({} != {})  Need to invalidate the UID cache.", display,
                                  uidvalidity, v));
        uidvalidity = v;
        return true;
      }
      case ResponseCode::Kind::UidNext:
        // RFC 3501 7.1: during SELECT it is the value; later only a raise.
        if (selecting || !uidnext || *uidnext < code.number) {
          uidnext = static_cast<uint32_t>(code.number);
          grown_since_uidnext = false;
        }
        return true;
      case ResponseCode::Kind::HighestModSeq:
        if (selecting)
          highestmodseq = code.number;
        else
          raise_modseq(code.number);
        return true;
      case ResponseCode::Kind::NoModSeq:
        nomodseq = true;  // RFC 7162 3.1.2.2
        return true;
      case ResponseCode::Kind::PermanentFlags:
        permanent_flags = code.list;
        return true;
      case ResponseCode::Kind::ReadOnly:
        read_only = true;
        return true;
      case ResponseCode::Kind::ReadWrite:
        read_only = false;
        return true;
      default:
        return code.kind == ResponseCode::Kind::Other && code.name == "UNSEEN";
    }
  }

  // A FETCH response: raises HIGHESTMODSEQ; a flag update (no body, no
  // envelope) becomes a pending change.  UIDNEXT is not raised here (see
  // raise_uidnext).
  void record_fetch(const FetchData& f, bool record_change) {
    if (f.modseq) raise_modseq(*f.modseq);
    if (!f.uid) return;  // RFC 7162 3.2.4: without UID it cannot be tied to a message
    if (!record_change || f.body || f.body_streamed || f.envelope || (!f.flags && !f.modseq)) return;
    Change c{f.modseq.value_or(0), f.flags ? std::optional(without_recent(*f.flags)) : std::nullopt};
    // Keep the latest: a higher MODSEQ wins; at the same MODSEQ, known flags
    // replace unknown ones (the reference's rule).
    auto [it, fresh] = modified.try_emplace(*f.uid, c);
    if (!fresh && (c.modseq > it->second.modseq || (c.modseq == it->second.modseq && c.flags)))
      it->second = std::move(c);
  }

  // An untagged response while this mailbox is (being) selected.  Returns
  // whether it concerned the mailbox.
  bool process(const Response& r) override {
    if (const auto* st = std::get_if<StatusResponse>(&r.data)) {
      if (st->kind == StatusResponse::Kind::Bye || st->kind == StatusResponse::Kind::Preauth) return false;
      if (st->code.kind == ResponseCode::Kind::Closed) {
        // RFC 7162 3.2.11: a SELECT/EXAMINE not made through this object
        // (e.g. Connection::fetch_body) closed the mailbox.
        deselect();
        return true;
      }
      return process_code(st->code);
    }
    if (const auto* f = std::get_if<FlagsData>(&r.data)) {
      flags = f->flags;
      return true;
    }
    if (const auto* e = std::get_if<ExistsData>(&r.data)) {
      // RFC 3501 7.3.1: outside SELECT a larger EXISTS announces new messages.
      if (!selecting && e->count > exists) {
        const uint32_t grown = e->count - exists;
        const uint32_t ours = std::min(grown, own_appends);
        own_appends -= ours;
        if (grown > ours) new_messages = true;
        grown_since_uidnext = true;
      }
      exists = e->count;
      return true;
    }
    if (std::holds_alternative<RecentData>(r.data)) return true;
    if (std::holds_alternative<ExpungeData>(r.data)) {
      // RFC 7162 3.2.10: once QRESYNC is enabled the server MUST send
      // VANISHED instead of EXPUNGE; sequence numbers alone cannot tell us
      // which UID went (we keep no sequence-to-UID map).
      if (conn->qresync)
        throw ProtocolError(client->name(),
                            fmt::format("{}: server sent EXPUNGE while QRESYNC is enabled, violating RFC 7162 "
                                        "3.2.10 (VANISHED expected)",
                                        display));
      if (exists > 0) --exists;
      return true;
    }
    if (const auto* v = std::get_if<VanishedData>(&r.data)) {
      // Kept as sent (ranges, never expanded); the engine clips the set to
      // the UIDs it knows (clip_vanished) and UIDNEXT does not move.
      for (const auto& [first, last] : v->uids.ranges()) vanished.insert(first, last);
      // RFC 7162 3.2.10: VANISHED without (EARLIER) is like EXPUNGE, and
      // EXISTS need not follow.
      if (!v->earlier) exists -= static_cast<uint32_t>(std::min<uint64_t>(v->uids.size(), exists));
      return true;
    }
    if (const auto* f = std::get_if<FetchData>(&r.data)) {
      if (f->body_streamed) take_body();  // not ours to deliver, but keep the queue in step
      record_fetch(*f, true);
      return true;
    }
    return false;
  }

  std::string take_body() {
    auto body = conn->bodies.take();
    if (!body)
      throw ProtocolError(client->name(),
                          fmt::format("{}: internal error: FETCH body streamed but not queued", display));
    return std::move(*body);
  }

  void deselect() {
    selected = false;
    if (conn->selected.lock().get() == this) conn->selected.reset();
  }

  Changes take_changes() {
    Changes c;
    c.flags.reserve(modified.size());
    for (auto& [uid, change] : modified)
      if (!vanished.contains(uid) && !dry_gone(uid))
        c.flags.push_back(MessageFlags{uid, change.modseq, std::move(change.flags)});
    c.vanished = std::move(vanished);
    vanished.clear();
    modified.clear();
    return c;
  }
};

namespace {

// The connection's MailboxSession; the first use makes the responses no
// command claimed go to the selected mailbox (doc/design.md "Dispatching responses").
MailboxSession& session_of(Client& client) {
  MailboxSession& session = client.mailbox_session();
  if (!session.attached) {
    session.attached = true;
    client.set_untagged_handler([&session](const Response& r) {
      if (auto selected = session.selected.lock()) return selected->process(r);
      return false;
    });
  }
  return session;
}

}  // namespace

// ---------------------------------------------------------------------------
// Mailbox

Mailbox::Mailbox(Connection& connection, std::string wire_name)
    : connection_(&connection), state_(std::make_shared<State>()) {
  state_->client = &ConnectionInternal::client(connection);
  state_->conn = &session_of(*state_->client);
  state_->dry = state_->client->dry_run();
  if (iequals(wire_name, "INBOX")) wire_name = "INBOX";  // RFC 3501 5.1: case-insensitive
  try {
    state_->display = detail::mutf7_to_utf8(wire_name);
  } catch (const std::invalid_argument&) {
    state_->display = wire_name;
  }
  state_->wire = std::move(wire_name);
}

Mailbox::~Mailbox() {
  // No I/O here.  The server may keep the mailbox selected (the next
  // SELECT still expects its [CLOSED]); what it sends about it is dropped.
  if (state_ && state_->selected) state_->deselect();
}

Mailbox::Mailbox(Mailbox&&) noexcept = default;
Mailbox& Mailbox::operator=(Mailbox&& other) noexcept {
  if (this != &other) {
    if (state_ && state_->selected) state_->deselect();
    connection_ = other.connection_;
    state_ = std::move(other.state_);
  }
  return *this;
}

const std::string& Mailbox::name() const { return state_->wire; }
Connection& Mailbox::connection() const { return *connection_; }
bool Mailbox::selected() const { return state_->selected; }
bool Mailbox::read_only() const { return state_->read_only; }
uint32_t Mailbox::uidvalidity() const { return state_->uidvalidity; }
std::optional<uint32_t> Mailbox::uidnext() const { return state_->uidnext; }
std::optional<uint64_t> Mailbox::highestmodseq() const { return state_->highestmodseq; }
uint32_t Mailbox::exists() const { return state_->exists; }
const std::vector<std::string>& Mailbox::flags() const { return state_->flags; }
const std::vector<std::string>& Mailbox::permanent_flags() const { return state_->permanent_flags; }
Changes Mailbox::take_changes() { return state_->take_changes(); }
bool Mailbox::take_new_messages() { return std::exchange(state_->new_messages, false); }

void Mailbox::enable_qresync(Connection& connection) {
  MailboxSession& session = session_of(ConnectionInternal::client(connection));
  if (session.qresync) return;
  // RFC 7162 3.2.3: QRESYNC must be enabled before it is used; ENABLE
  // (RFC 5161) needs the capability, as QRESYNC itself does.
  connection.require_capability("ENABLE");
  connection.require_capability("QRESYNC");
  const auto enabled = connection.enable({"QRESYNC"});
  if (!has_flag(enabled, "QRESYNC"))
    throw ProtocolError(connection.name(), fmt::format("ENABLE QRESYNC: the server did not enable QRESYNC (ENABLED {})",
                                                       fmt::join(enabled, " ")));
  session.qresync = true;
}

void Mailbox::enable_condstore(Connection& connection) {
  MailboxSession& session = session_of(ConnectionInternal::client(connection));
  if (session.qresync || session.condstore) return;  // QRESYNC implies CONDSTORE (RFC 7162 3.2.3)
  connection.require_capability("ENABLE");
  connection.require_capability("CONDSTORE");
  const auto enabled = connection.enable({"CONDSTORE"});
  if (!has_flag(enabled, "CONDSTORE"))
    throw ProtocolError(connection.name(), fmt::format("ENABLE CONDSTORE: the server did not enable CONDSTORE (ENABLED {})",
                                                       fmt::join(enabled, " ")));
  session.condstore = true;
}

bool Mailbox::qresync_enabled(Connection& connection) { return session_of(ConnectionInternal::client(connection)).qresync; }

void Mailbox::select(const std::optional<QresyncParams>& qresync) { open(false, qresync); }
void Mailbox::examine(const std::optional<QresyncParams>& qresync) { open(true, qresync); }

void Mailbox::open(bool examine, const std::optional<QresyncParams>& qresync) {
  State& st = *state_;
  st.settle();
  Client& client = *st.client;
  st.emulated = false;
  if (st.dry != nullptr) {
    // Dry run (include/interimap/dry_run.hpp): read-only, the same
    // QRESYNC parameters.
    examine = true;
    if (st.dry->created.count(st.wire) != 0) {
      // "Created" by this dry run: the server does not have it.  The
      // server's own selection is left first (EXAMINEd: CLOSE expunges
      // nothing), so that what it says about that mailbox cannot reach
      // this one.
      if (st.conn->server_selected) {
        const char* leave = client.has_capability("UNSELECT") ? "UNSELECT" : "CLOSE";
        const auto status = st.run(client.command(leave).build());
        if (status.kind != StatusResponse::Kind::Ok) st.command_failed(leave, leave, status);
        st.conn->server_selected = false;
      }
      if (auto previous = std::static_pointer_cast<State>(st.conn->selected.lock()); previous && previous.get() != &st)
        previous->selected = false;
      // As a server answers for a new mailbox: empty, UIDNEXT 1.
      st.reset();
      st.read_only = false;
      st.uidvalidity = 1;
      st.uidnext = 1;
      if (st.conn->qresync || st.conn->condstore) st.highestmodseq = 1;
      st.permanent_flags = {"\\*"};
      st.emulated = true;
      st.selected = true;
      st.conn->selected = state_;
      return;
    }
  }
  const char* verb = examine ? "EXAMINE" : "SELECT";
  auto cmd = client.command(verb).mailbox(st.wire);
  if (qresync) {
    const QresyncParams& q = *qresync;
    if (q.uidvalidity == 0 || q.highestmodseq == 0)
      throw std::invalid_argument(fmt::format("{}: QRESYNC parameters need a UIDVALIDITY and a HIGHESTMODSEQ > 0",
                                              st.where()));
    if (q.match_seqs.size() != q.match_uids.size())
      throw std::invalid_argument(fmt::format("{}: QRESYNC sequence match data of different sizes ({} vs {})",
                                              st.where(), q.match_seqs.size(), q.match_uids.size()));
    enable_qresync(*connection_);
    // RFC 7162 3.2.5: (QRESYNC (uidvalidity modseq [known-uids] [(seqs uids)]))
    std::string param = fmt::format("(QRESYNC ({} {}", q.uidvalidity, q.highestmodseq);
    if (!q.known_uids.empty()) param += " " + q.known_uids.to_string();
    if (!q.match_seqs.empty()) param += fmt::format(" ({} {})", q.match_seqs.to_string(), q.match_uids.to_string());
    param += "))";
    cmd.raw(param);
  }

  // RFC 7162 3.2.11: with CONDSTORE or QRESYNC, selecting while another
  // mailbox is selected closes it with an untagged OK [CLOSED]; what comes
  // before belongs to the old mailbox, what follows to the new one.  Should
  // no [CLOSED] come, the responses seen before the tagged answer are
  // replayed into the new mailbox's state.
  struct Op {
    std::shared_ptr<State> previous;  // may be gone, or this very mailbox
    bool before_closed = false;
    std::vector<Response> early;
  };
  auto op = std::make_shared<Op>();
  op->previous = std::static_pointer_cast<State>(st.conn->selected.lock());
  op->before_closed =
      st.conn->server_selected && (client.has_capability("CONDSTORE") || client.has_capability("QRESYNC"));
  if (op->previous && op->previous.get() != &st) op->previous->selected = false;
  if (!op->before_closed) st.reset();
  st.selected = false;
  st.selecting = true;
  st.read_only = examine;
  st.conn->selected = state_;

  auto handler = [op, self = state_](const Response& r) -> bool {
    if (const auto* s = std::get_if<StatusResponse>(&r.data);
        s != nullptr && s->code.kind == ResponseCode::Kind::Closed) {
      if (op->before_closed) {
        op->before_closed = false;
        op->early.clear();
        self->reset();  // the reference wipes pending changes here too
      }
      return true;  // a stray [CLOSED] (e.g. after another client's EXAMINE) is not ours
    }
    if (op->before_closed) {
      op->early.push_back(r);
      if (op->previous) op->previous->process(r);
      return true;
    }
    return self->process(r);
  };
  StatusResponse status;
  try {
    status = st.run(cmd.build(), handler);
  } catch (...) {
    st.selecting = false;
    st.deselect();
    throw;
  }
  if (op->before_closed) {
    op->before_closed = false;
    st.reset();
    for (const auto& r : op->early) st.process(r);
    op->early.clear();
  }
  st.selecting = false;
  // RFC 3501 6.3.1: a failed SELECT leaves no mailbox selected.
  st.conn->server_selected = status.kind == StatusResponse::Kind::Ok;
  if (status.kind != StatusResponse::Kind::Ok) {
    st.deselect();
    st.command_failed(verb, verb, status);
  }
  st.process_code(status.code);  // [READ-WRITE] / [READ-ONLY] (RFC 3501 7.1)

  // RFC 3501 6.3.1 requires UIDVALIDITY; RFC 7162 3.1.2.1 and 3.2.5 require
  // UIDNEXT and HIGHESTMODSEQ (no NOMODSEQ) from a QRESYNC server.
  auto broken = [&](std::string_view what) {
    st.deselect();
    throw ProtocolError(st.client->name(), fmt::format("{}: {}: {}", st.display, verb, what));
  };
  if (st.uidvalidity == 0) broken("the server sent no UIDVALIDITY (RFC 3501 6.3.1)");
  if (st.conn->qresync) {
    if (st.nomodseq)
      broken("the server sent NOMODSEQ although QRESYNC is enabled: the mailbox does not support "
             "mod-sequences (RFC 7162 3.1.2.2)");
    if (!st.uidnext) broken("the server sent no UIDNEXT although QRESYNC is enabled (RFC 3501 6.3.1)");
    if (!st.highestmodseq) broken("the server sent no HIGHESTMODSEQ although QRESYNC is enabled (RFC 7162 3.1.2.1)");
  }
  if (qresync && qresync->uidvalidity != st.uidvalidity) {
    st.deselect();
    throw Error(st.client->name(), fmt::format("{}: UIDVALIDITY changed! ({} != {})  Need to invalidate the UID cache.",
                                               st.display, qresync->uidvalidity, st.uidvalidity));
  }
  st.selected = true;
}

void Mailbox::close() {
  State& st = *state_;
  st.settle();
  if (!st.selected) return;
  Client& client = *st.client;
  st.vanished.clear();
  st.modified.clear();
  if (st.emulated) {
    st.deselect();  // nothing selected on the server
    return;
  }
  if (client.has_capability("UNSELECT")) {
    // RFC 3691: back to the authenticated state without expunging.
    const auto status = st.run(client.command("UNSELECT").build());
    st.deselect();
    st.conn->server_selected = false;
    if (status.kind != StatusResponse::Kind::Ok) st.command_failed("UNSELECT", "UNSELECT", status);
  } else if (st.read_only) {
    // RFC 3501 6.4.2: CLOSE on a read-only mailbox removes nothing.
    const auto status = st.run(client.command("CLOSE").build());
    st.deselect();
    st.conn->server_selected = false;
    if (status.kind != StatusResponse::Kind::Ok) st.command_failed("CLOSE", "CLOSE", status);
  } else {
    // CLOSE would expunge \Deleted messages: leave the server's selection
    // until the next SELECT (its responses still reach this state), but
    // stop counting this object as selected.
    st.selected = false;
  }
}

Changes Mailbox::fetch_changes(uint64_t since_modseq, const UidSet& uids) {
  State& st = *state_;
  st.settle();
  st.require_selected("UID FETCH (CHANGEDSINCE)");
  if (st.emulated) return st.take_changes();
  Client& client = *st.client;
  client.require_capability("CONDSTORE");
  // RFC 7162 3.1.4 CHANGEDSINCE; 3.2.6 VANISHED, only with QRESYNC enabled.
  const std::string modifier =
      fmt::format("(CHANGEDSINCE {}{})", since_modseq, st.conn->qresync ? " VANISHED" : "");
  const std::string items = "(FLAGS MODSEQ)";
  Window window(client, st.conn->abandoned, kWindowBytes, kWindowCommands, [&](size_t, StatusResponse& status) {
    if (status.kind != StatusResponse::Kind::Ok) st.command_failed("UID FETCH", "UID FETCH (CHANGEDSINCE)", status);
    st.process_code(status.code);
  });
  // The answers (VANISHED (EARLIER), FETCH) reach the state through the
  // connection's untagged handler, like unsolicited ones.
  for (const auto& set : split_set(uids, std::string_view("UID FETCH  ").size() + items.size() + 1 + modifier.size())) {
    if (window.failed()) break;
    window.send(client.command("UID FETCH").raw(set).raw(items).raw(modifier).build(), {}, 0);
  }
  window.finish();
  return st.take_changes();
}

void Mailbox::fetch_flags(const UidSet& uids, const std::function<void(MessageFlags&)>& callback) {
  State& st = *state_;
  st.settle();
  st.require_selected("UID FETCH (FLAGS)");
  if (st.emulated) return;
  Client& client = *st.client;
  const std::string items = client.has_capability("CONDSTORE") ? "(UID FLAGS MODSEQ)" : "(UID FLAGS)";
  struct Op {
    UidSet wanted;
    const std::function<void(MessageFlags&)>* callback = nullptr;  // null once fetch_flags returned
  };
  auto op = std::make_shared<Op>();
  op->wanted = uids;
  op->callback = &callback;
  struct Detach {
    Op& op;
    ~Detach() { op.callback = nullptr; }
  } detach{*op};

  auto handler = [op, self = state_](const Response& r) -> bool {
    const auto* f = std::get_if<FetchData>(&r.data);
    if (f == nullptr || !f->uid || !f->flags || f->body || f->body_streamed || !op->wanted.contains(*f->uid))
      return false;
    self->record_fetch(*f, false);
    if (op->callback == nullptr || self->dry_gone(*f->uid)) return true;  // abandoned; expunged by this dry run
    MessageFlags m{*f->uid, f->modseq.value_or(0), without_recent(*f->flags)};
    (*op->callback)(m);
    return true;
  };
  Window window(client, st.conn->abandoned, kWindowBytes, kWindowCommands, [&](size_t, StatusResponse& status) {
    if (status.kind != StatusResponse::Kind::Ok) st.command_failed("UID FETCH", "UID FETCH (FLAGS)", status);
    st.process_code(status.code);
  });
  for (const auto& set : split_set(uids, std::string_view("UID FETCH  ").size() + items.size())) {
    if (window.failed()) break;
    window.send(client.command("UID FETCH").raw(set).raw(items).build(), handler, 0);
  }
  window.finish();
}

std::vector<std::pair<uint32_t, uint64_t>> Mailbox::fetch_sizes(const UidSet& uids) {
  State& st = *state_;
  st.settle();
  st.require_selected("UID FETCH (RFC822.SIZE)");
  Client& client = *st.client;
  std::vector<std::pair<uint32_t, uint64_t>> out;
  if (uids.empty() || st.emulated) return out;
  // The handler may outlive this call (an exception): it owns what it needs.
  // At most one entry per UID asked for, whatever the server repeats.
  struct Found {
    UidSet wanted, seen;
    std::vector<std::pair<uint32_t, uint64_t>> sizes;
  };
  auto found = std::make_shared<Found>();
  found->wanted = uids;
  auto handler = [found, self = state_](const Response& r) -> bool {
    const auto* f = std::get_if<FetchData>(&r.data);
    if (f == nullptr || !f->uid || !f->size || f->flags || f->body || f->body_streamed ||
        !found->wanted.contains(*f->uid))
      return false;
    if (!found->seen.contains(*f->uid) && !self->dry_gone(*f->uid)) {
      found->seen.insert(*f->uid);
      found->sizes.emplace_back(*f->uid, *f->size);
    }
    return true;
  };
  Window window(client, st.conn->abandoned, kWindowBytes, kWindowCommands, [&](size_t, StatusResponse& status) {
    if (status.kind != StatusResponse::Kind::Ok) st.command_failed("UID FETCH", "UID FETCH (RFC822.SIZE)", status);
    st.process_code(status.code);
  });
  const std::string items = "(UID RFC822.SIZE)";
  for (const auto& set : split_set(uids, std::string_view("UID FETCH  ").size() + items.size())) {
    if (window.failed()) break;
    window.send(client.command("UID FETCH").raw(set).raw(items).build(), handler, 0);
  }
  window.finish();
  out = std::move(found->sizes);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<MessageFlags> Mailbox::fetch_flags(const UidSet& uids) {
  std::vector<MessageFlags> out;
  fetch_flags(uids, [&](MessageFlags& m) { out.push_back(std::move(m)); });
  // Ascending by UID, one per UID: the last one seen (an unsolicited update
  // may follow the solicited answer).
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.uid < b.uid; });
  std::vector<MessageFlags> unique;
  unique.reserve(out.size());
  for (auto& m : out) {
    if (!unique.empty() && unique.back().uid == m.uid)
      unique.back() = std::move(m);
    else
      unique.push_back(std::move(m));
  }
  return unique;
}

UidSet Mailbox::store_flags(const UidSet& uids, StoreMode mode, const std::vector<std::string>& flags,
                            std::optional<uint64_t> unchangedsince) {
  if (uids.empty()) {
    // Still checked, as for a non-empty set.
    state_->settle();
    state_->require_writable("UID STORE");
    return {};
  }
  return std::move(store_flags({FlagStore{uids, mode, flags}}, unchangedsince).front());
}

std::vector<UidSet> Mailbox::store_flags(const std::vector<FlagStore>& stores,
                                         std::optional<uint64_t> unchangedsince) {
  state_->settle();
  state_->require_writable("UID STORE");
  return update({}, stores, unchangedsince).refused;
}

UidSet Mailbox::expunge(const UidSet& uids) {
  state_->settle();
  state_->require_writable("UID EXPUNGE");
  state_->require_uidplus();
  return update(uids, {}, std::nullopt).not_expunged;
}

Mailbox::UpdateResult Mailbox::update(const UidSet& expunge, const std::vector<FlagStore>& stores,
                                      std::optional<uint64_t> unchangedsince) {
  State& st = *state_;
  st.settle();
  Client& client = *st.client;
  UpdateResult result;
  result.refused.resize(stores.size());
  const bool storing = std::any_of(stores.begin(), stores.end(), [](const FlagStore& f) { return !f.uids.empty(); });
  if (!expunge.empty()) {
    st.require_writable("UID EXPUNGE");
    st.require_uidplus();
  }
  if (storing) st.require_writable("UID STORE");
  if (expunge.empty() && !storing) return result;
  if (storing && unchangedsince) client.require_capability("CONDSTORE");
  if (st.dry != nullptr) {
    // Dry run: nothing is sent.  The messages' current flags tell which
    // exist (what the server would expunge or change) and what each store
    // would add or remove; nothing is refused.
    UidSet named = expunge;
    for (const FlagStore& fs : stores) named.insert(fs.uids);
    std::map<uint32_t, std::vector<std::string>> current;
    fetch_flags(named, [&](MessageFlags& m) {
      if (m.flags) current[m.uid] = std::move(*m.flags);
    });
    auto& planned = st.planned();
    UidSet expunged;
    for (const auto& [uid, flags] : current)
      if (expunge.contains(uid)) expunged.insert(uid);
    planned.expunged.insert(expunged);
    for (const FlagStore& fs : stores) {
      const auto wanted = without_recent(fs.flags);
      for (uint32_t uid : fs.uids.to_vector()) {
        const auto it = current.find(uid);
        if (it == current.end() || expunged.contains(uid)) continue;
        std::vector<std::string>& now = it->second;
        std::vector<std::string> next;
        if (fs.mode == StoreMode::Replace) {
          next = wanted;
        } else {
          for (const auto& f : now)
            if (fs.mode == StoreMode::Add || !has_flag(wanted, f)) next.push_back(f);
          if (fs.mode == StoreMode::Add)
            for (const auto& f : wanted)
              if (!has_flag(next, f)) next.push_back(f);
        }
        for (const auto& f : next)
          if (!has_flag(now, f)) planned.flags_added[f].insert(uid);
        for (const auto& f : now)
          if (!has_flag(next, f)) planned.flags_removed[f].insert(uid);
        now = std::move(next);
      }
    }
    // As the server's VANISHED would: what is gone is no change for the caller.
    if (!expunge.empty() && st.conn->qresync) {
      result.not_expunged = expunge;
      result.not_expunged.erase(expunged);
    }
    for (auto it = st.modified.begin(); it != st.modified.end();)
      it = expunged.contains(it->first) ? st.modified.erase(it) : std::next(it);
    return result;
  }

  // Window indexes: 0..stores.size()-1 a flag store, then the expunge pair.
  const size_t deleted_index = stores.size(), expunge_index = stores.size() + 1;
  Window window(client, st.conn->abandoned, kWindowBytes, 2 * kWindowCommands, [&](size_t index, StatusResponse& status) {
    if (index >= deleted_index) {
      const char* command = index == deleted_index ? "UID STORE" : "UID EXPUNGE";
      if (status.kind != StatusResponse::Kind::Ok) st.command_failed(command, command, status);
      st.process_code(status.code);
      return;
    }
    // RFC 7162 3.1.3: [MODIFIED set] lists the UIDs that failed the
    // UNCHANGEDSINCE test; the others were stored.
    if (status.code.kind == ResponseCode::Kind::Other && status.code.name == "MODIFIED") {
      try {
        // Only UIDs this store named: a server's set is clipped to what was
        // asked before anything is sized by it (1:4294967295 would
        // otherwise become 4 billion pending changes).
        result.refused[index].insert(UidSet::parse(status.code.raw).intersection(stores[index].uids));
      } catch (const std::invalid_argument& e) {
        throw ProtocolError(st.client->name(),
                            fmt::format("{}: UID STORE: malformed MODIFIED response code: {}", st.display, e.what()));
      }
      if (status.kind == StatusResponse::Kind::No) return;
    }
    if (status.kind != StatusResponse::Kind::Ok) st.command_failed("UID STORE", "UID STORE", status);
    st.process_code(status.code);
  });

  // The longer of the two lines decides the split.
  const size_t fixed = std::string_view("UID STORE  +FLAGS.SILENT (\\Deleted)").size();
  for (const auto& set : split_set(expunge, fixed)) {
    if (window.failed()) break;
    // Pipelined pairs: a failed STORE makes the EXPUNGE remove nothing of
    // this set that was not already \Deleted, so it need not wait.
    window.send(client.command("UID STORE").raw(set).raw("+FLAGS.SILENT").raw("(\\Deleted)").build(), {},
                deleted_index);
    window.send(client.command("UID EXPUNGE").raw(set).build(), {}, expunge_index);
  }

  // RFC 7162 3.1.3: UID STORE set (UNCHANGEDSINCE n) item (flags)
  const std::string modifier = unchangedsince ? fmt::format("(UNCHANGEDSINCE {})", *unchangedsince) : "";
  auto item_of = [](StoreMode mode) {
    return mode == StoreMode::Add ? "+FLAGS.SILENT" : mode == StoreMode::Remove ? "-FLAGS.SILENT" : "FLAGS.SILENT";
  };
  for (size_t k = 0; k < stores.size() && !window.failed(); ++k) {
    const FlagStore& fs = stores[k];
    if (fs.uids.empty()) continue;
    const char* item = item_of(fs.mode);
    const std::string list = flag_list(fs.flags);
    const size_t line = std::string_view("UID STORE ").size() + (modifier.empty() ? 0 : modifier.size() + 1) + 1 +
                        std::strlen(item) + 1 + list.size();
    for (const auto& set : split_set(fs.uids, line)) {
      if (window.failed()) break;
      auto cmd = client.command("UID STORE").raw(set);
      if (!modifier.empty()) cmd.raw(modifier);
      window.send(cmd.raw(item).raw(list).build(), {}, k);
    }
  }
  window.finish();

  if (!expunge.empty() && st.conn->qresync) {
    // The VANISHED responses reached the state through the untagged
    // handler: the expunged UIDs are not changes for the caller.
    UidSet expunged = expunge;
    result.not_expunged = expunge;
    result.not_expunged.erase(st.vanished);
    expunged.erase(result.not_expunged);
    st.vanished.erase(expunged);
    for (auto it = st.modified.begin(); it != st.modified.end();)
      it = expunged.contains(it->first) ? st.modified.erase(it) : std::next(it);
  }
  if (!storing) return result;

  // The FETCH responses that echo our own store (with CONDSTORE the server
  // sends them even for .SILENT, RFC 7162 3.1.3) are not changes for the
  // caller: drop them when their flags are unknown or agree with the store
  // (the reference's push_flag_updates does the same).  Refused UIDs are
  // pending with unknown flags so that the caller fetches them again.
  for (auto it = st.modified.begin(); it != st.modified.end();) {
    const uint32_t uid = it->first;
    const auto& known = it->second.flags;
    bool echo = false;
    // The last store naming the UID is the one that decided its flags.
    for (size_t k = stores.size(); k-- > 0;) {
      const FlagStore& fs = stores[k];
      if (!fs.uids.contains(uid)) continue;
      if (result.refused[k].contains(uid)) break;
      if (!known) {
        echo = true;
      } else if (fs.mode == StoreMode::Add) {
        echo = std::all_of(fs.flags.begin(), fs.flags.end(), [&](const std::string& f) { return has_flag(*known, f); });
      } else if (fs.mode == StoreMode::Remove) {
        echo = std::none_of(fs.flags.begin(), fs.flags.end(), [&](const std::string& f) { return has_flag(*known, f); });
      } else {
        const auto wanted = without_recent(fs.flags);
        echo = known->size() == wanted.size() &&
               std::all_of(wanted.begin(), wanted.end(), [&](const std::string& f) { return has_flag(*known, f); });
      }
      break;
    }
    it = echo ? st.modified.erase(it) : std::next(it);
  }
  for (const UidSet& r : result.refused)
    for (const auto& [first, last] : r.ranges())
      for (uint64_t uid = first; uid <= last; ++uid) st.modified.try_emplace(static_cast<uint32_t>(uid));
  return result;
}

void Mailbox::fetch_messages(const UidSet& uids, const std::function<void(Message&)>& callback,
                             const FetchOptions& options) {
  State& st = *state_;
  st.settle();
  st.require_selected("UID FETCH");
  if (st.emulated) return;
  Client& client = *st.client;
  std::string items = "(UID FLAGS INTERNALDATE";
  if (client.has_capability("CONDSTORE")) items += " MODSEQ";
  if (options.envelope) items += " ENVELOPE";
  // BODY.PEEK[]: do not set \Seen (RFC 3501 6.4.5), as the reference does.
  if (options.body) items += " BODY.PEEK[]";
  items += ')';

  struct Op {
    UidSet wanted;     // what was asked for: a message outside it is ignored
    UidSet delivered;  // what was handed over: a repeated message is ignored
    const std::function<void(Message&)>* callback = nullptr;  // null once fetch_messages returned
  };
  auto op = std::make_shared<Op>();
  op->wanted = uids;
  op->callback = &callback;
  // While this runs, whole-message literals stream into the connection's
  // body queue instead of into the framed response (doc/design.md "Parsing responses").  On the
  // way out (an exception included) the chooser goes and the callback is
  // forgotten: the rest of an abandoned FETCH is discarded by its handler.
  client.set_sink_chooser([cs = st.conn](std::string_view line, uint64_t) -> LiteralSink* {
    return detail::imap::is_body_literal(line) ? &cs->bodies : nullptr;
  });
  struct Detach {
    Client& client;
    Op& op;
    ~Detach() {
      client.set_sink_chooser({});
      op.callback = nullptr;
    }
  } detach{client, *op};

  auto handler = [op, self = state_](const Response& r) -> bool {
    const auto* f = std::get_if<FetchData>(&r.data);
    if (f == nullptr) return false;
    const bool is_message = f->body || f->body_streamed || f->envelope || f->internaldate;
    if (!is_message) return false;  // a flag update: pending change (global handler)
    std::string body;
    if (f->body_streamed)
      body = self->take_body();
    else if (f->body)
      body = *f->body;
    self->record_fetch(*f, false);
    if (op->callback == nullptr) return true;  // abandoned: discard
    if (!f->uid)
      throw ProtocolError(self->client->name(),
                          fmt::format("{}: UID FETCH response without UID (RFC 3501 6.4.8)", self->display));
    // Only what was asked for, once (doc/design.md "Bounding what a server
    // sends"): a message the server adds or repeats is not delivered again.
    if (self->dry_gone(*f->uid)) return true;  // expunged by this dry run
    if (!op->wanted.contains(*f->uid) || op->delivered.contains(*f->uid)) {
      Logger& log = self->client->logger();
      if (log.debug() > 0)
        log.log(LogLevel::Debug, self->client->name(), {},
                fmt::format("{}: ignoring FETCH data for UID {}: {}", self->display, *f->uid,
                            op->wanted.contains(*f->uid) ? "already received" : "not requested"));
      return true;
    }
    self->check_message_uid(*f->uid);
    self->raise_uidnext(*f->uid);
    op->delivered.insert(*f->uid);
    Message m;
    m.uid = *f->uid;
    if (f->flags) m.flags = without_recent(*f->flags);
    m.internaldate = f->internaldate.value_or("");
    m.modseq = f->modseq.value_or(0);
    m.body = std::move(body);
    if (f->envelope) {
      m.envelope_from = to_public(f->envelope->from);
      m.envelope_sender = to_public(f->envelope->sender);
    }
    (*op->callback)(m);
    return true;
  };
  Window window(client, st.conn->abandoned, kWindowBytes, kWindowCommands, [&](size_t, StatusResponse& status) {
    if (status.kind != StatusResponse::Kind::Ok) st.command_failed("UID FETCH", "UID FETCH", status);
    st.process_code(status.code);
  });
  for (const auto& set : split_set(uids, std::string_view("UID FETCH  ").size() + items.size())) {
    if (window.failed()) break;
    window.send(client.command("UID FETCH").raw(set).raw(items).build(), handler, 0);
  }
  window.finish();
}

std::vector<uint32_t> Mailbox::append(const std::vector<AppendMessage>& messages, const AppendedCallback& on_batch,
                                      const AppendOptions& options) {
  return append_impl(messages, nullptr, on_batch, options);
}

std::vector<uint32_t> Mailbox::append(std::vector<AppendMessage>&& messages, const AppendedCallback& on_batch,
                                      const AppendOptions& options) {
  return append_impl(messages, &messages, on_batch, options);
}

std::vector<uint32_t> Mailbox::append_impl(const std::vector<AppendMessage>& messages,
                                           std::vector<AppendMessage>* owned, const AppendedCallback& on_batch,
                                           const AppendOptions& options) {
  State& st = *state_;
  st.settle();
  Client& client = *st.client;
  if (messages.empty()) return {};
  // RFC 4315 3: without UIDPLUS there is no APPENDUID, so no way to map
  // the new messages (the reference refuses too).
  if (!client.has_capability("UIDPLUS"))
    throw ProtocolError(
        st.client->name(),
        fmt::format("{}: server lacks required capability UIDPLUS (RFC 4315) for APPENDUID", st.display));
  for (size_t i = 0; i < messages.size(); ++i) {
    // RFC 3502 6.3.11 forbids zero-length messages (and Dovecot refuses them).
    if (messages[i].body.empty())
      throw Error(st.client->name(), fmt::format("{}: APPEND: message #{} is empty; empty messages cannot be appended",
                                                 st.display, i + 1));
    for (const auto& f : messages[i].flags) check_flag(f);
  }
  const bool multi = client.has_capability("MULTIAPPEND");
  const size_t max_count = multi ? std::max<size_t>(1, options.max_batch_messages) : 1;
  const size_t max_bytes = std::max<size_t>(1, options.max_batch_bytes);

  // Batches [begin, end): by count and bytes; a large message goes alone.
  std::vector<std::pair<size_t, size_t>> batches;
  for (size_t i = 0; i < messages.size();) {
    size_t j = i, bytes = 0;
    while (j < messages.size() && j - i < max_count && (j == i || bytes + messages[j].body.size() <= max_bytes))
      bytes += messages[j++].body.size();
    batches.emplace_back(i, j);
    i = j;
  }

  if (st.dry != nullptr) return dry_append(messages, batches, on_batch);

  std::vector<uint32_t> uids(messages.size(), 0);
  std::exception_ptr callback_error;
  auto done = [&](size_t index, StatusResponse& status) {
    const auto [begin, end] = batches[index];
    const std::string what = end - begin == 1 ? fmt::format("APPEND of message #{}", begin + 1)
                                              : fmt::format("APPEND of messages #{}-#{}", begin + 1, end);
    if (status.kind != StatusResponse::Kind::Ok) {
      if (st.selected) st.own_appends -= std::min<uint32_t>(st.own_appends, static_cast<uint32_t>(end - begin));
      st.command_failed("APPEND", what, status);
    }
    // RFC 4315 3: OK [APPENDUID uidvalidity uid-set], the UIDs in the
    // order the messages were given (MULTIAPPEND assigns them ascending).
    if (status.code.kind != ResponseCode::Kind::AppendUid)
      throw ProtocolError(st.client->name(), fmt::format("{}: {}: no APPENDUID in the server's answer: OK {}",
                                                         st.display, what, status.text));
    if (status.code.uids.size() != end - begin)
      throw ProtocolError(st.client->name(),
                          fmt::format("{}: {}: APPENDUID {} lists {} UID(s) for {} message(s)", st.display, what,
                                      status.code.uids.to_string(), status.code.uids.size(), end - begin));
    const auto uidvalidity = static_cast<uint32_t>(status.code.number);
    if (st.uidvalidity != 0 && uidvalidity != st.uidvalidity)
      throw Error(st.client->name(),
                  fmt::format("{}: UIDVALIDITY changed! ({} != {})  Need to invalidate the UID cache.", st.display,
                              st.uidvalidity, uidvalidity));
    size_t k = begin;
    for (const auto& [first, last] : status.code.uids.ranges())
      for (uint64_t uid = first; uid <= last; ++uid) uids[k++] = static_cast<uint32_t>(uid);
    if (st.selected) st.raise_uidnext(uids[end - 1]);
    if (on_batch) {
      try {
        on_batch(begin, std::vector<uint32_t>(uids.begin() + static_cast<ptrdiff_t>(begin),
                                              uids.begin() + static_cast<ptrdiff_t>(end)));
      } catch (...) {
        if (!callback_error) callback_error = std::current_exception();
      }
    }
  };
  // MULTIAPPEND: the next batch goes while the previous one is answered
  // (two in flight).  Single APPENDs: a window of one batch's worth.
  const size_t window_bytes = multi ? 2 * std::min(max_bytes, SIZE_MAX / 2) : max_bytes;
  const size_t window_commands = multi ? 2 : std::max<size_t>(1, options.max_batch_messages);
  Window window(client, st.conn->abandoned, window_bytes, window_commands, done);
  for (size_t b = 0; b < batches.size(); ++b) {
    if (window.failed() || callback_error) break;
    auto cmd = client.command("APPEND").mailbox(st.wire);
    if (owned == nullptr) {
      // The literals go into the command's buffer (LITERAL+: one chunk):
      // size it once.  64 bytes a message cover the flags, the date and
      // the literal's header in most cases.
      size_t room = 0;
      for (size_t i = batches[b].first; i < batches[b].second; ++i) room += messages[i].body.size() + 64;
      cmd.reserve(room);
    }
    for (size_t i = batches[b].first; i < batches[b].second; ++i) {
      const AppendMessage& m = messages[i];
      // The reference drops \Recent (RFC 3501 6.3.11: it cannot be set)
      // and keeps every other flag.
      const auto flags = without_recent(m.flags);
      if (!flags.empty()) cmd.raw(flag_list(flags));
      if (!m.internaldate.empty()) cmd.string(m.internaldate);
      if (owned != nullptr)
        cmd.literal_moved(std::move((*owned)[i].body));  // its own chunk, no copy
      else
        cmd.literal(m.body);
    }
    if (st.selected) st.own_appends += static_cast<uint32_t>(batches[b].second - batches[b].first);
    window.send(cmd.build(), {}, b);
  }
  window.finish();
  if (callback_error) std::rethrow_exception(callback_error);
  return uids;
}

std::vector<uint32_t> Mailbox::dry_append(const std::vector<AppendMessage>& messages,
                                          const std::vector<std::pair<size_t, size_t>>& batches,
                                          const AppendedCallback& on_batch) {
  State& st = *state_;
  Client& client = *st.client;
  // Dry run: nothing is sent.  The UIDs are those the server would give:
  // its UIDNEXT, then ascending (RFC 4315 3, RFC 3502 6.3.11; Dovecot and
  // the others give UIDNEXT, UIDNEXT+1, ...), past those given by earlier
  // dry APPENDs.
  std::optional<uint32_t> next = st.selected ? st.uidnext : std::nullopt;
  if (!st.selected) {
    if (st.dry->created.count(st.wire) != 0) {
      next = 1;
    } else {
      auto found = std::make_shared<std::optional<uint32_t>>();
      auto handler = [found, wire = st.wire](const Response& r) -> bool {
        const auto* s = std::get_if<StatusData>(&r.data);
        if (s == nullptr || !(s->mailbox == wire || (iequals(wire, "INBOX") && iequals(s->mailbox, "INBOX"))))
          return false;
        if (s->uidnext) *found = s->uidnext;
        return true;
      };
      const auto status = st.run(client.command("STATUS").mailbox(st.wire).raw("(UIDNEXT)").build(), handler);
      if (status.kind != StatusResponse::Kind::Ok) st.command_failed("STATUS", "STATUS (dry run APPEND)", status);
      next = *found;
    }
  }
  uint32_t uid = std::max(next.value_or(1), st.dry->next_uid[st.wire]);
  auto& planned = st.planned();
  std::vector<uint32_t> uids;
  uids.reserve(messages.size());
  for (const auto& [begin, end] : batches) {
    std::vector<uint32_t> batch;
    for (size_t i = begin; i < end; ++i) {
      if (uid >= kMaxUid)
        throw ProtocolError(client.name(), fmt::format("{}: dry run: UIDNEXT would overflow", st.display));
      batch.push_back(uid++);
      ++planned.appended;
      planned.appended_bytes += messages[i].body.size();
    }
    if (st.selected) st.raise_uidnext(batch.back());
    uids.insert(uids.end(), batch.begin(), batch.end());
    if (on_batch) on_batch(begin, batch);
  }
  st.dry->next_uid[st.wire] = uid;
  return uids;
}

UidSet Mailbox::search(std::string_view criteria) {
  State& st = *state_;
  st.settle();
  st.require_selected("UID SEARCH");
  if (st.emulated) return {};
  Client& client = *st.client;
  if (criteria.empty() || criteria.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos)
    throw std::invalid_argument(fmt::format("{}: UID SEARCH: criteria must be one line: \"{}\"", st.where(), criteria));
  // RFC 4731 ESEARCH: RETURN (ALL) gives a compact set instead of every number.
  const bool esearch = client.has_capability("ESEARCH");
  auto result = std::make_shared<UidSet>();
  auto handler = [result](const Response& r) -> bool {
    if (const auto* e = std::get_if<EsearchData>(&r.data)) {
      for (const auto& [first, last] : e->all.ranges()) result->insert(first, last);
      return true;
    }
    if (const auto* s = std::get_if<SearchData>(&r.data)) {
      for (uint32_t n : s->numbers) result->insert(n);
      return true;
    }
    return false;
  };
  auto cmd = client.command("UID SEARCH");
  if (esearch) cmd.raw("RETURN (ALL)");
  const auto status = st.run(cmd.raw(criteria).build(), handler);
  if (status.kind != StatusResponse::Kind::Ok)
    st.command_failed("UID SEARCH", fmt::format("UID SEARCH {}", criteria), status);
  if (st.dry != nullptr) result->erase(st.planned().expunged);
  return std::move(*result);
}

bool Mailbox::idle(std::chrono::milliseconds timeout, const std::function<bool()>& stop) {
  State& st = *state_;
  st.settle();
  st.require_selected("IDLE");
  Client& client = *st.client;
  client.require_capability("IDLE");
  // Expunges show as a smaller EXISTS (EXPUNGE) or as VANISHED UIDs
  // (QRESYNC, RFC 7162 3.2.10); new messages set new_messages.
  const uint32_t exists_before = st.exists;
  const uint64_t vanished_before = st.vanished.size();
  auto changed = [&] { return st.new_messages || st.exists < exists_before || st.vanished.size() > vanished_before; };
  if (changed()) return true;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const uint64_t id = client.idle_start();
  try {
    while (!changed() && !(stop && stop())) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      client.poll(static_cast<int>(std::min<int64_t>(left.count(), 500)));
    }
  } catch (...) {
    // IDLE never completes without DONE, so nothing could wait for it:
    // what went wrong (a lost connection, a protocol error, stop() or a
    // response handler throwing) ends the connection.
    client.abort();
    throw;
  }
  // RFC 2177: DONE ends it; the server may still send responses before
  // the tagged OK, which the state records as usual.
  const StatusResponse status = client.idle_done(id, true);
  if (status.kind != StatusResponse::Kind::Ok) st.command_failed("IDLE", "IDLE", status);
  return changed();
}

void Mailbox::fetch_headers(const UidSet& uids, const HeaderFetch& what,
                            const std::function<void(MessageHeader&)>& callback) {
  State& st = *state_;
  st.settle();
  st.require_selected("UID FETCH (BODY.PEEK[HEADER])");
  Client& client = *st.client;
  if (uids.empty()) return;
  std::string items = "(UID";
  if (what.size_and_date) items += " RFC822.SIZE INTERNALDATE";
  if (what.flags) items += " FLAGS";
  // BODY.PEEK: do not set \Seen (RFC 3501 6.4.5).
  items += what.fields.empty() ? " BODY.PEEK[HEADER]" : fmt::format(" BODY.PEEK[HEADER.FIELDS ({})]", fmt::join(what.fields, " "));
  items += ')';
  // The handler may outlive this call (an exception): it owns what it needs.
  struct Op {
    UidSet wanted, delivered;
    const std::function<void(MessageHeader&)>* callback = nullptr;  // null once fetch_headers returned
  };
  auto op = std::make_shared<Op>();
  op->wanted = uids;
  op->callback = &callback;
  struct Detach {
    Op& op;
    ~Detach() { op.callback = nullptr; }
  } detach{*op};
  auto handler = [op, self = state_](const Response& r) -> bool {
    const auto* f = std::get_if<FetchData>(&r.data);
    if (f == nullptr || !f->uid || !f->header || f->body || f->body_streamed || !op->wanted.contains(*f->uid))
      return false;
    self->record_fetch(*f, false);
    // Only what was asked for, once (doc/design.md "Bounding what a server sends").
    if (op->callback == nullptr || op->delivered.contains(*f->uid)) return true;
    op->delivered.insert(*f->uid);
    MessageHeader h;
    h.uid = *f->uid;
    h.size = f->size.value_or(0);
    h.internaldate = f->internaldate.value_or("");
    if (f->flags) h.flags = without_recent(*f->flags);
    h.header = *f->header;
    (*op->callback)(h);
    return true;
  };
  Window window(client, st.conn->abandoned, kWindowBytes, kWindowCommands, [&](size_t, StatusResponse& status) {
    if (status.kind != StatusResponse::Kind::Ok) st.command_failed("UID FETCH", "UID FETCH (BODY.PEEK[HEADER])", status);
    st.process_code(status.code);
  });
  for (const auto& set : split_set(uids, std::string_view("UID FETCH  ").size() + items.size())) {
    if (window.failed()) break;
    window.send(client.command("UID FETCH").raw(set).raw(items).build(), handler, 0);
  }
  window.finish();
}

std::string Mailbox::imap_date(std::chrono::system_clock::time_point when) {
  // RFC 3501 9: date-text = date-day "-" date-month "-" date-year, English
  // month names whatever the locale.
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::time_t t = std::chrono::system_clock::to_time_t(when);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:02}-{}-{:04}", tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900);
}

}  // namespace interimap
