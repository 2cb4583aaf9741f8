// Config (INI files read like the reference's Config::Tiny), connection
// options, list-mailbox splitting and XDG paths.
#include <interimap/config.hpp>
#include <interimap/error.hpp>

#include "test_util.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

using interimap::Config;
using interimap::ConfigError;
using interimap::ConnectionOptions;
using test_util::error_of;

namespace {

ConnectionOptions connection(const std::string& text, const std::string& section = "remote", bool compress = true) {
  return Config::parse(text, "test.conf").connection(section, compress);
}

}  // namespace

TEST_CASE("Config::parse: sections, defaults, comments and blanks") {
  // Expected values checked against Config::Tiny 2.28 (the reference's reader).
  const std::string text =
      "a = 1\n"
      "b=2 ; inline comment\n"
      "c = x;y\n"
      "d = x ; \n"
      "e = p ; q ; r\n"
      "  # comment\n"
      "; comment\n"
      "\n"
      "   \t \n"
      "[ local ]\n"
      "host = h = x\n"
      "[_]\n"
      "z = 9\n"
      "[remote]\n"
      "  host\t=  \t\n"
      "[local]\n"
      "host=again\n"
      "a=override\n"
      "\t[x y]  \n";
  Config c = Config::parse(text, "test.conf");
  CHECK(c.origin() == "test.conf");
  CHECK(c.sections() == std::vector<std::string>{"local", "remote", "x y"});
  CHECK(c.has_section("local"));
  CHECK(c.has_section("x y"));
  CHECK_FALSE(c.has_section("nope"));

  struct Case {
    const char* section;
    const char* option;
    std::optional<std::string> expected;
  };
  const Case cases[] = {
      {"", "a", "1"},
      {"", "b", "2"},
      {"", "c", "x;y"},
      {"", "d", "x ;"},
      {"", "e", "p"},
      {"", "z", "9"},          // [_] is the default section
      {"local", "a", "override"},  // a section overrides the default
      {"local", "host", "again"},  // repeated section merges; last value wins
      {"local", "b", "2"},         // inherited from the default section
      {"local", "z", "9"},
      {"remote", "host", ""},      // present but empty
      {"remote", "a", "1"},
      {"x y", "e", "p"},
      {"nope", "a", "1"},          // unknown section: default values only
      {"remote", "missing", std::nullopt},
      {"", "host", std::nullopt},
  };
  for (const auto& k : cases) {
    CAPTURE(k.section);
    CAPTURE(k.option);
    CHECK(c.get(k.section, k.option) == k.expected);
  }
  CHECK(c.get_default("a") == "1");
  CHECK(c.get_default("host") == std::nullopt);
}

TEST_CASE("Config::parse: duplicate options, last one wins") {
  Config c = Config::parse("x = 1\nx = 2\n[s]\ny = a\ny = b\n[t]\n[s]\ny = c\n", "dup.conf");
  CHECK(c.get("", "x") == "2");
  CHECK(c.get("s", "y") == "c");
  CHECK(c.sections() == std::vector<std::string>{"s", "t"});
}

TEST_CASE("Config::parse: line endings like Config::Tiny") {
  // \r\n, \r\r\n, \r and \n each end one line.
  Config c = Config::parse("a=1\r\nb=2\r\r\nc=3\rd=4\ne=5", "eol.conf");
  CHECK(c.get("", "a") == "1");
  CHECK(c.get("", "b") == "2");
  CHECK(c.get("", "c") == "3");
  CHECK(c.get("", "d") == "4");
  CHECK(c.get("", "e") == "5");
  std::string err = error_of<ConfigError>([] { Config::parse("a=1\r\nb=2\r\r\nc=3\rd\n", "eol.conf"); });
  CHECK(err == "eol.conf:4: syntax error: 'd'");
}

TEST_CASE("Config::parse: syntax errors name the file and line") {
  struct Case {
    const char* text;
    const char* expected;
  };
  const Case cases[] = {
      {"just words\n", "f.conf:1: syntax error: 'just words'"},
      {"a=1\n\n[s]\n  oops\n", "f.conf:4: syntax error: '  oops'"},
      {"[]\n", "f.conf:1: syntax error: '[]'"},
      {"[  ]\n", "f.conf:1: syntax error: '[  ]'"},
      {"[unterminated\n", "f.conf:1: syntax error: '[unterminated'"},
      {" = value\n", "f.conf:1: syntax error: ' = value'"},
  };
  for (const auto& k : cases) {
    CAPTURE(k.text);
    CHECK(error_of<ConfigError>([&] { Config::parse(k.text, "f.conf"); }) == k.expected);
  }
}

