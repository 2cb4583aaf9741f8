#!/usr/bin/env python3
"""OAuth 2.0 access tokens expiring during long runs (issue 13): interimap
--watch and --notify, and pullimap --idle, authenticate with XOAUTH2 / OAUTHBEARER to a
Dovecot daemon whose oauth2 passdb asks a local introspection server
(lib/authlib.py).  Mid-run the token expires: the introspection server
refuses it from then on, the password-command prints a new one, and the
server ends the session (doveadm kick: BYE).  The run reconnects with the
new token and goes on: every message arrives exactly once.  No token
appears in any output."""

import os
import re
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import authlib as a  # noqa: E402

h.require("dovecot", "doveadm")

T = None
D = None
INTRO = None
OUTPUTS = []  # (argv, text) of every background run


def setUpModule():
    global T, D, INTRO
    T = h.TestDir("iit-auth-expiry-")
    INTRO = a.Introspection()
    D = a.make_dovecot(T, INTRO, lmtp=True)
    h.start_all(D)


def tearDownModule():
    a.check_no_secret(unittest.TestCase(), [h.Result(argv, 0, text, "") for argv, text in OUTPUTS])


class Token:
    """A token file the password-command reads; rotate() expires the
    current token and writes a new one."""

    def __init__(self, user):
        self.user = user
        self.path = os.path.join(T.path, f"token-{user}-{time.monotonic_ns()}")
        self.current = None
        self.rotate()

    def rotate(self):
        old, self.current = self.current, a.new_token(self.user)
        INTRO.grant(self.current, self.user)
        with open(self.path, "w") as f:
            f.write(self.current + "\n")
        if old:
            INTRO.revoke(old)

    def command(self):
        return f"cat {self.path}"


def kick(user):
    """The server ends the user's sessions (its imap processes say BYE).
    doveadm kick exits 68 when anvil knows no session of the user yet (it
    learns of a login a moment after it): retried."""
    def kicked():
        r = subprocess.run([h.which("doveadm") or "doveadm", "-c", D.conf, "kick", user], capture_output=True)
        if r.returncode not in (0, 68):
            raise AssertionError(f"doveadm kick: exit {r.returncode}: {r.stderr!r}")
        return r.returncode == 0
    h.wait_until(f"doveadm kick {user}", kicked, 15, interval=0.2)


def messages(user, mailbox="INBOX"):
    with h.Imap(D, user=user, password=a.USERS[user]) as m:
        return m.messages(mailbox)


def subjects(user, mailbox="INBOX"):
    out = []
    for _, (_, body) in sorted(messages(user, mailbox).items()):
        for line in body.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                out.append(line[9:].decode())
    return sorted(out)


class Background:
    def __init__(self, argv):
        self.argv = [str(x) for x in argv]
        self.err_path = os.path.join(T.path, f"run-{time.monotonic_ns()}.log")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.err, stderr=self.err,
                                     start_new_session=True)
        h.at_cleanup(self.kill)

    def text(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def assert_alive(self, what):
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.argv[0]} exited ({self.proc.returncode}) {what}\n{self.text()}")

    def describe(self):
        return self.text()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        OUTPUTS.append((self.argv, self.text()))
        return rc

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def connection(user, token, mech):
    return {"type": "imaps", "host": D.host, "port": str(D.imaps_port), "SSL_CAfile": D.cert,
            "username": user, "auth": mech, "password-command": token.command()}


