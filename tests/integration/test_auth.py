#!/usr/bin/env python3
"""Authentication (issue 13) against a Dovecot daemon: username-command
and password-command (success, failure, timeout, empty output, stderr),
SCRAM-SHA-256 and SCRAM-SHA-1 against SCRAM hashes (success, wrong
password, a relay that alters the server signature or skips the server's
final message), CRAM-MD5, XOAUTH2 and OAUTHBEARER against Dovecot's
oauth2 passdb and a local token-introspection server (valid token, refused
token with the decoded error report), the cleartext refusals (no TLS on a
network connection, LOGINDISABLED), and no secret in any output, --debug
included."""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import authlib as a  # noqa: E402

h.require("imap-probe", "dovecot", "doveadm")

T = None
D = None
INTRO = None
RESULTS = []  # every probe run, searched for secrets at the end
RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib", "authrelay.py")


def setUpModule():
    global T, D, INTRO
    T = h.TestDir("iit-auth-")
    INTRO = a.Introspection()
    D = a.make_dovecot(T, INTRO)
    h.start_all(D)


def tearDownModule():
    a.check_no_secret(unittest.TestCase(), RESULTS)


def secret_file(secret):
    path = os.path.join(T.path, f"secret-{time.monotonic_ns()}")
    with open(path, "w") as f:
        f.write(secret + "\n")
    os.chmod(path, 0o600)
    return path


def section(user="alice", type="imaps", **opts):
    """D as `user`, the password from a password-command unless given."""
    base = D.section(type=type, username=user, password=None)
    if "password" not in opts and "password-command" not in opts:
        base["password-command"] = f"cat {secret_file(a.USERS[user])}"
    base.update(opts)
    return {k: v for k, v in base.items() if v is not None}


def relay_section(mode, user="alice", **opts):
    """D's plain port through lib/authrelay.py MODE (a tunnel)."""
    base = {"type": "tunnel", "command": f"{sys.executable} {RELAY} {mode} 127.0.0.1 {D.imap_port}",
            "username": user, "password-command": f"cat {secret_file(a.USERS[user])}",
            "compress": "NO"}  # the relay reads lines
    base.update(opts)
    return base


def probe(opts, debug=None):
    config = h.write_config(T, {"remote": opts})
    r = h.run_probe(config, "capabilities", section="remote", debug=debug, timeout=60)
    RESULTS.append(r)
    return r


def ok(opts, debug=None):
    return h.assert_ok(probe(opts, debug))


def fails(opts, *patterns, debug=None):
    r = probe(opts, debug)
    msg = h.assert_fails(r, *patterns)
    if not msg.startswith("imap-probe: remote: "):
        raise AssertionError(f"the error does not name the section: {msg!r}")
    if len(msg.splitlines()) != 1:
        raise AssertionError(f"more than one error line: {msg!r}")
    return msg


def mechanism_used(r):
    """The mechanism of the AUTHENTICATE (or LOGIN) in a --debug log."""
    for line in r.err.splitlines():
        if " C: " in line and (" AUTHENTICATE " in line or " LOGIN " in line):
            words = line.split()
            i = words.index("AUTHENTICATE") if "AUTHENTICATE" in words else words.index("LOGIN")
            return words[i + 1] if words[i] == "AUTHENTICATE" else "LOGIN"
    return None


class PasswordCommand(unittest.TestCase):
    def test_password_and_username_commands(self):
        user_file = secret_file("alice")
        r = ok(section(auth="PLAIN", username=None, **{"username-command": f"cat {user_file}"}), debug=1)
        self.assertEqual(mechanism_used(r), "PLAIN")
        self.assertIn("[REDACTED]", r.err)

    def test_command_runs_at_every_connection(self):
        count = os.path.join(T.path, "count")
        pw = secret_file(a.USERS["alice"])
        opts = section(**{"password-command": f"echo run >> {count}; cat {pw}"})
        ok(opts)
        ok(opts)
        with open(count) as f:
            self.assertEqual(f.read().count("run"), 2)

    def test_nonzero_exit(self):
        fails(section(**{"password-command": "echo not-the-password; exit 3"}),
              r"password-command `echo not-the-password; exit 3` failed \(exit status 3\)")

    def test_timeout(self):
        t0 = time.monotonic()
        fails(section(**{"password-command": "sleep 30; echo late", "password-command-timeout": "1"}),
              r"password-command .* timed out after 1 s")
        self.assertLess(time.monotonic() - t0, 10, "the time limit was not applied")

    def test_empty_output(self):
        fails(section(**{"password-command": "true"}), r"password-command `true` printed nothing")
        fails(section(**{"password-command": "echo"}), r"printed nothing")

    def test_two_lines(self):
        fails(section(**{"password-command": "printf 'a\\nb\\n'"}), r"more than one line")

    def test_username_command_fails(self):
        fails(section(username=None, **{"username-command": "exit 1"}), r"username-command `exit 1` failed")

    def test_stderr_passed_through_no_terminal(self):
        pw = secret_file(a.USERS["alice"])
        # No controlling terminal: /dev/tty cannot be opened.
        r = ok(section(**{"password-command": "if (: </dev/tty) 2>/dev/null; then echo has-a-tty >&2; fi; "
                                              f"echo from-the-helper >&2; cat {pw}"}))
        self.assertIn("from-the-helper", r.err)
        self.assertNotIn("has-a-tty", r.err)

    def test_missing_secret(self):
        fails(D.section(password=None), r"missing option password \(or password-command\)")


