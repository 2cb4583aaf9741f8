#include "sync/names.hpp"

#include "util/ascii.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace interimap::detail::sync {

namespace {

std::string replace_all(std::string s, char from, char to) {
  std::replace(s.begin(), s.end(), from, to);
  return s;
}

}  // namespace

std::string normalize_inbox(std::string name) {
  if (iequals(name, "INBOX")) return "INBOX";
  return name;
}

std::string print_delimiter(std::optional<char> delimiter) {
  if (!delimiter) return "NIL";
  if (*delimiter == '\\' || *delimiter == '"') return fmt::format("\"\\{}\"", *delimiter);
  return fmt::format("\"{}\"", *delimiter);
}

std::string MailboxNames::wire(Side side, std::string_view name) const {
  std::string s(name);
  if (const auto d = delimiter(side)) s = replace_all(std::move(s), '\0', *d);
  return reference(side) + s;
}

std::string MailboxNames::pretty(std::string_view name) const {
  std::string s(name);
  if (const auto d = delimiter(Side::Local)) s = replace_all(std::move(s), '\0', *d);
  return s;
}

std::optional<std::string> MailboxNames::database(Side side, std::string_view wire_name) const {
  const std::string& ref = reference(side);
  if (!wire_name.starts_with(ref)) return std::nullopt;
  std::string s(wire_name.substr(ref.size()));
  if (const auto d = delimiter(side)) s = replace_all(std::move(s), *d, '\0');
  return s;
}

std::string MailboxNames::from_local(std::string name) const {
  if (const auto d = delimiter(Side::Local)) return replace_all(std::move(name), *d, '\0');
  return name;
}

}  // namespace interimap::detail::sync