TEST_CASE("Config::load reads a file, and names a missing one") {
  const test_util::TempFile tmp("interimap-test-config");
  const std::string& path = tmp.path();
  test_util::write_file(path, "database = x.db\n[remote]\ntype = imaps\nbroken line\n");
  std::string err = error_of<ConfigError>([&] { Config::load(path); });
  CHECK(err == path + ":4: syntax error: 'broken line'");
  test_util::write_file(path, "database = x.db\n[remote]\ntype = imaps\n");
  Config c = Config::load(path);
  CHECK(c.origin() == path);
  CHECK(c.get("remote", "database") == "x.db");
  REQUIRE(std::filesystem::remove(path));
  err = error_of<ConfigError>([&] { Config::load(path); });
  CHECK(err == "No such config file " + path);
  CHECK(error_of<ConfigError>([] { Config::load("/tmp"); }) == "No such config file /tmp");
}

TEST_CASE("Config::get_bool accepts YES/NO in any case, nothing else") {
  struct Case {
    const char* value;
    std::optional<bool> expected;  // nullopt: a ConfigError
  };
  // The reference validates booleans with /\A(YES|NO)\z/i.
  const Case cases[] = {
      {"YES", true}, {"yes", true}, {"Yes", true}, {"yEs", true},
      {"NO", false}, {"no", false}, {"No", false}, {"nO", false},
      {"1", std::nullopt}, {"0", std::nullopt}, {"true", std::nullopt}, {"false", std::nullopt},
      {"on", std::nullopt}, {"off", std::nullopt}, {"y", std::nullopt}, {"n", std::nullopt},
      {"yess", std::nullopt}, {"\"YES\"", std::nullopt},
  };
  for (const auto& k : cases) {
    CAPTURE(k.value);
    Config c = Config::parse(std::string("[local]\ncompress = ") + k.value + "\n", "b.conf");
    if (k.expected) {
      CHECK(c.get_bool("local", "compress") == k.expected);
    } else {
      CHECK(error_of<ConfigError>([&] { c.get_bool("local", "compress"); }) ==
            std::string("b.conf: [local] compress: invalid boolean, expected YES or NO (value: ") + k.value + ")");
    }
  }
  Config c = Config::parse("[local]\n", "b.conf");
  CHECK(c.get_bool("local", "compress") == std::nullopt);
  // A bad value inherited from the default section is reported there.
  Config d = Config::parse("compress = maybe\n[local]\n", "b.conf");
  CHECK(error_of<ConfigError>([&] { d.get_bool("local", "compress"); }) ==
        "b.conf: compress: invalid boolean, expected YES or NO (value: maybe)");
}

TEST_CASE("Config::get_uint") {
  struct Case {
    const char* value;
    std::optional<uint64_t> expected;
  };
  const Case cases[] = {
      {"0", 0}, {"7", 7}, {"0042", 42}, {"18446744073709551615", 18446744073709551615ULL},
      {"18446744073709551616", std::nullopt}, {"-1", std::nullopt}, {"+1", std::nullopt},
      {"1.5", std::nullopt}, {"1d", std::nullopt}, {"", std::nullopt}, {"x", std::nullopt},
  };
  for (const auto& k : cases) {
    CAPTURE(k.value);
    Config c = Config::parse(std::string("[acct]\npurge-after = ") + k.value + "\n", "u.conf");
    if (k.expected) {
      CHECK(c.get_uint("acct", "purge-after") == k.expected);
    } else {
      CHECK(error_of<ConfigError>([&] { c.get_uint("acct", "purge-after"); }) ==
            std::string("u.conf: [acct] purge-after: invalid non-negative integer (value: ") + k.value + ")");
    }
  }
  CHECK(Config::parse("[acct]\n", "u.conf").get_uint("acct", "purge-after") == std::nullopt);
}

