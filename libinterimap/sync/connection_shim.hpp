// TEMPORARY: the Connection operations the engine needs, until Connection
// offers them itself (removed in the same change series).
#pragma once

#include <interimap/connection.hpp>
#include <interimap/error.hpp>

#include "imap/client.hpp"

#include <fmt/format.h>

#include <optional>
#include <string>
#include <string_view>

namespace interimap::detail::sync::shim {

struct CommandStatus {
  enum class Kind { Ok, No, Bad };
  Kind kind = Kind::Ok;
  std::string text_;
  bool ok() const { return kind == Kind::Ok; }
  std::string describe() const { return text_; }
};

inline CommandStatus command(Connection& c, std::string_view verb, std::string_view mbx, std::string_view mbx2 = {}) {
  using detail::imap::StatusResponse;
  auto cmd = c.client().command(verb).mailbox(mbx);
  if (!mbx2.empty()) cmd.mailbox(mbx2);
  const StatusResponse st = c.client().run(cmd.build(), {}, true);
  const char* kind = st.kind == StatusResponse::Kind::No ? "NO" : st.kind == StatusResponse::Kind::Bad ? "BAD" : "OK";
  std::string code = st.code.name.empty() ? "" : fmt::format("[{}{}{}] ", st.code.name, st.code.raw.empty() ? "" : " ", st.code.raw);
  CommandStatus r;
  r.kind = st.kind == StatusResponse::Kind::No    ? CommandStatus::Kind::No
           : st.kind == StatusResponse::Kind::Bad ? CommandStatus::Kind::Bad
                                                  : CommandStatus::Kind::Ok;
  r.text_ = fmt::format("{} {}{}", kind, code, st.text);
  return r;
}
inline CommandStatus create(Connection& c, std::string_view m) { return command(c, "CREATE", m); }
inline CommandStatus delete_mailbox(Connection& c, std::string_view m) { return command(c, "DELETE", m); }
inline CommandStatus rename(Connection& c, std::string_view a, std::string_view b) { return command(c, "RENAME", a, b); }
inline CommandStatus subscribe(Connection& c, std::string_view m) { return command(c, "SUBSCRIBE", m); }
inline CommandStatus unsubscribe(Connection& c, std::string_view m) { return command(c, "UNSUBSCRIBE", m); }
inline std::optional<char> hierarchy_delimiter(Connection& c, std::string_view reference) {
  std::vector<std::optional<char>> found;
  c.client().run(c.client().command("LIST").string(reference).string("").build(),
                 [&](const detail::imap::Response& r) {
                   const auto* l = std::get_if<detail::imap::ListData>(&r.data);
                   if (l == nullptr || l->lsub) return false;
                   found.push_back(l->delimiter);
                   return true;
                 });
  if (found.size() != 1) throw SyncError(c.name(), "Missing or unexpected (unsolicited) LIST response.");
  return found.front();
}

}  // namespace interimap::detail::sync::shim