class Expiry(unittest.TestCase):
    def test_interimap_watch(self):
        self.interimap("watch", "--watch=1")

    def test_interimap_notify(self):
        self.interimap("notify", "--notify")

    def interimap(self, box, mode):
        """interimap MODE on mailbox `box` of carol (local, SCRAM) and alice
        (remote, XOAUTH2); alice's token expires mid-run."""
        token = Token("alice")
        db = os.path.join(T.path, f"interimap-{box}.db")
        config = h.write_config(T, {
            "local": {"type": "imaps", "host": D.host, "port": str(D.imaps_port), "SSL_CAfile": D.cert,
                      "username": "carol", "password": a.USERS["carol"]},
            "remote": connection("alice", token, "XOAUTH2")}, default={"database": db, "list-mailbox": box})
        with h.Imap(D, user="alice", password=a.USERS["alice"]) as m:
            m.append(box, h.make_message(f"{box}-1"), create=True)
        # A first run makes the database (--watch does not) and copies NAME-1.
        r = h.assert_ok(h.run([os.environ["INTERIMAP"], f"--config={config}"]))
        OUTPUTS.append((r.argv, r.out + r.err))
        self.assertEqual(subjects("carol", box), [f"{box}-1"])
        run = Background([os.environ["INTERIMAP"], f"--config={config}", mode, "--debug"])
        h.wait_until("the first pass", lambda: re.search(r"(?m)^remote: C: \d+ LIST ", run.text()), 30, watcher=run)
        if mode == "--notify":
            h.wait_until("NOTIFY SET", lambda: re.search(r"(?m)^remote: C: \d+ NOTIFY SET", run.text()), 30,
                         watcher=run)

        token.rotate()
        kick("alice")
        h.wait_until("the reconnection", lambda: "reconnecting" in run.text(), 30, watcher=run)
        with h.Imap(D, user="alice", password=a.USERS["alice"]) as m:
            m.append(box, h.make_message(f"{box}-2"))
        with h.Imap(D, user="carol", password=a.USERS["carol"]) as m:
            m.append(box, h.make_message(f"{box}-3"))
        want = [f"{box}-1", f"{box}-2", f"{box}-3"]
        h.wait_until("both ways after the reconnection",
                     lambda: subjects("carol", box) == want and subjects("alice", box) == want, 30, watcher=run)
        self.assertEqual(run.stop(), 0, run.text())
        text = run.text()
        self.assertRegex(text, r"(?m)^remote: WARNING: .*; reconnecting \(password-command runs again\)$")
        self.assertEqual(len([l for l in text.splitlines() if "ERROR" in l]), 0, text)
        self.assertEqual(text.count("; reconnecting"), 1, text)  # the first token was good

    def test_pullimap_idle(self):
        token = Token("alice")
        statefile = os.path.join(T.path, "pullimap.state")
        section = connection("alice", token, "OAUTHBEARER")
        section.update({"statefile": statefile, "deliver-method": f"lmtp:[127.0.0.1]:{D.lmtp_port}",
                        "deliver-rcpt": "bob", "mailbox": "pull"})
        config = h.write_config(T, {"acct": section})
        with h.Imap(D, user="alice", password=a.USERS["alice"]) as m:
            m.create("pull")
            m.append("pull", h.make_message("pull-1"))
        # A first run makes the statefile (--idle does not).
        r = h.assert_ok(h.run([os.environ["PULLIMAP"], f"--config={config}", "acct"]))
        OUTPUTS.append((r.argv, r.out + r.err))
        run = Background([os.environ["PULLIMAP"], f"--config={config}", "--idle=60", "--debug", "acct"])
        self.assertEqual(subjects("bob"), ["pull-1"])
        h.wait_until("IDLE", lambda: re.search(r"(?m)^acct: C: \d+ IDLE$", run.text()), 30, watcher=run)

        token.rotate()
        kick("alice")
        h.wait_until("the reconnection", lambda: "reconnecting" in run.text(), 30, watcher=run)
        with h.Imap(D, user="alice", password=a.USERS["alice"]) as m:
            m.append("pull", h.make_message("pull-2"))
        h.wait_until("pull-2 delivered after the reconnection",
                     lambda: subjects("bob") == ["pull-1", "pull-2"], 30, watcher=run)
        self.assertEqual(run.stop(), 0, run.text())
        self.assertRegex(run.text(), r"(?m)^acct: WARNING: .*; reconnecting \(password-command runs again\)$")
        self.assertEqual(run.text().count("; reconnecting"), 1, run.text())


if __name__ == "__main__":
    unittest.main(verbosity=2)
