// libinterimap/auth: the SASL mechanisms' messages, the OAuth 2.0 error
// report, secrets from a command.
#include "auth/sasl.hpp"
#include "auth/secret_command.hpp"
#include "test_util.hpp"

#include <interimap/error.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <string>

using namespace std::chrono_literals;
using interimap::detail::run_secret_command;
namespace auth = interimap::detail::auth;

TEST_CASE("auth: PLAIN, XOAUTH2 and OAUTHBEARER initial responses") {
  const auth::Credentials c{"me@example.org", "tok=en", "imap.example.org", 993};
  auto plain = auth::start("PLAIN", c);
  REQUIRE(plain);
  CHECK(plain->initial() == std::string("\0me@example.org\0tok=en", 22));
  CHECK(plain->complete());

  auto x = auth::start("XOAUTH2", c);
  REQUIRE(x);
  CHECK(x->initial() == std::string("user=me@example.org\x01" "auth=Bearer tok=en\x01\x01"));
  CHECK(x->complete());
  // The error report: answered with an empty response, remembered.
  CHECK(x->step(R"({"status":"401","schemes":"bearer","scope":"https://mail.google.com/"})") == "");
  CHECK_FALSE(x->complete());
  REQUIRE(x->error_challenge());
  CHECK(auth::describe_oauth_error(*x->error_challenge()) ==
        "status 401, scope https://mail.google.com/, schemes bearer");

  const auth::Credentials odd{"a,b=c", "T", "h", 143};
  auto o = auth::start("OAUTHBEARER", odd);
  REQUIRE(o);
  CHECK(o->initial() == std::string("n,a=a=2Cb=3Dc,\x01" "host=h\x01" "port=143\x01" "auth=Bearer T\x01\x01"));
  CHECK(o->step(R"({"status":"invalid_token"})") == "\x01");  // RFC 7628 3.2.3
  CHECK_THROWS_AS(o->step("again"), auth::SaslFailure);

  CHECK_FALSE(auth::start("LOGIN", c));
  CHECK_FALSE(auth::start("GSSAPI", c));
  CHECK(auth::supported("SCRAM-SHA-256"));
  CHECK(auth::supported("SCRAM-SHA-1"));
  CHECK_FALSE(auth::supported("SCRAM-SHA-256-PLUS"));
}

TEST_CASE("auth: SCRAM through GNU SASL starts with the client-first message") {
  auto s = auth::start("SCRAM-SHA-256", auth::Credentials{"alice", "pw", "localhost", 143});
  REQUIRE(s);
  const auto first = s->initial();
  REQUIRE(first);
  CHECK(first->starts_with("n,,n=alice,r="));
  CHECK_FALSE(s->complete());
  // A server-first message with another nonce: refused.
  CHECK_THROWS_AS(s->step("r=not-our-nonce,s=QSXCR+Q6sek8bf92,i=4096"), auth::SaslFailure);
}

TEST_CASE("auth: describe_oauth_error") {
  CHECK(auth::describe_oauth_error(R"({ "status" : 400 })") == "status 400");
  CHECK(auth::describe_oauth_error("not json\x1b[2J") == "not json\\x1b[2J");
  CHECK(auth::describe_oauth_error(std::string(300, 'x')).size() == 203);
}

TEST_CASE("run_secret_command") {
  CHECK(run_secret_command("remote", "password-command", "echo 's3cret'", 10s) == "s3cret");
  CHECK(run_secret_command("remote", "password-command", "printf 'a b\\r\\n'", 10s) == "a b");
  CHECK(run_secret_command("remote", "password-command", "printf x", 10s) == "x");
  using test_util::error_of;
  CHECK(error_of<interimap::Error>([] { run_secret_command("remote", "password-command", "echo no; exit 4", 10s); }) ==
        "remote: password-command `echo no; exit 4` failed (exit status 4)");
  CHECK(error_of<interimap::Error>([] { run_secret_command("acct", "username-command", "true", 10s); }) ==
        "acct: username-command `true` printed nothing");
  CHECK(error_of<interimap::Error>([] { run_secret_command("r", "password-command", "printf 'a\\nb'", 10s); }) ==
        "r: password-command `printf 'a\\nb'` printed more than one line");
  CHECK(error_of<interimap::Error>([] { run_secret_command("r", "password-command", "kill -9 $$", 10s); }) ==
        "r: password-command `kill -9 $$` was killed by signal 9");
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(error_of<interimap::Error>([] { run_secret_command("r", "password-command", "sleep 20", 300ms); }) ==
        "r: password-command `sleep 20` timed out after 1 s");
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  // A background child keeping stdout open: the time limit still applies.
  CHECK(error_of<interimap::Error>([] { run_secret_command("r", "password-command", "sleep 20 & echo x", 300ms); }) ==
        "r: password-command `sleep 20 & echo x` timed out after 1 s");
}
