// Mailbox names in their three forms (interimap(1) "list-reference" and
// the hierarchy delimiters):
//  - the database form: the hierarchy delimiter is NUL, no list-reference
//    (the reference's schema; one name for both sides);
//  - a side's wire form: that server's delimiter, prefixed with its
//    list-reference (modified UTF-7, as LIST returns it);
//  - the pretty form of log lines: the local delimiter, no reference (the
//    reference's mbx_pretty).
// Pure: unit-tested (tests/unit/test_sync_units.cpp).
#pragma once

#include <interimap/statedb.hpp>

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace interimap::detail::sync {

// "INBOX" in any case is INBOX (RFC 3501 5.1); other names are kept as they are.
std::string normalize_inbox(std::string name);
// The reference's print_delimiter: "/" quoted ("\"/\"", "\"\\\\\""), NIL for none.
std::string print_delimiter(std::optional<char> delimiter);

class MailboxNames {
 public:
  void set_reference(Side side, std::string reference) { reference_[index(side)] = std::move(reference); }
  void set_delimiter(Side side, std::optional<char> delimiter) { delimiter_[index(side)] = delimiter; }
  const std::string& reference(Side side) const { return reference_[index(side)]; }
  std::optional<char> delimiter(Side side) const { return delimiter_[index(side)]; }

  // Database form -> the wire form of `side`.
  std::string wire(Side side, std::string_view name) const;
  // Database form -> the pretty form (log lines).
  std::string pretty(std::string_view name) const;
  // The wire form of `side` -> database form; nullopt when the name is
  // outside that side's list-reference.
  std::optional<std::string> database(Side side, std::string_view wire_name) const;
  // A name with the local delimiter (a MAILBOX argument) -> database form.
  std::string from_local(std::string name) const;

 private:
  std::array<std::string, 2> reference_;
  std::array<std::optional<char>, 2> delimiter_;
};

}  // namespace interimap::detail::sync
