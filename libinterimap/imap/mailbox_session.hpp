// What the Mailbox layer (imap/mailbox.cpp) knows about one connection: a
// member of its Client, so it lives and dies with the connection.
#pragma once

#include "imap/parser.hpp"
#include "imap/response.hpp"

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace interimap::detail::imap {

// FETCH bodies stream here instead of into the framed response: one buffer
// per message, queued in arrival order (several may be framed by one read
// before they are dispatched) and taken, in the same order, by whichever
// handler gets the FETCH response: every response with a streamed body
// takes exactly one.  One queue per connection, so that the FETCH of an
// abandoned fetch_messages() and the next one cannot mix bodies up.
// Memory: the messages of one read buffer plus the one in progress.
class BodyQueue final : public LiteralSink {
 public:
  void begin(uint64_t size) override {
    bodies_.emplace_back();
    // A bogus size must not make us allocate it up front.
    bodies_.back().reserve(static_cast<size_t>(std::min<uint64_t>(size, 64u << 20)));
  }
  void data(std::string_view chunk) override { bodies_.back().append(chunk); }
  void end() override {}
  // The oldest body; nullopt if none is queued (a bug: the framer and the
  // dispatcher disagree).
  std::optional<std::string> take() {
    if (bodies_.empty()) return std::nullopt;
    std::string body = std::move(bodies_.front());
    bodies_.pop_front();
    return body;
  }

 private:
  std::deque<std::string> bodies_;
};

// The state of a Mailbox, as the connection's untagged responses see it
// (Mailbox::State is the only implementation).
class SelectedMailbox {
 public:
  // An untagged response no command claimed; returns whether it concerned
  // the mailbox.
  virtual bool process(const Response& r) = 0;

 protected:
  ~SelectedMailbox() = default;
};

struct MailboxSession {
  bool qresync = false;
  bool condstore = false;  // ENABLE CONDSTORE done (Mailbox::enable_condstore)
  // Whether the server has a mailbox selected (ours or not): the next
  // SELECT then closes it with [CLOSED] (RFC 7162 3.2.11).
  bool server_selected = false;
  // The Mailbox state the server's mailbox-related responses go to.
  std::weak_ptr<SelectedMailbox> selected;
  // Whether the Client's untagged handler feeds `selected` yet.
  bool attached = false;
  BodyQueue bodies;
  // Commands an operation left unanswered when an exception cut it short.
  // Servers may run pipelined commands in parallel and interleave their
  // untagged responses (RFC 3501 5.5; Dovecot does so with FETCH), so the
  // next operation first waits for these: an abandoned FETCH must not
  // swallow the next one's responses.
  std::vector<uint64_t> abandoned;
};

}  // namespace interimap::detail::imap
