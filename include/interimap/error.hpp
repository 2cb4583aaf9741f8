// Error types thrown by libinterimap.
//
// Errors are sorted by what they abandon (doc/design.md "Errors"): a ConfigError stops
// before anything is opened; a NetworkError or ProtocolError ends one
// connection; a CommandError reports a NO or BAD for one command and leaves
// the connection usable.  Every message names what and where.
#pragma once

#include <interimap/export.hpp>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>

namespace interimap {

// Every error names where it happened: its component is the connection
// or section name ("local", "remote", a pullimap section), "database", or
// "" when nothing in particular; what() reads "COMPONENT: MESSAGE" (just
// MESSAGE without a component), the reference's "NAME: ERROR: MESSAGE"
// log line is component() and message().
class INTERIMAP_API Error : public std::runtime_error {
 public:
  // No component: what() is the message.
  explicit Error(const std::string& message) : std::runtime_error(message) {}
  Error(std::string component, const std::string& message)
      : std::runtime_error(component.empty() ? message : component + ": " + message),
        component_(std::move(component)),
        prefix_(component_.empty() ? 0 : component_.size() + 2) {}
  const std::string& component() const noexcept { return component_; }
  // what() without the "COMPONENT: " prefix.
  const char* message() const noexcept { return what() + prefix_; }

 private:
  std::string component_;
  std::size_t prefix_ = 0;
};

// A bad configuration file, option or value.  The message names the file,
// section, option and value.
class INTERIMAP_API ConfigError : public Error {
 public:
  using Error::Error;
};

// The connection could not be opened, was lost, or TLS failed.
class INTERIMAP_API NetworkError : public Error {
 public:
  using Error::Error;
};

// The server broke the protocol: a malformed response (quoted with its
// offset), a missing required capability, an unexpected BYE.
class INTERIMAP_API ProtocolError : public Error {
 public:
  using Error::Error;
};

// A command completed with NO or BAD.  what() reads
// "NAME: COMMAND: NO [CODE] server text"; component() is NAME.
class INTERIMAP_API CommandError : public Error {
 public:
  CommandError(std::string component, const std::string& message, std::string command, std::string status,
               std::string code, std::string text)
      : Error(std::move(component), message),
        command_(std::move(command)),
        status_(std::move(status)),
        code_(std::move(code)),
        text_(std::move(text)) {}
  // The command name, e.g. "LOGIN" or "UID STORE".
  const std::string& command() const noexcept { return command_; }
  // "NO" or "BAD".
  const std::string& status() const noexcept { return status_; }
  // The response code's name without brackets (e.g. "TRYCREATE"), or empty.
  const std::string& code() const noexcept { return code_; }
  // The server's human-readable text.
  const std::string& text() const noexcept { return text_; }

 private:
  std::string command_, status_, code_, text_;
};

}  // namespace interimap
