// Options for one IMAP connection, as the [local], [remote] (interimap) or
// account (pullimap) sections of the configuration file give them.
// Defaults are those of interimap(1) 0.5.7.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace interimap {

struct TlsOptions {
  // SSL_verify: verify the chain and match the host name.  Default YES.
  bool verify = true;
  // SSL_CAfile / SSL_CApath: trust anchors; the system store when both empty.
  std::string ca_file;
  std::string ca_path;
  // SSL_fingerprint: accepted SPKI digests, each "[ALGO$]HEX" (ALGO defaults
  // to sha256).  Checked during the handshake; empty means no pinning.
  std::vector<std::string> fingerprints;
  // SSL_hostname: SNI name.  nullopt: the host option when it is a name, none
  // for an IP literal.  Empty string: SNI disabled.
  std::optional<std::string> hostname;
  // SSL_protocol_min / SSL_protocol_max: "TLSv1.2" etc.; empty means OpenSSL's default.
  std::string protocol_min;
  std::string protocol_max;
  // SSL_protocols (deprecated): e.g. "!SSLv3 TLSv1.2"; empty means unset.
  std::string protocols;
  // SSL_cipherlist (TLSv1.2 and below) / SSL_ciphersuites (TLSv1.3); empty: OpenSSL's default.
  std::string cipherlist;
  std::string ciphersuites;
};

struct ConnectionOptions {
  enum class Type { Imap, Imaps, Tunnel };

  // Component name used in logs and error messages ("local", "remote", or
  // the pullimap section name).
  std::string name;
  // type: imap, imaps or tunnel.  Default imaps.
  Type type = Type::Imaps;
  // host: name, or "[IP literal]" to skip name resolution.  Default localhost.
  std::string host = "localhost";
  // port: 0 means 143 for imap, 993 for imaps.
  uint16_t port = 0;
  // proxy: "socks5://[USER:PASSWORD@]HOST[:PORT]" or "socks5h://..."; empty: none.
  std::string proxy;
  // command: for type=tunnel; run by /bin/sh -c if it holds shell
  // metacharacters, else split into words and exec'd.
  std::string command;
  // null-stderr: send the tunnel command's stderr to /dev/null (ignored when debugging).
  bool null_stderr = false;
  // STARTTLS: for type=imap, upgrade with STARTTLS (abort if not advertised).  Default YES.
  bool starttls = true;
  // auth: preferred mechanisms, the first one both sides support wins:
  // SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5, PLAIN, LOGIN (the LOGIN command),
  // XOAUTH2, OAUTHBEARER (the secret is then an OAuth 2.0 access token).
  // Default: the strongest first.
  std::vector<std::string> auth = {"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "LOGIN"};
  std::optional<std::string> username;
  std::optional<std::string> password;
  // username-command / password-command: run by /bin/sh -c at every
  // connection (no terminal, stderr passed through, at most
  // command_timeout); their output, one line, is the username / the
  // password or access token.  They take precedence over username /
  // password.
  std::string username_command;
  std::string password_command;
  // password-command-timeout (seconds, for both commands).  Default 30.
  unsigned command_timeout = 30;
  // auth-cleartext: allow sending the secret as it is (LOGIN, PLAIN,
  // XOAUTH2, OAUTHBEARER) without TLS on a network connection (a tunnel
  // is not one).  Default NO: such mechanisms are skipped.
  bool auth_cleartext = false;
  // compress: use COMPRESS=DEFLATE when advertised.  The configuration
  // default is NO for [local] and YES for [remote].
  bool compress = false;
  // SO_KEEPALIVE on network sockets (set by --watch).
  bool keepalive = false;
  // Dry run (interimap --dry-run, include/interimap/dry_run.hpp): nothing
  // that changes the server is sent.  Mailbox::select() EXAMINEs; STORE,
  // EXPUNGE, APPEND, CREATE, DELETE, RENAME, SUBSCRIBE and UNSUBSCRIBE are
  // answered locally as accepted and recorded (Connection::planned_changes());
  // the connection refuses to send any of them (std::logic_error).
  // Default false.
  bool dry_run = false;
  TlsOptions tls;

  // The port actually used: port, or the type's default.
  uint16_t effective_port() const { return port != 0 ? port : (type == Type::Imaps ? 993 : 143); }
};

}  // namespace interimap
