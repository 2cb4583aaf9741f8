#include <interimap/connection.hpp>
#include <interimap/dry_run.hpp>
#include <interimap/error.hpp>

#include "imap/client.hpp"
#include "util/ascii.hpp"

#include <fmt/format.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <map>

namespace interimap {

using detail::imap::Client;
using detail::imap::CommandBuilder;
using detail::imap::ListData;
using detail::imap::Response;
using detail::imap::ResponseCode;
using detail::imap::StatusData;
using detail::imap::StatusResponse;

namespace {

using detail::has_flag;


std::string paren_list(const std::vector<std::string>& items) { return fmt::format("({})", fmt::join(items, " ")); }

CommandStatus to_command_status(StatusResponse st) {
  CommandStatus out;
  out.kind = st.kind == StatusResponse::Kind::No    ? CommandStatus::Kind::No
             : st.kind == StatusResponse::Kind::Bad ? CommandStatus::Kind::Bad
                                                    : CommandStatus::Kind::Ok;
  out.code = std::move(st.code.name);
  out.code_data = std::move(st.code.raw);
  out.text = std::move(st.text);
  return out;
}

}  // namespace

bool MailboxInfo::selectable() const { return !has_flag(flags, "\\Noselect") && !has_flag(flags, "\\NonExistent"); }
bool MailboxInfo::subscribed() const { return has_flag(flags, "\\Subscribed"); }

bool may_be_expired_session(const Error& error) {
  if (dynamic_cast<const NetworkError*>(&error) != nullptr) return true;
  if (const auto* c = dynamic_cast<const CommandError*>(&error))
    return c->status() == "NO" &&
           (c->code() == "AUTHENTICATIONFAILED" || c->code() == "AUTHORIZATIONFAILED" || c->code() == "EXPIRED");
  return false;
}

std::string CommandStatus::describe() const {
  const char* k = kind == Kind::No ? "NO" : kind == Kind::Bad ? "BAD" : "OK";
  const std::string c = code.empty() ? "" : fmt::format("[{}{}{}] ", code, code_data.empty() ? "" : " ", code_data);
  return fmt::format("{} {}{}", k, c, text);
}

Connection::Connection(ConnectionOptions options, Logger& logger)
    : client_(std::make_unique<Client>(std::move(options), logger)) {}
Connection::~Connection() = default;
Connection::Connection(Connection&&) noexcept = default;
Connection& Connection::operator=(Connection&&) noexcept = default;

void Connection::open() { client_->open(); }
void Connection::close(Goodbye goodbye) noexcept { client_->close(goodbye == Goodbye::Logout); }
bool Connection::is_open() const { return client_->is_open(); }
const ConnectionOptions& Connection::options() const { return client_->options(); }
const std::string& Connection::name() const { return client_->name(); }
void Connection::set_logger(Logger& logger) { client_->set_logger(logger); }
const std::vector<std::string>& Connection::capabilities() const { return client_->capabilities(); }
bool Connection::has_capability(std::string_view c) const { return client_->has_capability(c); }
void Connection::ignore_capabilities(const std::vector<std::string>& caps) { client_->ignore_capabilities(caps); }
void Connection::require_capability(std::string_view c) const { client_->require_capability(c); }
bool Connection::compressed() const { return client_->compressed(); }
bool Connection::encrypted() const { return client_->encrypted(); }
ServerTraffic Connection::traffic() const { return client_->traffic(); }
const PlannedChanges& Connection::planned_changes() const {
  static const PlannedChanges kNone;
  auto* dry = client_->dry_run();
  return dry != nullptr ? dry->planned : kNone;
}

std::vector<std::string> Connection::enable(const std::vector<std::string>& capabilities) {
  // RFC 5161 3.1
  require_capability("ENABLE");
  std::vector<std::string> enabled;
  auto cmd = client_->command("ENABLE");
  for (const auto& c : capabilities) cmd.raw(c);
  client_->run(cmd.build(), [&](const Response& r) {
    if (auto* e = std::get_if<detail::imap::EnabledData>(&r.data)) {
      enabled.insert(enabled.end(), e->capabilities.begin(), e->capabilities.end());
      return true;
    }
    return false;
  });
  return enabled;
}

// What a list_begin() left for its list_end(); the handler of the
// commands in flight holds it too.
struct INTERIMAP_LOCAL Connection::PendingList::State {
  bool with_status = false, list_status = false;
  bool lsub = false;  // LSUB answers mark subscriptions (no LIST-EXTENDED)
  std::vector<std::string> status_items;
  std::vector<uint64_t> ids;
  std::vector<MailboxInfo> result;
  std::map<std::string, size_t, std::less<>> index;
};

namespace {

// The LIST and STATUS answers into `st`; the commands in flight share it
// (their handler outlives a PendingList dropped by an exception).
Client::UntaggedHandler list_handler(std::shared_ptr<Connection::PendingList::State> st);

}  // namespace

namespace {

Client::UntaggedHandler list_handler(std::shared_ptr<Connection::PendingList::State> st) {
  return [st = std::move(st)](const Response& r) {
    auto& result = st->result;
    auto& index = st->index;
    if (auto* l = std::get_if<ListData>(&r.data)) {
      if (l->lsub) {
        // Without LIST-EXTENDED, LSUB (sent after the LISTs, so answered
        // after them) marks the listed mailboxes that are subscribed; a
        // name not listed is not ours to add.
        if (!st->lsub) return false;
        if (auto it = index.find(l->mailbox); it != index.end() && !has_flag(result[it->second].flags, "\\Subscribed"))
          result[it->second].flags.emplace_back("\\Subscribed");
        return true;
      }
      auto [it, fresh] = index.try_emplace(l->mailbox, result.size());
      if (fresh) result.emplace_back();
      MailboxInfo& m = result[it->second];
      m.name = l->mailbox;
      m.delimiter = l->delimiter;
      m.flags = l->flags;
      return true;
    }
    if (auto* s = std::get_if<StatusData>(&r.data)) {
      auto [it, fresh] = index.try_emplace(s->mailbox, result.size());
      if (fresh) {
        result.emplace_back();
        result.back().name = s->mailbox;
      }
      MailboxInfo& m = result[it->second];
      if (s->messages) m.messages = s->messages;
      if (s->uidnext) m.uidnext = s->uidnext;
      if (s->uidvalidity) m.uidvalidity = s->uidvalidity;
      if (s->highestmodseq) m.highestmodseq = s->highestmodseq;
      return true;
    }
    return false;
  };
}

}  // namespace

namespace {

// The reference's byte counts: as they are below 1 KiB, else with two
// decimals and K, M or G (powers of 1024).
std::string kibi(uint64_t n) {
  if (n < 1024) return std::to_string(n);
  if (n < (uint64_t{1} << 20)) return fmt::format("{:.2f}K", static_cast<double>(n) / 1024.0);
  if (n < (uint64_t{1} << 30)) return fmt::format("{:.2f}M", static_cast<double>(n) / 1048576.0);
  return fmt::format("{:.2f}G", static_cast<double>(n) / 1073741824.0);
}

}  // namespace

std::string describe(const ServerTraffic& t) {
  auto part = [](uint64_t plain, const std::optional<uint64_t>& compressed) {
    std::string s = kibi(plain);
    if (compressed && plain > 0)
      s += fmt::format(" (compr. {}, factor {:.2f})", kibi(*compressed),
                       static_cast<double>(*compressed) / static_cast<double>(plain));
    return s;
  };
  return fmt::format("IMAP traffic (bytes): recv {} sent {}", part(t.received, t.received_compressed),
                     part(t.sent, t.sent_compressed));
}


std::vector<MailboxInfo> Connection::list(const std::vector<std::string>& patterns,
                                          const std::vector<std::string>& select_opts, std::string_view reference,
                                          bool with_status, bool with_messages) {
  PendingList pending = list_begin(patterns, select_opts, reference, with_status, with_messages);
  return list_end(pending);
}

Connection::PendingList Connection::list_begin(const std::vector<std::string>& patterns,
                                               const std::vector<std::string>& select_opts, std::string_view reference,
                                               bool with_status, bool with_messages) {
  const bool extended = client_->has_capability("LIST-EXTENDED");
  const bool list_status = with_status && client_->has_capability("LIST-STATUS");
  const bool condstore = client_->has_capability("CONDSTORE");
  if (!select_opts.empty() && !extended)
    throw ProtocolError(name(), "list-select-opts needs the LIST-EXTENDED capability");
  auto state = std::make_shared<PendingList::State>();
  state->with_status = with_status;
  state->list_status = list_status;
  auto& status_items = state->status_items;
  status_items = {"UIDNEXT", "UIDVALIDITY"};
  if (with_messages) status_items.insert(status_items.begin(), "MESSAGES");
  if (condstore) status_items.push_back("HIGHESTMODSEQ");


  std::vector<std::string> pats = patterns.empty() ? std::vector<std::string>{"*"} : patterns;
  auto& ids = state->ids;
  const Client::UntaggedHandler on_untagged = list_handler(state);
  if (extended) {
    // RFC 5258: one LIST with every pattern; RFC 5819 LIST-STATUS adds STATUS.
    auto cmd = client_->command("LIST");
    if (!select_opts.empty()) cmd.raw(paren_list(select_opts));
    cmd.string(reference);
    // RFC 5258 3: one pattern goes as it is when it is a list-mailbox
    // atom (RFC 3501 9: ATOM-CHAR, list-wildcards, resp-specials), as
    // `LIST "" *`; several go as a parenthesized list of strings.
    auto is_list_char = [](char ch) {
      const auto u = static_cast<unsigned char>(ch);
      return u > 0x20 && u < 0x7f && std::string_view("(){\"\\").find(ch) == std::string_view::npos;
    };
    std::string plist;
    if (pats.size() == 1 && !pats[0].empty() && std::all_of(pats[0].begin(), pats[0].end(), is_list_char)) {
      plist = pats[0];
    } else {
      plist = "(";
      for (size_t i = 0; i < pats.size(); ++i) {
        if (i) plist += ' ';
        plist += detail::imap::quote(pats[i]);
      }
      plist += ')';
    }
    // Patterns with 8-bit or control bytes are not expected (they are
    // modified UTF-7); quote() requires none.
    cmd.raw(plist);
    std::vector<std::string> ret = {"SUBSCRIBED"};
    if (list_status) ret.push_back("STATUS " + paren_list(status_items));
    cmd.raw("RETURN " + paren_list(ret));
    ids.push_back(client_->send(cmd.build(), on_untagged));
  } else {
    for (const auto& p : pats) ids.push_back(client_->send(client_->command("LIST").string(reference).string(p).build(), on_untagged));
    // RFC 3501 6.3.9: the subscriptions, which LIST RETURN (SUBSCRIBED)
    // would have given, for a synchronization's listing.
    if (with_status) {
      state->lsub = true;
      for (const auto& p : pats)
        ids.push_back(client_->send(client_->command("LSUB").string(reference).string(p).build(), on_untagged));
    }
  }
  PendingList pending;
  pending.state_ = std::move(state);
  return pending;
}

std::vector<MailboxInfo> Connection::list_end(PendingList& pending) {
  if (!pending.state_) throw std::logic_error("Connection::list_end: no list_begin() pending");
  const std::shared_ptr<PendingList::State> state = std::move(pending.state_);
  auto& ids = state->ids;
  auto& result = state->result;
  const auto& status_items = state->status_items;
  for (uint64_t id : ids) client_->wait(id);

  if (state->with_status && !state->list_status) {
    const Client::UntaggedHandler on_untagged = list_handler(state);
    // No LIST-STATUS: pipeline one STATUS per selectable mailbox.
    ids.clear();
    for (const auto& m : result)
      if (m.selectable())
        ids.push_back(client_->send(client_->command("STATUS").mailbox(m.name).raw(paren_list(status_items)).build(),
                                    on_untagged));
    for (uint64_t id : ids) client_->wait(id);
  }
  return std::move(result);
}

namespace {

// A dry run's answer to a mailbox command it did not send.
CommandStatus dry_ok() {
  CommandStatus st;
  st.text = "dry run: not sent";
  return st;
}

}  // namespace

CommandStatus Connection::create(std::string_view mailbox) {
  if (auto* dry = client_->dry_run()) {
    dry->planned.created.emplace_back(mailbox);
    dry->created.emplace(mailbox);
    return dry_ok();
  }
  return to_command_status(client_->run(client_->command("CREATE").mailbox(mailbox).build(), {}, true));
}

std::vector<CommandStatus> Connection::create(const std::vector<std::string>& mailboxes) {
  // In windows, so that the commands queued stay bounded.
  constexpr size_t kWindow = 256;
  std::vector<CommandStatus> out;
  out.reserve(mailboxes.size());
  if (client_->dry_run() != nullptr) {
    for (const auto& m : mailboxes) out.push_back(create(m));  // recorded, not sent
    return out;
  }
  for (size_t first = 0; first < mailboxes.size(); first += kWindow) {
    std::vector<uint64_t> ids;
    for (size_t i = first; i < std::min(mailboxes.size(), first + kWindow); ++i)
      ids.push_back(client_->send(client_->command("CREATE").mailbox(mailboxes[i]).build()));
    for (uint64_t id : ids) out.push_back(to_command_status(client_->wait(id, true)));
  }
  return out;
}

CommandStatus Connection::delete_mailbox(std::string_view mailbox) {
  if (auto* dry = client_->dry_run()) {
    dry->planned.deleted.emplace_back(mailbox);
    if (const auto it = dry->created.find(mailbox); it != dry->created.end()) dry->created.erase(it);
    return dry_ok();
  }
  return to_command_status(client_->run(client_->command("DELETE").mailbox(mailbox).build(), {}, true));
}

CommandStatus Connection::rename(std::string_view from, std::string_view to) {
  if (auto* dry = client_->dry_run()) {
    dry->planned.renamed.emplace_back(from, to);
    return dry_ok();
  }
  return to_command_status(client_->run(client_->command("RENAME").mailbox(from).mailbox(to).build(), {}, true));
}

CommandStatus Connection::subscribe(std::string_view mailbox) {
  if (auto* dry = client_->dry_run()) {
    dry->planned.subscribed.emplace_back(mailbox);
    return dry_ok();
  }
  return to_command_status(client_->run(client_->command("SUBSCRIBE").mailbox(mailbox).build(), {}, true));
}

CommandStatus Connection::unsubscribe(std::string_view mailbox) {
  if (auto* dry = client_->dry_run()) {
    dry->planned.unsubscribed.emplace_back(mailbox);
    return dry_ok();
  }
  return to_command_status(client_->run(client_->command("UNSUBSCRIBE").mailbox(mailbox).build(), {}, true));
}

std::optional<char> Connection::hierarchy_delimiter(std::string_view reference) {
  std::vector<std::optional<char>> found;
  client_->run(client_->command("LIST").string(reference).string("").build(), [&](const Response& r) {
    const auto* l = std::get_if<ListData>(&r.data);
    if (l == nullptr || l->lsub) return false;
    found.push_back(l->delimiter);
    return true;
  });
  if (found.size() != 1) throw ProtocolError(name(), "Missing or unexpected (unsolicited) LIST response.");
  return found.front();
}

std::optional<std::pair<uint32_t, uint32_t>> Connection::append(std::string_view mailbox, std::string_view message,
                                                                const std::vector<std::string>& flags,
                                                                std::string_view internaldate) {
  if (auto* dry = client_->dry_run()) {
    auto& m = dry->planned.mailboxes[std::string(mailbox)];
    ++m.appended;
    m.appended_bytes += message.size();
    return std::nullopt;
  }
  auto cmd = client_->command("APPEND").mailbox(mailbox);
  if (!flags.empty()) cmd.raw(paren_list(flags));
  if (!internaldate.empty()) cmd.string(internaldate);
  cmd.literal(message);
  auto st = client_->run(cmd.build());
  if (st.code.kind == ResponseCode::Kind::AppendUid && st.code.uids.size() == 1)
    return std::make_pair(static_cast<uint32_t>(st.code.number), st.code.uids.ranges().front().first);
  return std::nullopt;
}

void Connection::noop() { client_->run(client_->command("NOOP").build()); }

void Connection::unselect() {
  // BAD when nothing is selected (e.g. a FETCH seen outside a SELECT): fine.
  const StatusResponse st = client_->run(client_->command("UNSELECT").build(), {}, true);
  if (st.kind == StatusResponse::Kind::Ok) client_->mailbox_session().server_selected = false;
}

void Connection::abort() noexcept { client_->abort(); }

void Connection::notify_set(const std::vector<std::string>& mailboxes) {
  if (!client_->has_capability("NOTIFY"))
    throw ProtocolError(name(), "server lacks required capability NOTIFY (RFC 5465), needed by --notify");
  // RFC 5465 6: with SELECTED, MessageNew and MessageExpunge go together,
  // and FlagChange needs both.  No fetch-att after MessageNew: new
  // messages are fetched by the synchronization pass, not pushed.
  static constexpr std::string_view kMessageEvents = "(MessageNew MessageExpunge FlagChange)";
  auto cmd = client_->command("NOTIFY");
  cmd.raw(fmt::format("SET (SELECTED {})", kMessageEvents));
  // Names from LIST are modified UTF-7 (7-bit): quoted strings in one
  // group; anything that cannot be quoted gets a group of its own, where
  // the builder may send it as a literal.
  std::vector<std::string> quoted;
  std::vector<const std::string*> others;
  for (const auto& m : mailboxes) {
    const bool quotable = !m.empty() && std::all_of(m.begin(), m.end(), [](char c) {
      auto u = static_cast<unsigned char>(c);
      return u >= 0x20 && u < 0x7f;
    });
    if (quotable)
      quoted.push_back(detail::imap::quote(m));
    else
      others.push_back(&m);
  }
  if (!quoted.empty()) cmd.raw(fmt::format("(MAILBOXES ({}) {})", fmt::join(quoted, " "), kMessageEvents));
  for (const std::string* m : others) cmd.raw("(MAILBOXES").mailbox(*m).raw(std::string(kMessageEvents) + ")");
  cmd.raw("(PERSONAL (MailboxName SubscriptionChange))");
  client_->track_activity(true);
  // Dovecot 2.3.19 stops notifying after every other NOTIFY SET that
  // replaces an earlier one (seen with its imap binary: SET, SET, change
  // -> nothing; a third SET works again).  NOTIFY NONE first, pipelined
  // with the SET in the same write, avoids that for one more command.
  const uint64_t none = client_->send(client_->command("NOTIFY").raw("NONE").build());
  const uint64_t set = client_->send(cmd.build());
  client_->wait(none);
  client_->wait(set);
}

void Connection::notify_none() {
  require_capability("NOTIFY");
  client_->run(client_->command("NOTIFY").raw("NONE").build());
}

void Connection::track_activity(bool on) { client_->track_activity(on); }

ServerActivity Connection::take_activity() { return client_->take_activity(); }

Connection::WaitResult Connection::wait_any(const std::vector<Connection*>& connections,
                                            std::chrono::milliseconds timeout, int wake_fd) {
  std::vector<Connection*> open;
  for (Connection* c : connections)
    if (c != nullptr && c->is_open()) open.push_back(c);
  // Bytes already decrypted or inflated above the descriptor are invisible
  // to poll(2): read them first.
  bool got = false;
  for (Connection* c : open)
    if (c->client_->buffered()) got = c->client_->poll(0) || got;
  if (got) return WaitResult::Data;

  std::vector<pollfd> fds;
  for (Connection* c : open) fds.push_back({c->client_->fd(), POLLIN, 0});
  if (wake_fd >= 0) fds.push_back({wake_fd, POLLIN, 0});
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int r;
  while (true) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    const auto ms = std::clamp<std::chrono::milliseconds::rep>(left.count(), 0, std::numeric_limits<int>::max());
    r = ::poll(fds.data(), fds.size(), static_cast<int>(ms));
    if (r >= 0) break;
    if (errno != EINTR) throw NetworkError(fmt::format("poll: {}", std::strerror(errno)));
    // A signal: its handler may have written to wake_fd; poll again.
  }
  if (r == 0) return WaitResult::Timeout;
  for (size_t i = 0; i < open.size(); ++i)
    if (fds[i].revents != 0) got = open[i]->client_->poll(0) || got;
  if (got) return WaitResult::Data;
  if (wake_fd >= 0 && fds.back().revents != 0) return WaitResult::Woken;
  return WaitResult::Data;  // readable but nothing complete yet (a partial TLS record)
}

}  // namespace interimap