TEST_CASE("Config::fail formats and redacts passwords") {
  Config c = Config::parse("[remote]\npassword = s3cret\nhost = h\n", "p.conf");
  CHECK(error_of<ConfigError>([&] { c.fail("remote", "host", "bad"); }) == "p.conf: [remote] host: bad (value: h)");
  CHECK(error_of<ConfigError>([&] { c.fail("remote", "password", "bad"); }) ==
        "p.conf: [remote] password: bad (value: <redacted>)");
  CHECK(error_of<ConfigError>([&] { c.fail("remote", "port", "missing"); }) == "p.conf: [remote] port: missing");
}

TEST_CASE("A proxy's password is never echoed in a configuration error") {
  const struct {
    const char* proxy;
    const char* shown;
  } cases[] = {
      {"socks5://user:SECRET@host:99999", "socks5://user:***@host:99999"},    // bad port
      {"socks5h://u:SE@CRET@[::1", "socks5h://u:***@[::1"},                   // '@' in the password, bad host
      {"user:SECRET@host", "user:***@host"},                                  // no scheme
      {"http://user:SECRET@host", "http://user:***@host"},                    // unsupported protocol
      {"socks5://user@host:0", "socks5://user@host:0"},                       // no password: as it is
  };
  for (const auto& c : cases) {
    CAPTURE(c.proxy);
    const std::string error =
        error_of<ConfigError>([&] { connection(std::string("[remote]\nproxy = ") + c.proxy + "\n"); });
    CHECK(error.find(std::string("(value: ") + c.shown + ")") != std::string::npos);
    if (std::string_view(c.proxy).find("SECRET") != std::string_view::npos) CHECK(error.find("SECRET") == std::string::npos);
  }
}

