#include "imap/client.hpp"
#include "auth/sasl.hpp"
#include "auth/secret_command.hpp"
#include "util/ascii.hpp"

#include <interimap/error.hpp>

#include <fmt/format.h>
#include <openssl/evp.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>

namespace interimap::detail::imap {

namespace {

using detail::iequals;


std::string base64(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()), static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

// RFC 4648 base64 (RFC 3501 6.2.2's challenges); nullopt when invalid.
std::optional<std::string> unbase64(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out(text.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) return std::nullopt;
  // EVP_DecodeBlock counts the padding as zero bytes.
  size_t len = static_cast<size_t>(n);
  for (size_t i = text.size(); i > 0 && text[i - 1] == '=' && len > 0; --i) --len;
  out.resize(len);
  return out;
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

// A debug rendering of outgoing chunks [first, last): literal contents
// elided as the reference does ("[...]"), the final CRLF removed.
std::string render_chunks(const Command& cmd, size_t first, size_t last) {
  std::string out;
  for (size_t chunk = first; chunk < last; ++chunk) {
    const std::string& text = cmd.chunks[chunk];
    size_t pos = 0;
    for (const auto& span : cmd.literals) {
      if (span.chunk != chunk) continue;
      out.append(text, pos, span.offset - pos);
      out += "[...]";
      pos = span.offset + span.length;
    }
    out.append(text, pos, std::string::npos);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

}  // namespace

Client::Client(ConnectionOptions options, Logger& logger)
    : options_(std::move(options)), logger_(&logger), buf_(64 * 1024) {
  if (options_.dry_run) dry_run_ = std::make_unique<DryRunState>();
}

Client::~Client() { close(); }

bool Client::has_capability(std::string_view cap) const {
  auto is = [&](const std::string& c) { return iequals(c, cap); };
  return std::any_of(capabilities_.begin(), capabilities_.end(), is) && std::none_of(ignored_.begin(), ignored_.end(), is);
}

void Client::ignore_capabilities(std::vector<std::string> caps) {
  ignored_.insert(ignored_.end(), std::make_move_iterator(caps.begin()), std::make_move_iterator(caps.end()));
}

void Client::require_capability(std::string_view cap) const {
  if (!has_capability(cap)) throw ProtocolError(name(), fmt::format("server lacks required capability {}", cap));
}

LiteralMode Client::literal_mode() const {
  if (has_capability("LITERAL+")) return LiteralMode::Plus;
  if (has_capability("LITERAL-")) return LiteralMode::Minus;
  return LiteralMode::Sync;
}

int Client::fd() const { return stream_ ? stream_->fd() : -1; }

bool Client::buffered() const { return stream_ && stream_->buffered(); }

void Client::set_capabilities(std::vector<std::string> caps) { capabilities_ = std::move(caps); }

void Client::open() {
  if (stream_) return;
  stream_ = open_stream(options_, logger_->debug());
  encrypted_ = options_.type == ConnectionOptions::Type::Imaps;
  greeting();
  if (!preauth_) {
    if (capabilities_.empty()) refresh_capabilities();
    if (options_.type == ConnectionOptions::Type::Imap && options_.starttls) starttls();
    authenticate();
  } else if (options_.type == ConnectionOptions::Type::Imap && options_.starttls) {
    throw ProtocolError(
        name(),
        fmt::format("PREAUTH greeting on a plaintext connection to {}:{}; refusing it (set STARTTLS = NO to accept)",
                    options_.host, options_.effective_port()));
  }
  if (capabilities_.empty()) refresh_capabilities();
  // RFC 4978 4: COMPRESS only after STARTTLS and authentication.
  if (options_.compress && has_capability("COMPRESS=DEFLATE")) start_compress();
}

void Client::greeting() {
  // RFC 3501 7.1: the greeting is an untagged OK, PREAUTH or BYE.
  while (true) {
    std::optional<std::string> raw = reader_.next();
    if (!raw) {
      size_t n = stream_->read(buf_);
      traffic_.received += n;
      if (n == 0) lost("while waiting for the greeting");
      try {
        reader_.feed(std::string_view(buf_.data(), n));
      } catch (const ProtocolError& e) {
        throw ProtocolError(name(), e.what());
      }
      continue;
    }
    if (logger_->debug() > 0) logger_->log(LogLevel::Debug, name(), {}, "S: " + describe_response(*raw));
    Response r;
    try {
      r = parse_response(*raw);
    } catch (const ProtocolError& e) {
      throw ProtocolError(name(), e.what());
    }
    const auto* st = std::get_if<StatusResponse>(&r.data);
    if (r.type != Response::Type::Untagged || st == nullptr ||
        (st->kind != StatusResponse::Kind::Ok && st->kind != StatusResponse::Kind::Preauth &&
         st->kind != StatusResponse::Kind::Bye))
      throw ProtocolError(name(), fmt::format("unexpected greeting: {}", describe_response(*raw)));
    if (st->kind == StatusResponse::Kind::Bye)
      throw NetworkError(name(), fmt::format("server refused the connection: BYE {}", st->text));
    preauth_ = st->kind == StatusResponse::Kind::Preauth;
    if (st->code.kind == ResponseCode::Kind::Capability) set_capabilities(st->code.list);
    return;
  }
}

void Client::refresh_capabilities() {
  capabilities_.clear();
  run(CommandBuilder("CAPABILITY").build());
  if (capabilities_.empty()) throw ProtocolError(name(), "CAPABILITY returned no capability list");
}

void Client::starttls() {
  // RFC 2595 5.1 / RFC 3501 6.2.1: abort if STARTTLS is not advertised.
  if (!has_capability("STARTTLS"))
    throw ProtocolError(name(), fmt::format("server {}:{} did not advertise STARTTLS (set STARTTLS = NO to go without)",
                                            options_.host, options_.effective_port()));
  switching_ = true;
  switched_ = false;
  run(CommandBuilder("STARTTLS").build());
  switching_ = false;
  if (!reader_.idle() || stream_->buffered())
    throw ProtocolError(name(), "server sent data after STARTTLS's OK (injection?)");
  stream_ = start_tls(std::move(stream_), options_);
  encrypted_ = true;
  // RFC 3501 6.2.1: forget capabilities learnt before TLS.
  refresh_capabilities();
}

void Client::authenticate() {
  std::vector<std::string> advertised = {"LOGIN"};
  for (const auto& c : capabilities_)
    if (c.size() > 5 && iequals(std::string_view(c).substr(0, 5), "AUTH=")) {
      std::string m = c.substr(5);
      std::transform(m.begin(), m.end(), m.begin(), [](unsigned char ch) { return std::toupper(ch); });
      advertised.push_back(std::move(m));
    }
  // The first mechanism of `auth` that both sides support, skipping those
  // that would send the secret as it is where it must not go: after
  // LOGINDISABLED (RFC 3501 6.2.3), or without TLS on a network
  // connection unless auth-cleartext = YES.
  const bool logindisabled = has_capability("LOGINDISABLED");
  const bool cleartext = !encrypted_ && options_.type != ConnectionOptions::Type::Tunnel && !options_.auth_cleartext;
  std::string mech;
  std::vector<std::string> refused_disabled, refused_clear, unsupported;
  for (const auto& want : options_.auth) {
    std::string w = want;
    std::transform(w.begin(), w.end(), w.begin(), [](unsigned char ch) { return std::toupper(ch); });
    if (std::find(advertised.begin(), advertised.end(), w) == advertised.end()) continue;
    if (!auth::supported(w)) {
      unsupported.push_back(w);
    } else if (logindisabled && (w == "LOGIN" || w == "PLAIN")) {
      refused_disabled.push_back(w);
    } else if (cleartext && auth::sends_secret_in_clear(w)) {
      refused_clear.push_back(w);
    } else {
      mech = w;
      break;
    }
  }
  if (mech.empty()) {
    if (!refused_clear.empty())
      throw ProtocolError(
          name(), fmt::format("refusing to send the {} in cleartext ({}) over an unencrypted connection to {}:{}; use "
                              "type = imaps or STARTTLS, or set auth-cleartext = YES",
                              auth::uses_token(refused_clear.front()) ? "access token" : "password",
                              fmt::join(refused_clear, ", "), options_.host, options_.effective_port()));
    if (!refused_disabled.empty())
      throw ProtocolError(name(), fmt::format("logins are disabled (LOGINDISABLED): the server refuses {} here, and "
                                              "no other mechanism of auth = {} is advertised",
                                              fmt::join(refused_disabled, ", "), fmt::join(options_.auth, " ")));
    if (!unsupported.empty())
      throw ProtocolError(name(), fmt::format("authentication mechanism {} is not supported (supported: {})",
                                              fmt::join(unsupported, ", "),
                                              fmt::join(auth::known_mechanisms(), " ")));
    throw ProtocolError(name(), fmt::format("none of the authentication mechanisms '{}' is advertised by the server",
                                            fmt::join(options_.auth, " ")));
  }

  // The secrets: from the commands (run at every connection: a fresh
  // access token each time), else from the configuration.
  const std::chrono::milliseconds limit(std::chrono::seconds(options_.command_timeout));
  std::string username, secret;
  if (!options_.username_command.empty())
    username = run_secret_command(name(), "username-command", options_.username_command, limit);
  else if (options_.username)
    username = *options_.username;
  else
    throw ConfigError(name(), "missing option username (or username-command)");
  if (!options_.password_command.empty())
    secret = run_secret_command(name(), "password-command", options_.password_command, limit);
  else if (options_.password)
    secret = *options_.password;
  else
    throw ConfigError(name(), "missing option password (or password-command)");
  struct Wipe {
    std::string& s;
    ~Wipe() { std::fill(s.begin(), s.end(), '\0'); }
  } wipe_secret{secret};

  Command cmd;
  std::unique_ptr<auth::Mechanism> sasl;
  // What the continuation handler shares with this function (the command
  // may outlive it in inflight_ when the connection fails meanwhile).
  struct Exchange {
    auth::Mechanism* sasl = nullptr;
    std::optional<std::string> initial;  // not sent with SASL-IR: answers the first challenge
    std::optional<std::string> failure;  // why we cancelled the exchange ("*")
  };
  auto exchange = std::make_shared<Exchange>();
  if (mech == "LOGIN") {
    cmd = CommandBuilder("LOGIN", literal_mode()).astring(username).astring(secret).sensitive().build();
  } else {
    try {
      sasl = auth::start(mech, auth::Credentials{username, secret, options_.host, options_.effective_port()});
      if (!sasl) throw auth::SaslFailure(fmt::format("unsupported authentication mechanism {}", mech));
      exchange->sasl = sasl.get();
      exchange->initial = sasl->initial();
    } catch (const auth::SaslFailure& e) {
      throw ProtocolError(name(), e.what());
    }
    cmd.name = "AUTHENTICATE " + mech;
    cmd.sensitive = true;
    // RFC 4959 SASL-IR saves a round trip ("=" is an empty response).
    if (exchange->initial && has_capability("SASL-IR")) {
      cmd.chunks = {fmt::format("AUTHENTICATE {} {}\r\n", mech,
                                exchange->initial->empty() ? std::string("=") : base64(*exchange->initial))};
      exchange->initial.reset();
    } else {
      cmd.chunks = {fmt::format("AUTHENTICATE {}\r\n", mech)};
    }
  }
  const uint64_t id = send(std::move(cmd));
  if (mech != "LOGIN") {
    auto it = std::find_if(inflight_.begin(), inflight_.end(), [&](const Pending& p) { return p.id == id; });
    if (it != inflight_.end())
      it->on_continuation = [exchange](std::string_view text) -> std::string {
        // RFC 3501 6.2.2: each challenge is base64; "*" cancels.
        if (exchange->failure) return "*";
        if (exchange->initial) {
          std::string r = base64(*exchange->initial);
          exchange->initial.reset();
          return r;
        }
        std::optional<std::string> challenge = unbase64(text);
        if (!challenge) {
          exchange->failure = "the server's challenge is not base64";
          return "*";
        }
        try {
          return base64(exchange->sasl->step(*challenge));
        } catch (const auth::SaslFailure& e) {
          exchange->failure = e.what();
          return "*";
        }
      };
  }
  authenticating_ = true;
  StatusResponse st;
  try {
    st = wait(id, true);
  } catch (...) {
    authenticating_ = false;
    throw;
  }
  authenticating_ = false;
  if (exchange->failure) throw ProtocolError(name(), fmt::format("{} as {}: {}", mech, username, *exchange->failure));
  if (st.kind != StatusResponse::Kind::Ok) {
    if (auth::uses_token(mech)) {
      // RFC 7628 3.2.2: the error report came as a challenge.
      const std::optional<std::string> report = sasl ? sasl->error_challenge() : std::nullopt;
      throw CommandError(name(),
                         fmt::format("the access token was refused ({} as {}){}: {} {}", mech, username,
                                     report ? " [" + auth::describe_oauth_error(*report) + "]" : std::string(),
                                     status_name(st.kind), st.text),
                         "AUTHENTICATE", status_name(st.kind), st.code.name, st.text);
    }
    throw CommandError(
        name(), fmt::format("authentication ({}) as {} failed: {} {}", mech, username, status_name(st.kind), st.text),
        mech == "LOGIN" ? "LOGIN" : "AUTHENTICATE", status_name(st.kind), st.code.name, st.text);
  }
  if (sasl && !sasl->complete())
    throw ProtocolError(name(), fmt::format("{}: the server said OK before the exchange completed{}; refusing it",
                                            mech, auth::is_scram(mech)
                                                      ? " (without proving that it knows the password)"
                                                      : ""));
  options_.password.reset();  // no need to keep it around
  // Pre-login capabilities are stale unless the OK carried new ones.
  if (st.code.kind != ResponseCode::Kind::Capability) refresh_capabilities();
}

void Client::start_compress() {
  switching_ = true;
  switched_ = false;
  StatusResponse st = run(CommandBuilder("COMPRESS").raw("DEFLATE").build(), {}, true);
  switching_ = false;
  // RFC 4978 3: NO [COMPRESSIONACTIVE] means it already is (e.g. by TLS).
  if (st.kind != StatusResponse::Kind::Ok) {
    if (st.code.name == "COMPRESSIONACTIVE") return;
    throw CommandError(name(), fmt::format("COMPRESS DEFLATE: {} {}", status_name(st.kind), st.text), "COMPRESS",
                       status_name(st.kind), st.code.name, st.text);
  }
  if (!reader_.idle()) throw ProtocolError(name(), "server sent data after COMPRESS's OK");
  stream_ = start_deflate(std::move(stream_));
  compressed_ = true;
  // The wire bytes are those before COMPRESS plus the DEFLATE layer's (as
  // the reference counts its socket's bytes).
  before_compress_ = {traffic_.received, traffic_.sent};
}

void Client::close(bool logout) noexcept {
  if (!stream_) return;
  try {
    if (logout && !bye_) {
      // RFC 3501 6.1.3: the server answers BYE then the tagged OK.
      run(CommandBuilder("LOGOUT").build(), {}, true);
    }
  } catch (...) {
  }
  stream_->shutdown();
  drop_stream();
  inflight_.clear();
}

uint64_t Client::send(Command cmd, UntaggedHandler on_untagged) {
  // The dry run's guarantee, whatever the layers above ask: the callers
  // answer these locally (Connection, Mailbox); one that does not is a bug.
  if (dry_run_ && changes_server(cmd.name))
    throw std::logic_error(fmt::format("{}: dry run: refusing to send {}", name(), cmd.name));
  if (!stream_) throw NetworkError(name(), "not connected");
  uint64_t id = next_id_++;
  Pending p;
  p.id = id;
  p.tag = fmt::format("{:06}", id);
  p.cmd = std::move(cmd);
  p.handler = std::move(on_untagged);
  inflight_.push_back(std::move(p));
  pump_sends();
  return id;
}

void Client::trace_out(const Pending& p, size_t first, size_t last) {
  if (logger_->debug() == 0) return;
  std::string line;
  if (p.cmd.sensitive && logger_->debug() < 2) {
    line = first == 0 ? fmt::format("C: {} {} [REDACTED]", p.tag, p.cmd.name) : "C: [REDACTED]";
  } else {
    line = first == 0 ? fmt::format("C: {} {}", p.tag, render_chunks(p.cmd, 0, last))
                      : "C: " + render_chunks(p.cmd, first, last);
  }
  logger_->log(LogLevel::Debug, name(), {}, line);
}

void Client::send_chunks(Pending& p, std::vector<std::string_view>& parts) {
  // Chunk next_chunk, then those sent with it (moved LITERAL+ literals).
  const size_t first = p.next_chunk;
  do {
    parts.push_back(p.cmd.chunks[p.next_chunk]);
    ++p.next_chunk;
  } while (p.next_chunk < p.cmd.chunks.size() && !p.cmd.waits(p.next_chunk));
  trace_out(p, first, p.next_chunk);
}

void Client::write_parts(const std::vector<std::string_view>& parts) {
  if (parts.empty()) return;
  size_t n = 0;
  for (std::string_view v : parts) n += v.size();
  stream_->write_parts(parts);
  traffic_.sent += n;
}

void Client::pump_sends() {
  // Writes, in order, every queued command up to the first one that must
  // wait for a continuation request (RFC 3501 7.5), all in one gathered
  // write: a batch costs one TLS record / one flush, and a MULTIAPPEND's
  // messages go to the socket without being copied together.
  std::vector<std::string_view> parts;
  for (auto& p : inflight_) {
    if (p.next_chunk == p.cmd.chunks.size()) continue;  // fully sent
    if (p.next_chunk > 0) break;                         // waiting for '+'
    parts.push_back(p.tag);
    parts.push_back(" ");
    send_chunks(p, parts);
    if (p.next_chunk < p.cmd.chunks.size()) break;
  }
  write_parts(parts);
}

bool Client::poll(int timeout_ms) {
  if (!stream_) throw NetworkError(name(), "not connected");
  if (auto raw = reader_.next()) {  // framed earlier, not dispatched yet (see read_some)
    dispatch(*raw);
    while (auto more = reader_.next()) dispatch(*more);
    return true;
  }
  if (!stream_->buffered()) {
    struct pollfd pfd = {stream_->fd(), POLLIN, 0};
    int r;
    do {
      r = ::poll(&pfd, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    if (r < 0) throw NetworkError(name(), fmt::format("poll: {}", std::strerror(errno)));
    if (r == 0) return false;
  }
  read_some();
  return true;
}

void Client::read_some() {
  // Responses already framed but not dispatched (a handler threw while an
  // earlier read was dispatched) come first: the server may send nothing
  // more, so reading before them could block for ever.
  if (auto raw = reader_.next()) {
    dispatch(*raw);
    while (auto more = reader_.next()) dispatch(*more);
    return;
  }
  size_t n = stream_->read(buf_);
  traffic_.received += n;
  if (n == 0) lost("");
  try {
    reader_.feed(std::string_view(buf_.data(), n));
  } catch (const ProtocolError& e) {
    throw ProtocolError(name(), e.what());
  }
  while (auto raw = reader_.next()) dispatch(*raw);
}

void Client::lost(std::string_view why) {
  std::string reason = bye_ ? fmt::format("server said BYE {}", bye_text_) : std::string("connection closed by the server");
  std::string extra = stream_ ? stream_->end_reason() : std::string();
  drop_stream();
  throw NetworkError(
      name(), fmt::format("{}{}{}{}", reason, why.empty() ? "" : " ", why, extra.empty() ? "" : " (" + extra + ")"));
}

void Client::dispatch(std::string_view raw) {
  if (logger_->debug() > 0) {
    // A SASL challenge may carry proofs (SCRAM's server signature): shown
    // from debug level 2 only.
    if (authenticating_ && logger_->debug() < 2 && raw.starts_with("+"))
      logger_->log(LogLevel::Debug, name(), {}, "S: + [REDACTED]");
    else
      logger_->log(LogLevel::Debug, name(), {}, "S: " + describe_response(raw));
  }
  if (switching_ && switched_)
    throw ProtocolError(name(), fmt::format("unexpected data after the response that switches the stream layer: {}",
                                            describe_response(raw)));
  Response r;
  try {
    r = parse_response(raw);
  } catch (const ProtocolError& e) {
    throw ProtocolError(name(), e.what());
  }

  if (r.type == Response::Type::Continuation) {
    // RFC 3501 7.5: continues the command waiting for one.
    for (auto& p : inflight_) {
      if (p.on_continuation && !p.done) {
        // AUTHENTICATE: the mechanism answers each challenge.
        const std::string line = p.on_continuation(std::get<ContinuationData>(r.data).text) + "\r\n";
        if (logger_->debug() > 0)
          logger_->log(LogLevel::Debug, name(), {},
                      p.cmd.sensitive && logger_->debug() < 2 ? std::string("C: [REDACTED]")
                                                             : "C: " + line.substr(0, line.size() - 2));
        stream_->write(line);
        traffic_.sent += line.size();
        return;
      }
      if (p.next_chunk > 0 && p.next_chunk < p.cmd.chunks.size()) {
        if (p.manual_continuation) {
          // RFC 2177: "+ idling"; DONE goes when idle_done() says so.
          if (p.continued) break;
          p.continued = true;
          return;
        }
        std::vector<std::string_view> parts;
        send_chunks(p, parts);
        write_parts(parts);
        pump_sends();
        return;
      }
    }
    throw ProtocolError(name(), fmt::format("unexpected continuation request: {}", describe_response(raw)));
  }

  if (r.type == Response::Type::Tagged) {
    auto it = std::find_if(inflight_.begin(), inflight_.end(), [&](const Pending& p) { return p.tag == r.tag; });
    if (it == inflight_.end() || it->done)
      throw ProtocolError(name(), fmt::format("response with unknown tag: {}", describe_response(raw)));
    it->status = std::get<StatusResponse>(std::move(r.data));
    it->done = true;
    if (it->status.code.kind == ResponseCode::Kind::Capability) set_capabilities(it->status.code.list);
    if (switching_) switched_ = true;
    // A failed synchronizing literal is never continued: drop the rest.
    if (it->next_chunk < it->cmd.chunks.size()) {
      it->next_chunk = it->cmd.chunks.size();
      pump_sends();
    }
    return;
  }

  // Untagged: connection state first (RFC 3501 7.1.5, 7.2.1).
  if (auto* st = std::get_if<StatusResponse>(&r.data)) {
    if (st->code.kind == ResponseCode::Kind::Capability) set_capabilities(st->code.list);
    if (st->code.kind == ResponseCode::Kind::Alert) logger_->warning(name(), "ALERT: " + st->text);
    if (st->kind == StatusResponse::Kind::Bye) {
      bye_ = true;
      bye_text_ = st->text;
      return;
    }
  } else if (auto* caps = std::get_if<CapabilityData>(&r.data)) {
    set_capabilities(caps->capabilities);
  }
  bool claimed = false;
  for (auto& p : inflight_)
    if (!p.done && p.handler && p.handler(r)) {
      claimed = true;
      break;
    }
  if (track_activity_) note_activity(r, claimed);
  if (!claimed && untagged_) untagged_(r);
}

void Client::note_activity(const Response& r, bool claimed) {
  // RFC 5465 5.1-5.4: for a mailbox other than the selected one the
  // server sends STATUS (MessageNew, MessageExpunge, FlagChange) and LIST
  // (MailboxName, SubscriptionChange); a command asking for them claims
  // them.  For the selected mailbox it sends EXISTS, VANISHED (RFC 7162
  // 3.2.10) and FETCH, which cannot be told from a command's answers.
  if (const auto* s = std::get_if<StatusData>(&r.data)) {
    if (claimed) return;
    auto& v = activity_.mailboxes;
    auto it = std::lower_bound(v.begin(), v.end(), s->mailbox);
    if (it == v.end() || *it != s->mailbox) v.insert(it, s->mailbox);
  } else if (const auto* l = std::get_if<ListData>(&r.data)) {
    if (!claimed && !l->lsub) activity_.mailbox_list = true;
  } else if (std::holds_alternative<ExistsData>(r.data) || std::holds_alternative<ExpungeData>(r.data) ||
             std::holds_alternative<FetchData>(r.data)) {
    activity_.selected = true;
  } else if (const auto* v = std::get_if<VanishedData>(&r.data)) {
    if (!v->earlier) activity_.selected = true;
  } else if (const auto* st = std::get_if<StatusResponse>(&r.data)) {
    // RFC 5465 5.8: the server gave up notifying (as after NOTIFY NONE).
    if (st->code.kind == ResponseCode::Kind::Other && iequals(st->code.name, "NOTIFICATIONOVERFLOW"))
      activity_.overflow = true;
  }
}

ServerActivity Client::take_activity() {
  ServerActivity a = std::move(activity_);
  activity_ = ServerActivity{};
  return a;
}

uint64_t Client::idle_start(UntaggedHandler on_untagged) {
  Command cmd;
  cmd.name = "IDLE";
  cmd.chunks = {"IDLE\r\n", "DONE\r\n"};
  const uint64_t id = send(std::move(cmd), std::move(on_untagged));
  auto it = std::find_if(inflight_.begin(), inflight_.end(), [&](const Pending& p) { return p.id == id; });
  it->manual_continuation = true;
  while (true) {
    it = std::find_if(inflight_.begin(), inflight_.end(), [&](const Pending& p) { return p.id == id; });
    if (it == inflight_.end() || it->done || it->continued) return id;
    if (!stream_) throw NetworkError(name(), "not connected");
    read_some();
  }
}

StatusResponse Client::idle_done(uint64_t id, bool allow_failure) {
  auto it = std::find_if(inflight_.begin(), inflight_.end(), [&](const Pending& p) { return p.id == id; });
  if (it != inflight_.end() && !it->done && it->continued && it->next_chunk < it->cmd.chunks.size()) {
    if (!stream_) throw NetworkError(name(), "not connected");
    trace_out(*it, it->next_chunk, it->next_chunk + 1);
    stream_->write(it->cmd.chunks[it->next_chunk]);
    traffic_.sent += it->cmd.chunks[it->next_chunk].size();
    it->next_chunk = it->cmd.chunks.size();
    pump_sends();
  }
  return wait(id, allow_failure);
}

void Client::drop_stream() noexcept {
  if (!stream_) return;
  if (const auto c = stream_->compressed_counts()) closed_compressed_ = c;
  stream_.reset();
}

ServerTraffic Client::traffic() const {
  ServerTraffic t = traffic_;
  const auto c = stream_ ? stream_->compressed_counts() : closed_compressed_;
  if (c) {
    t.received_compressed = before_compress_.first + c->first;
    t.sent_compressed = before_compress_.second + c->second;
  }
  return t;
}

void Client::abort() noexcept {
  if (!stream_) return;
  try {
    stream_->shutdown();
  } catch (...) {
  }
  drop_stream();
  inflight_.clear();
}

StatusResponse Client::wait(uint64_t id, bool allow_failure) {
  while (true) {
    auto it = std::find_if(inflight_.begin(), inflight_.end(), [&](const Pending& p) { return p.id == id; });
    if (it == inflight_.end()) throw Error(name(), fmt::format("internal error: waiting for unknown command {}", id));
    if (it->done) {
      Pending p = std::move(*it);
      inflight_.erase(it);
      if (p.status.kind != StatusResponse::Kind::Ok && !allow_failure) command_failed(p);
      return std::move(p.status);
    }
    if (!stream_) throw NetworkError(name(), "not connected");
    read_some();
  }
}

void Client::command_failed(const Pending& p) {
  const StatusResponse& st = p.status;
  std::string code = st.code.kind == ResponseCode::Kind::None ? "" : "[" + st.code.name + "] ";
  std::string shown = p.cmd.sensitive ? p.cmd.name : render_chunks(p.cmd, 0, 1);
  throw CommandError(name(), fmt::format("command {} failed: {} {}{}", shown, status_name(st.kind), code, st.text),
                     p.cmd.name, status_name(st.kind), st.code.name, st.text);
}

}  // namespace interimap::detail::imap
