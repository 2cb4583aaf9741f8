// SASL mechanisms for IMAP AUTHENTICATE (RFC 3501 6.2.2, RFC 4959
// SASL-IR): PLAIN (RFC 4616), SCRAM-SHA-256 / SCRAM-SHA-1 (RFC 7677, RFC
// 5802) and CRAM-MD5 through GNU SASL, XOAUTH2 (Google's, Microsoft's) and
// OAUTHBEARER (RFC 7628).  The IMAP framing (base64, continuation
// requests, cancelling) is the client's (imap/client.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace interimap::detail::auth {

struct Credentials {
  std::string username;
  std::string secret;  // the password, or the OAuth 2.0 access token
  std::string host;    // for OAUTHBEARER's host= and GNU SASL's hostname
  uint16_t port = 0;
};

// A step the mechanism refuses (a challenge it cannot answer, a server
// signature that does not verify): the exchange is cancelled ("*").
class SaslFailure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Mechanism {
 public:
  virtual ~Mechanism() = default;
  // The initial response of a client-first mechanism (sent with SASL-IR,
  // or after the server's first empty challenge), nullopt when the server
  // speaks first (CRAM-MD5).
  virtual std::optional<std::string> initial() = 0;
  // The answer to a server challenge (decoded).  Throws SaslFailure.
  virtual std::string step(std::string_view challenge) = 0;
  // Whether the exchange completed on our side, once the server said OK.
  // SCRAM: only after the server signature was verified.
  virtual bool complete() const = 0;
  // OAuth 2.0 mechanisms: the error challenge the server sent (RFC 7628
  // 3.2.2, a JSON object), if any.
  virtual std::optional<std::string> error_challenge() const { return std::nullopt; }
};

// The mechanisms implemented here (LOGIN, the IMAP command, is the
// client's), strongest first: the default `auth` order.
const std::vector<std::string>& default_order();
// Every mechanism name `auth` takes, for messages.
const std::vector<std::string>& known_mechanisms();
// Whether `mech` (upper case) can be used here (GNU SASL ones: if the
// library provides them).  LOGIN included.
bool supported(std::string_view mech);
// The secret travels as it is (LOGIN, PLAIN, XOAUTH2, OAUTHBEARER): not
// without TLS on a network connection, unless configured.
bool sends_secret_in_clear(std::string_view mech);
// The secret is an OAuth 2.0 access token.
bool uses_token(std::string_view mech);
// The SCRAM family (the server proves it knows the password).
bool is_scram(std::string_view mech);

// A new exchange; nullptr for LOGIN or an unsupported name.
std::unique_ptr<Mechanism> start(std::string_view mech, const Credentials& credentials);

// A human-readable summary of an RFC 7628 error challenge: "status 401,
// scope https://..., schemes bearer" from the JSON object's string or
// number members status, scope and schemes; the text itself (shortened)
// when none is found.  Control characters escaped.
std::string describe_oauth_error(std::string_view json);

}  // namespace interimap::detail::auth
