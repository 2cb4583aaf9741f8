// Secrets from a command (the username-command and password-command
// options, mbsync's PassCmd): run at every connection, so that a command
// printing a fresh OAuth 2.0 access token keeps a long run going.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace interimap::detail {

// Runs `command` with /bin/sh -c, without a terminal (a session of its
// own: opening /dev/tty fails), standard input /dev/null, standard error
// passed through, at most `timeout` long (then its process group is
// killed).  Returns what it printed on standard output, one trailing
// newline (LF or CRLF) removed.  Throws Error "SECTION: OPTION `CMD` ...":
// it could not be started, exited non-zero or by a signal, timed out,
// printed nothing, printed more than one line, a NUL or control
// character, or more than 64 KiB.  The output is never part of a message.
std::string run_secret_command(const std::string& section, std::string_view option, const std::string& command,
                               std::chrono::milliseconds timeout);

}  // namespace interimap::detail
