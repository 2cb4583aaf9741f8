// The library's own way into a Connection's IMAP client (leveldb's
// WriteBatchInternal pattern): the Mailbox layer sends its commands
// through it.  Private to libinterimap/imap/; everything else uses the
// public Connection API.
#pragma once

#include <interimap/connection.hpp>

namespace interimap::detail::imap {

class Client;

class ConnectionInternal {
 public:
  static Client& client(Connection& connection) { return *connection.client_; }
};

}  // namespace interimap::detail::imap
