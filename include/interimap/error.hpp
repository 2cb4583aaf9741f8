// Error types thrown by libinterimap.
//
// Errors are sorted by what they abandon (STYLE.md 10): a ConfigError stops
// before anything is opened; a NetworkError or ProtocolError ends one
// connection; a CommandError reports a NO or BAD for one command and leaves
// the connection usable.  Every message names what and where.
#pragma once

#include <stdexcept>
#include <string>

namespace interimap {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A bad configuration file, option or value.  The message names the file,
// section, option and value.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// The connection could not be opened, was lost, or TLS failed.
class NetworkError : public Error {
 public:
  using Error::Error;
};

// The server broke the protocol: a malformed response (quoted with its
// offset), a missing required capability, an unexpected BYE.
class ProtocolError : public Error {
 public:
  using Error::Error;
};

// A command completed with NO or BAD.  what() reads
// "NAME: COMMAND: NO [CODE] server text".
class CommandError : public Error {
 public:
  CommandError(std::string message, std::string command, std::string status, std::string code,
               std::string text)
      : Error(std::move(message)),
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