TEST_CASE("Config::connection: defaults") {
  ConnectionOptions o = connection("[remote]\n");
  CHECK(o.name == "remote");
  CHECK(o.type == ConnectionOptions::Type::Imaps);
  CHECK(o.host == "localhost");
  CHECK(o.port == 0);
  CHECK(o.effective_port() == 993);
  CHECK(o.proxy.empty());
  CHECK(o.command.empty());
  CHECK_FALSE(o.null_stderr);
  CHECK(o.starttls);
  CHECK(o.auth == std::vector<std::string>{"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "LOGIN"});
  CHECK_FALSE(o.username);
  CHECK_FALSE(o.password);
  CHECK(o.username_command.empty());
  CHECK(o.password_command.empty());
  CHECK(o.command_timeout == 30);
  CHECK_FALSE(o.auth_cleartext);
  CHECK(o.compress);
  CHECK_FALSE(o.keepalive);
  CHECK(o.tls.verify);
  CHECK(o.tls.ca_file.empty());
  CHECK(o.tls.ca_path.empty());
  CHECK(o.tls.fingerprints.empty());
  CHECK_FALSE(o.tls.hostname);
  CHECK(o.tls.protocol_min.empty());
  CHECK(o.tls.protocol_max.empty());
  CHECK(o.tls.protocols.empty());
  CHECK(o.tls.cipherlist.empty());
  CHECK(o.tls.ciphersuites.empty());
  CHECK_FALSE(connection("[local]\n", "local", false).compress);
  CHECK(connection("[local]\ntype = imap\n", "local").effective_port() == 143);
}

TEST_CASE("Config::connection: every option") {
  const std::string sha256 = "0123456789abcdef0123456789abcdef0123456789ABCDEF0123456789abcdef";
  const std::string sha1 = "0123456789abcdef0123456789abcdef01234567";
  ConnectionOptions o = connection(
      "username = default-user\n"
      "[remote]\n"
      "type = imap\n"
      "host = [2001:db8::1]\n"
      "port = 10143\n"
      "proxy = socks5h://user:p@ss@proxy.example:1080\n"
      "null-stderr = yes\n"
      "STARTTLS = no\n"
      "auth = plain  Login\n"
      "password = pa=ss word\n"
      "compress = NO\n"
      "username-command = pass show imap-user\n"
      "password-command = gpg -dq ~/.imap-pw.gpg\n"
      "password-command-timeout = 5\n"
      "auth-cleartext = YES\n"
      "SSL_verify = No\n"
      "SSL_CAfile = /etc/ssl/ca.pem\n"
      "SSL_CApath = /etc/ssl/certs\n"
      "SSL_fingerprint = " + sha256 + " sha1$" + sha1 + "\n"
      "SSL_hostname = imap.example.org\n"
      "SSL_protocol_min = TLSv1.2\n"
      "SSL_protocol_max = TLSv1.3\n"
      "SSL_protocols = !SSLv3 TLSv1.2\n"
      "SSL_cipherlist = HIGH:!aNULL\n"
      "SSL_ciphersuites = TLS_AES_256_GCM_SHA384\n");
  CHECK(o.name == "remote");
  CHECK(o.type == ConnectionOptions::Type::Imap);
  CHECK(o.host == "[2001:db8::1]");
  CHECK(o.port == 10143);
  CHECK(o.proxy == "socks5h://user:p@ss@proxy.example:1080");
  CHECK(o.null_stderr);
  CHECK_FALSE(o.starttls);
  CHECK(o.auth == std::vector<std::string>{"PLAIN", "LOGIN"});
  CHECK(o.username == "default-user");
  CHECK(o.password == "pa=ss word");
  CHECK(o.username_command == "pass show imap-user");
  CHECK(o.password_command == "gpg -dq ~/.imap-pw.gpg");
  CHECK(o.command_timeout == 5);
  CHECK(o.auth_cleartext);
  CHECK_FALSE(o.compress);
  CHECK_FALSE(o.tls.verify);
  CHECK(o.tls.ca_file == "/etc/ssl/ca.pem");
  CHECK(o.tls.ca_path == "/etc/ssl/certs");
  CHECK(o.tls.fingerprints == std::vector<std::string>{sha256, "sha1$" + sha1});
  CHECK(o.tls.hostname == "imap.example.org");
  CHECK(o.tls.protocol_min == "TLSv1.2");
  CHECK(o.tls.protocol_max == "TLSv1.3");
  CHECK(o.tls.protocols == "!SSLv3 TLSv1.2");
  CHECK(o.tls.cipherlist == "HIGH:!aNULL");
  CHECK(o.tls.ciphersuites == "TLS_AES_256_GCM_SHA384");

  ConnectionOptions t = connection("[local]\ntype = tunnel\ncommand = /usr/lib/dovecot/imap -c ~/.dovecot.conf\n", "local", false);
  CHECK(t.type == ConnectionOptions::Type::Tunnel);
  CHECK(t.command == "/usr/lib/dovecot/imap -c ~/.dovecot.conf");

  // Present but empty SSL_hostname disables SNI.
  CHECK(connection("[remote]\nSSL_hostname =\n").tls.hostname == std::string());
  // Service names are accepted as ports, as getaddrinfo(3) does for the reference.
  CHECK(connection("[remote]\nport = imaps\n").port == 993);
  CHECK(connection("[remote]\nhost = [192.0.2.1]\n").host == "[192.0.2.1]");
  CHECK(connection("[remote]\nhost = 192.0.2.1\n").host == "192.0.2.1");
  CHECK(connection("[remote]\nproxy = socks5://[::1]\n").proxy == "socks5://[::1]");
  CHECK(connection("[remote]\nproxy = socks5://127.0.0.1:9050\n").proxy == "socks5://127.0.0.1:9050");
  CHECK(connection("[remote]\nSSL_protocols = TLSv1.0 TLSv1.1\n").tls.protocols == "TLSv1.0 TLSv1.1");
  CHECK(connection("[remote]\nSSL_ciphersuites =\n").tls.ciphersuites.empty());
  CHECK(connection("[remote]\nSSL_fingerprint = SHA512$" + std::string(128, 'a') + "\n").tls.fingerprints.size() == 1);
}

TEST_CASE("Config::connection: bad values name file, section, option and value") {
  struct Case {
    std::string text;
    std::string expected;
  };
  const Case cases[] = {
      {"[remote]\ntype = IMAPS\n", "test.conf: [remote] type: invalid type, expected imap, imaps or tunnel (value: IMAPS)"},
      {"[remote]\ntype = pop3\n", "test.conf: [remote] type: invalid type, expected imap, imaps or tunnel (value: pop3)"},
      {"type = ssl\n[remote]\n", "test.conf: type: invalid type, expected imap, imaps or tunnel (value: ssl)"},
      {"[remote]\nhost =\n", "test.conf: [remote] host: empty value (value: )"},
      {"[remote]\nhost = [not-an-ip]\n", "test.conf: [remote] host: invalid IP literal (value: [not-an-ip])"},
      {"[remote]\nhost = [1.2.3.4\n", "test.conf: [remote] host: invalid IP literal (value: [1.2.3.4)"},
      {"[remote]\nhost = []\n", "test.conf: [remote] host: invalid IP literal (value: [])"},
      {"[remote]\nport = 0\n", "test.conf: [remote] port: invalid port, expected 1 to 65535 or a service name (value: 0)"},
      {"[remote]\nport = 65536\n", "test.conf: [remote] port: invalid port, expected 1 to 65535 or a service name (value: 65536)"},
      {"[remote]\nport = -1\n", "test.conf: [remote] port: invalid port, expected 1 to 65535 or a service name (value: -1)"},
      {"[remote]\nport = nosuchservice\n", "test.conf: [remote] port: invalid port, expected 1 to 65535 or a service name (value: nosuchservice)"},
      {"[remote]\nproxy = http://proxy:3128\n", "test.conf: [remote] proxy: unsupported proxy protocol http (value: http://proxy:3128)"},
      {"[remote]\nproxy = proxy:1080\n", "test.conf: [remote] proxy: invalid proxy URI, expected socks5://[USER:PASSWORD@]HOST[:PORT] or socks5h://... (value: proxy:1080)"},
      {"[remote]\nproxy = socks5://\n", "test.conf: [remote] proxy: missing proxy host (value: socks5://)"},
      {"[remote]\nproxy = socks5://u:p@\n", "test.conf: [remote] proxy: missing proxy host (value: socks5://u:***@)"},
      {"[remote]\nproxy = socks5://h:\n", "test.conf: [remote] proxy: invalid proxy port (value: socks5://h:)"},
      {"[remote]\nproxy = socks5://h:99999\n", "test.conf: [remote] proxy: invalid proxy port 99999 (value: socks5://h:99999)"},
      {"[remote]\nproxy = socks5://h:1:2\n", "test.conf: [remote] proxy: invalid proxy port 1:2 (value: socks5://h:1:2)"},
      {"[remote]\nproxy = socks5://[nope]:1080\n", "test.conf: [remote] proxy: invalid IP literal [nope] in proxy (value: socks5://[nope]:1080)"},
      {"[remote]\ntype = tunnel\n", "test.conf: [remote] command: missing, required for type=tunnel"},
      {"[remote]\nnull-stderr = maybe\n", "test.conf: [remote] null-stderr: invalid boolean, expected YES or NO (value: maybe)"},
      {"[remote]\nSTARTTLS = 1\n", "test.conf: [remote] STARTTLS: invalid boolean, expected YES or NO (value: 1)"},
      {"[remote]\ncompress = true\n", "test.conf: [remote] compress: invalid boolean, expected YES or NO (value: true)"},
      {"[remote]\nSSL_verify = off\n", "test.conf: [remote] SSL_verify: invalid boolean, expected YES or NO (value: off)"},
      {"[remote]\nauth =\n", "test.conf: [remote] auth: empty value (value: )"},
      {"[remote]\nauth = PLAIN (LOGIN)\n", "test.conf: [remote] auth: invalid mechanism name (LOGIN) (value: PLAIN (LOGIN))"},
      {"[remote]\nusername =\n", "test.conf: [remote] username: empty value (value: )"},
      {"[remote]\nusername = j\xc3\xbcrgen\n", "test.conf: [remote] username: non-ASCII value (value: j\xc3\xbcrgen)"},
      {"[remote]\npassword = p\xc3\xa4ss\n", "test.conf: [remote] password: non-ASCII value (value: <redacted>)"},
      {"[remote]\nSSL_CAfile =\n", "test.conf: [remote] SSL_CAfile: empty value (value: )"},
      {"[remote]\nSSL_fingerprint = xyz\n", "test.conf: [remote] SSL_fingerprint: invalid fingerprint xyz, expected [ALGO$]HEX (value: xyz)"},
      {"[remote]\nSSL_fingerprint = sha256$\n", "test.conf: [remote] SSL_fingerprint: invalid fingerprint sha256$, expected [ALGO$]HEX (value: sha256$)"},
      {"[remote]\nSSL_fingerprint = $abcd\n", "test.conf: [remote] SSL_fingerprint: invalid fingerprint $abcd, expected [ALGO$]HEX (value: $abcd)"},
      {"[remote]\nSSL_fingerprint = nosuchalgo$abcd\n", "test.conf: [remote] SSL_fingerprint: unknown digest algorithm nosuchalgo (value: nosuchalgo$abcd)"},
      {"[remote]\nSSL_fingerprint = abcd\n", "test.conf: [remote] SSL_fingerprint: fingerprint abcd has 4 hex digits, sha256 expects 64 (value: abcd)"},
      {"[remote]\nSSL_fingerprint =\n", "test.conf: [remote] SSL_fingerprint: empty value (value: )"},
      {"[remote]\nSSL_protocol_min = TLSv1.4\n", "test.conf: [remote] SSL_protocol_min: unknown protocol version, expected SSLv3, TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3 (value: TLSv1.4)"},
      {"[remote]\nSSL_protocol_max = tlsv1.2\n", "test.conf: [remote] SSL_protocol_max: unknown protocol version, expected SSLv3, TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3 (value: tlsv1.2)"},
      {"[remote]\nSSL_protocol_min = TLSv1.3\nSSL_protocol_max = TLSv1.2\n", "test.conf: [remote] SSL_protocol_max: lower than SSL_protocol_min (TLSv1.3) (value: TLSv1.2)"},
      {"[remote]\nSSL_protocols = TLSv1.4\n", "test.conf: [remote] SSL_protocols: unknown protocol TLSv1.4 (value: TLSv1.4)"},
      {"[remote]\nSSL_protocols = !!SSLv3\n", "test.conf: [remote] SSL_protocols: unknown protocol !!SSLv3 (value: !!SSLv3)"},
      {"[remote]\nSSL_cipherlist =\n", "test.conf: [remote] SSL_cipherlist: empty value (value: )"},
      {"[remote]\ncommand = a\x01 b\n", "test.conf: [remote] command: control character in value (value: a\\x01 b)"},
  };
  for (const auto& k : cases) {
    CAPTURE(k.text);
    CHECK(error_of<ConfigError>([&] { connection(k.text); }) == k.expected);
  }
  CHECK(error_of<ConfigError>([] { connection("[local]\n", "remote"); }) == "test.conf: no such section [remote]");
}

TEST_CASE("split_list_mailbox: words, quoted strings and escapes like the reference") {
  using V = std::vector<std::string>;
  struct Case {
    std::string input;
    V expected;
  };
  // Expected values produced by the reference's list-mailbox parser.
  const Case cases[] = {
      {"INBOX", {"INBOX"}},
      {"INBOX Sent Drafts", {"INBOX", "Sent", "Drafts"}},
      {"*", {"*"}},
      {"%", {"%"}},
      {"INBOX/*  Archive.%", {"INBOX/*", "Archive.%"}},
      {"\"Sent Items\"", {"Sent Items"}},
      {"\"Sent Items\" INBOX", {"Sent Items", "INBOX"}},
      {"\"a\\\"b\"", {"a\"b"}},
      {"\"a\\\\b\"", {"a\\b"}},
      {"\"\\x41\\x2f\"", {"A/"}},
      {"\"\\0\"", {std::string("\0", 1)}},
      {"\"a\\0b\"", {std::string("a\0b", 3)}},
      {"\"\\012\"", {std::string("\0" "12", 3)}},
      {"\"\\a\\b\\t\\n\\v\\f\\r\"", {"\a\b\t\nv\f\r"}},  // \v is 'v' in the reference
      {"\"a(b){c}\"", {"a(b){c}"}},
      {"a\tb", {"a", "b"}},
      {"&AOQ-", {"&AOQ-"}},
      {"\"a\" \"b\"", {"a", "b"}},
      {"a}", {"a}"}},
  };
  for (const auto& k : cases) {
    CAPTURE(k.input);
    CHECK(interimap::split_list_mailbox(k.input) == k.expected);
  }
}

TEST_CASE("split_list_mailbox rejects what the reference rejects") {
  const char* const cases[] = {
      "",              // empty
      "\"\\x4\"",      // one hex digit
      "\"\\xZZ\"",     //
      "\"\\q\"",       // unknown escape
      "\"\"",          // empty quoted string
      "\"abc",         // unterminated
      "\"abc\\",       //
      "abc\"def\"",    // no blank between patterns
      "\"a\"\"b\"",    //
      "\"a\"b",        //
      "foo(bar",       // '(' outside quotes
      "a\\b",          // '\' outside quotes
      "{abc}",         // '{' outside quotes
      "a)b",           //
      "\"tab\tinside\"",  // control character inside quotes
      "Entw\xc3\xbcrfe",  // 8-bit (the reference wants modified UTF-7)
      "\"Entw\xc3\xbcrfe\"",
  };
  for (const char* input : cases) {
    CAPTURE(input);
    std::string err = error_of<ConfigError>([&] { interimap::split_list_mailbox(input, "list-mailbox"); });
    CHECK(err.rfind(std::string("Invalid value for list-mailbox: ") + input + " (", 0) == 0);
  }
  std::string err = error_of<ConfigError>([] { interimap::split_list_mailbox("a(", "ignore-mailbox"); });
  CHECK(err.rfind("Invalid value for ignore-mailbox: a( (", 0) == 0);
}

TEST_CASE("XDG directories and resolve_path") {
  {
    test_util::EnvOverride env;  // HOME and XDG_*_HOME as they were at the end of the block
    env.set("HOME", "/home/test");
    env.unset("XDG_CONFIG_HOME");
    env.unset("XDG_DATA_HOME");
    CHECK(interimap::xdg_config_home() == "/home/test/.config");
    CHECK(interimap::xdg_data_home() == "/home/test/.local/share");
    env.set("XDG_CONFIG_HOME", "");  // empty means unset (XDG spec)
    CHECK(interimap::xdg_config_home() == "/home/test/.config");
    env.set("XDG_CONFIG_HOME", "/xdg/config");
    env.set("XDG_DATA_HOME", "/xdg/data");
    CHECK(interimap::xdg_config_home() == "/xdg/config");
    CHECK(interimap::xdg_data_home() == "/xdg/data");
  }

  struct Case {
    const char* base;
    const char* path;
    const char* expected;
  };
  const Case cases[] = {
      {"/home/u/.config/interimap", "config", "/home/u/.config/interimap/config"},
      {"/home/u/.config/interimap/", "config", "/home/u/.config/interimap/config"},
      {"/home/u/.config/interimap", "/etc/interimap.conf", "/etc/interimap.conf"},
      {"/base", "sub/file.db", "/base/sub/file.db"},
      {"", "file", "file"},
  };
  for (const auto& k : cases) {
    CAPTURE(k.path);
    CHECK(interimap::resolve_path(k.base, k.path) == k.expected);
  }
}

TEST_CASE("option names: interimap's and pullimap's") {
  struct Case {
    const char* name;
    bool interimap;
    bool pullimap;
  };
  const Case cases[] = {
      // The connection options: both.
      {"host", true, true},
      {"port", true, true},
      {"proxy", true, true},
      {"type", true, true},
      {"STARTTLS", true, true},
      {"username", true, true},
      {"password", true, true},
      {"auth", true, true},
      {"command", true, true},
      {"null-stderr", true, true},
      {"compress", true, true},
      {"SSL_protocols", true, true},
      {"SSL_protocol_min", true, true},
      {"SSL_protocol_max", true, true},
      {"SSL_fingerprint", true, true},
      {"SSL_cipherlist", true, true},
      {"SSL_ciphersuites", true, true},
      {"SSL_hostname", true, true},
      {"SSL_verify", true, true},
      {"SSL_CApath", true, true},
      {"SSL_CAfile", true, true},
      // interimap's own.
      {"database", true, false},
      {"logfile", true, false},
      {"log-prefix", true, false},
      {"list-reference", true, false},
      {"list-mailbox", true, false},
      {"list-select-opts", true, false},
      {"ignore-mailbox", true, false},
      // pullimap's own.
      {"statefile", false, true},
      {"mailbox", false, true},
      {"deliver-method", false, true},
      {"deliver-ehlo", false, true},
      {"deliver-rcpt", false, true},
      {"purge-after", false, true},
      // Neither: exact names only, as the reference.
      {"", false, false},
      {"Host", false, false},
      {"starttls", false, false},
      {"ssl_verify", false, false},
      {"SSL_protocol", false, false},
      {"database ", false, false},
      {"list_mailbox", false, false},
      {"deliver", false, false},
      {"idle", false, false},
  };
  for (const auto& k : cases) {
    CAPTURE(k.name);
    CHECK(interimap::is_interimap_option(k.name) == k.interimap);
    CHECK(interimap::is_pullimap_option(k.name) == k.pullimap);
  }
}

namespace {

mode_t current_umask() {
  const mode_t m = ::umask(0);
  ::umask(m);
  return m;
}

}  // namespace

TEST_CASE("xdg_basedir: the reference's xdg_basedir") {
  const test_util::TempDir dir("config");
  const std::string base = dir.path().string();

  SUBCASE("an absolute path: as is, nothing checked nor created") {
    CHECK(interimap::xdg_basedir("interimap", base, "/var/x.db") == "/var/x.db");
    CHECK(interimap::xdg_basedir("pullimap", base + "/missing", "/var/tmp/state") == "/var/tmp/state");
    CHECK(interimap::xdg_basedir("pullimap", "", "/s") == "/s");
    CHECK_FALSE(std::filesystem::exists(base + "/interimap"));
    CHECK_FALSE(std::filesystem::exists(base + "/pullimap"));
  }
  SUBCASE("a relative path: under BASE/PROGRAM, created private when missing") {
    CHECK(interimap::xdg_basedir("interimap", base, "host.db") == base + "/interimap/host.db");
    struct stat st {};
    REQUIRE(::stat((base + "/interimap").c_str(), &st) == 0);
    CHECK(S_ISDIR(st.st_mode));
    CHECK((st.st_mode & 07777) == (0700 & ~current_umask()));
    // Again: the directory exists, fine.
    CHECK(interimap::xdg_basedir("interimap", base, "sub/x.db") == base + "/interimap/sub/x.db");
    CHECK(interimap::xdg_basedir("pullimap", base, "acct") == base + "/pullimap/acct");
    CHECK(std::filesystem::is_directory(base + "/pullimap"));
  }
  SUBCASE("BASE must exist and be a directory; it is not created") {
    CHECK(error_of<interimap::Error>([&] { interimap::xdg_basedir("interimap", base + "/missing", "h.db"); }) ==
          "No such directory: " + base + "/missing");
    CHECK_FALSE(std::filesystem::exists(base + "/missing"));
    test_util::write_file(base + "/file", "x");
    CHECK(error_of<interimap::Error>([&] { interimap::xdg_basedir("pullimap", base + "/file", "acct"); }) ==
          "No such directory: " + base + "/file");
    CHECK(error_of<interimap::Error>([&] { interimap::xdg_basedir("pullimap", "", "acct"); }) == "No such directory: ");
  }
  SUBCASE("BASE/PROGRAM: EEXIST is fine, another failure an error") {
    test_util::write_file(base + "/pullimap", "a file in the way");
    const std::string what = error_of<interimap::Error>([&] { interimap::xdg_basedir("pullimap", base, "acct"); });
    // mkdir(2) says EEXIST, which the reference (and we) take for an
    // existing directory: the path is returned and the open fails later.
    CHECK(what.empty());
    if (::geteuid() != 0) {  // root writes anywhere
      const std::string ro = base + "/ro";
      REQUIRE(::mkdir(ro.c_str(), 0500) == 0);
      CHECK(error_of<interimap::Error>([&] { interimap::xdg_basedir("interimap", ro, "h.db"); }) ==
            "Couldn't create " + ro + "/interimap: Permission denied");
    }
  }
}

TEST_CASE("config_path: --config under $XDG_CONFIG_HOME/PROGRAM") {
  test_util::EnvOverride env;
  env.set("XDG_CONFIG_HOME", "/xdg/config");

  CHECK(interimap::config_path("interimap", std::nullopt) == "/xdg/config/interimap/config");
  CHECK(interimap::config_path("pullimap", std::nullopt) == "/xdg/config/pullimap/config");
  CHECK(interimap::config_path("interimap", std::string("work.conf")) == "/xdg/config/interimap/work.conf");
  CHECK(interimap::config_path("pullimap", std::string("sub/p.conf")) == "/xdg/config/pullimap/sub/p.conf");
  CHECK(interimap::config_path("interimap", std::string("/etc/interimap.conf")) == "/etc/interimap.conf");
  // An empty --config names the directory (interimap then reports "No such
  // config file"; pullimap refuses it before).
  CHECK(interimap::config_path("interimap", std::string()) == "/xdg/config/interimap/");
}

TEST_CASE("Config::fail: control characters are escaped, so a NUL does not cut the message") {
  const std::string text = std::string("[sec") + '\0' + "tion]\nport = x\x1b[31m\n";
  const Config c = Config::parse(text, "test.conf");
  const std::string section("sec\0tion", 8);
  const std::string e = error_of<ConfigError>([&] { c.fail(section, "port", "not a number"); });
  CHECK(e == "test.conf: [sec\\x00tion] port: not a number (value: x\\x1b[31m)");
}