class Scram(unittest.TestCase):
    def test_scram_sha256(self):
        r = ok(section(auth="SCRAM-SHA-256"), debug=1)
        self.assertEqual(mechanism_used(r), "SCRAM-SHA-256")
        # No proof below debug level 2: the exchange is redacted both ways.
        self.assertIn("S: + [REDACTED]", r.err)
        self.assertNotRegex(r.err, r"C: (?!\S+ AUTHENTICATE SCRAM-SHA-256 \[REDACTED\])\S*[A-Za-z0-9+/]{20,}")

    def test_scram_sha1(self):
        r = ok(section(user="bob", auth="SCRAM-SHA-1"), debug=1)
        self.assertEqual(mechanism_used(r), "SCRAM-SHA-1")

    def test_default_order_picks_scram_sha256(self):
        r = ok(section(), debug=1)
        self.assertEqual(mechanism_used(r), "SCRAM-SHA-256")

    def test_wrong_password(self):
        for user, mech in (("alice", "SCRAM-SHA-256"), ("bob", "SCRAM-SHA-1")):
            with self.subTest(mech=mech):
                fails(section(user=user, auth=mech, **{"password-command": "echo wrong-password"}),
                      r"authentication \(" + mech + r"\) as " + user + r" failed: NO")

    def test_debug_2_shows_the_exchange(self):
        r = ok(section(auth="SCRAM-SHA-256"), debug=2)
        self.assertNotIn("S: + [REDACTED]", r.err)

    def test_relay_control(self):
        r = ok(relay_section("pass", auth="SCRAM-SHA-256"), debug=1)
        self.assertEqual(mechanism_used(r), "SCRAM-SHA-256")

    def test_tampered_server_signature_refused(self):
        for user, mech in (("alice", "SCRAM-SHA-256"), ("bob", "SCRAM-SHA-1")):
            with self.subTest(mech=mech):
                r = probe(relay_section("tamper", user=user, auth=mech))
                self.assertIn("authrelay: server signature altered", r.err)
                h.assert_fails(r, mech, r"signature does not verify", r"could not prove that it knows the password")

    def test_missing_server_final_refused(self):
        fails(relay_section("skip-final", auth="SCRAM-SHA-256"),
              r"SCRAM-SHA-256: the server said OK before the exchange completed \(without proving")

    def test_cram_md5(self):
        r = ok(section(user="carol", auth="CRAM-MD5"), debug=1)
        self.assertEqual(mechanism_used(r), "CRAM-MD5")


class OAuth(unittest.TestCase):
    def test_valid_token(self):
        for mech in ("XOAUTH2", "OAUTHBEARER"):
            with self.subTest(mech=mech):
                token = a.new_token("valid")
                INTRO.grant(token, "alice")
                r = ok(section(auth=mech, **{"password-command": f"echo {token}"}), debug=1)
                self.assertEqual(mechanism_used(r), mech)

    def test_refused_token(self):
        for mech in ("XOAUTH2", "OAUTHBEARER"):
            with self.subTest(mech=mech):
                token = a.new_token("expired")  # never granted
                msg = fails(section(auth=mech, **{"password-command": f"echo {token}"}),
                            r"the access token was refused \(" + mech + r" as alice\)", r"status", r"NO")
                # The decoded RFC 7628 error report, then the server's NO
                # (the exchange was finished with the dummy response).
                self.assertRegex(msg, r"\) \[status \S+.*\]: NO ")
                self.assertNotRegex(msg, r"authentication \(.*\) as .* failed")

    def test_not_in_default_order(self):
        # A token is never sent to a server that did not get auth = XOAUTH2.
        token = a.new_token("unused")
        INTRO.grant(token, "alice")
        r = probe(section(**{"password-command": f"echo {token}"}), debug=1)
        self.assertEqual(mechanism_used(r), "SCRAM-SHA-256")


class Cleartext(unittest.TestCase):
    def test_plain_refused_without_tls(self):
        for auth in ("PLAIN", "LOGIN", "PLAIN LOGIN"):
            with self.subTest(auth=auth):
                r = probe(section(type="imap", STARTTLS="NO", auth=auth), debug=1)
                h.assert_fails(r, r"refusing to send the password in cleartext", r"auth-cleartext = YES")
                self.assertIsNone(mechanism_used(r), "nothing was sent")

    def test_token_refused_without_tls(self):
        token = a.new_token("cleartext")
        INTRO.grant(token, "alice")
        fails(section(type="imap", STARTTLS="NO", auth="XOAUTH2", **{"password-command": f"echo {token}"}),
              r"refusing to send the access token in cleartext \(XOAUTH2\)")

    def test_scram_allowed_without_tls(self):
        r = ok(section(type="imap", STARTTLS="NO"), debug=1)
        self.assertEqual(mechanism_used(r), "SCRAM-SHA-256")

    def test_explicitly_allowed(self):
        r = ok(section(type="imap", STARTTLS="NO", auth="PLAIN", **{"auth-cleartext": "YES"}), debug=1)
        self.assertEqual(mechanism_used(r), "PLAIN")

    def test_starttls_is_encrypted(self):
        r = ok(section(type="imap", auth="PLAIN"), debug=1)
        self.assertEqual(mechanism_used(r), "PLAIN")

    def test_logindisabled(self):
        # A tunnel is no network connection: only LOGINDISABLED stops PLAIN.
        fails(relay_section("logindisabled", auth="PLAIN LOGIN"), r"logins are disabled \(LOGINDISABLED\)")
        r = ok(relay_section("logindisabled", auth="PLAIN LOGIN SCRAM-SHA-256"), debug=1)
        self.assertEqual(mechanism_used(r), "SCRAM-SHA-256")
        r = ok(relay_section("pass", auth="PLAIN"), debug=1)
        self.assertEqual(mechanism_used(r), "PLAIN")


if __name__ == "__main__":
    unittest.main(verbosity=2)
