#!/usr/bin/env python3
"""interimap ($INTERIMAP) with a Gmail-like remote: CONDSTORE without
QRESYNC (issue 12), against a full-featured local Dovecot.

The remote advertises harness.GMAIL_LIKE (Gmail's published list:
CONDSTORE, ESEARCH, LIST-EXTENDED, LIST-STATUS, LITERAL-, no QRESYNC, no
MULTIAPPEND); lib/capgate.py sits in both tunnels and fails the test on
any command using an extension its side did not advertise (Dovecot still
accepts them: the gate is what proves the client kept to the list).

GateChecks (pass with any engine): the gate's parser self-test; the
trimmed stores advertise exactly their list (PREAUTH greeting and
CAPABILITY); the gate records what a client sends beyond the list
(a raw session through the gate: ENABLE QRESYNC, SELECT (QRESYNC ...), VANISHED,
LIST-STATUS, HIGHESTMODSEQ, ESEARCH, MULTIAPPEND...) while Dovecot
accepts it; and a whole QRESYNC run through gates on full Dovecot stores
records nothing.

GmailRemote (lib/trackinglib.Scenarios), each against a model of the
expected end state: first copy both ways + two no-op runs (unchanged
stores and database, and cheap: no SELECT, no FETCH on either side);
changes on both sides of every kind (new messages, flags and keywords
added and removed, conflicts: the union, expunges on either and both
sides, expunge against a flag change: the expunge wins, new mailboxes,
subscriptions) then a no-op; a first copy and an incremental run
SIGKILLed mid-run then rerun: identical sides, nothing lost or
duplicated; no gate violation at any point.

Until the engine has a CONDSTORE mode, interimap refuses the remote
("server lacks required capability QRESYNC"): GmailRemote fails there.
GATE_SELFTEST=1 runs the same scenarios on full Dovecot stores (QRESYNC
on both sides) through the same gates: they pass with today's engine.
"""

import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import synclib as s  # noqa: E402
import trackinglib as tl  # noqa: E402

T = None


def raw_session(command, commands):
    """Sends each command (tagged t1, t2, ...) through a tunnel command,
    one at a time; returns the status and text of each tagged answer.
    A COMPRESS DEFLATE, if OK, ends the session (what follows is deflated)."""
    proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    answers = []
    try:
        proc.stdout.readline()  # the greeting
        for i, cmd in enumerate(commands, 1):
            proc.stdin.write(f"t{i} {cmd}\r\n".encode())
            proc.stdin.flush()
            while True:
                line = proc.stdout.readline().decode("utf-8", "replace")
                if not line:
                    raise AssertionError(f"the connection closed after {cmd}")
                if line.startswith(f"t{i} "):
                    answers.append(line[len(f"t{i} "):].strip())
                    break
            if cmd.upper().startswith("COMPRESS") and answers[-1].startswith("OK"):
                break
    finally:
        proc.stdin.close()
        proc.stdout.close()
        proc.wait(timeout=10)
    return answers


def setUpModule():
    global T
    T = h.TestDir("iit-sync-condstore-")
    tl.Scenarios.tdir = T
    if tl.SANITY:
        s.log("GATE_SELFTEST: full Dovecot stores (QRESYNC on both sides), no forced mode")


class GateChecks(unittest.TestCase):
    def test_parser_self_test(self):
        r = h.run([sys.executable, s.CAPGATE, "--self-test"], timeout=60)
        self.assertEqual(r.rc, 0, r.describe())
        s.log(r.out.strip().splitlines()[-1])

    def test_trimmed_stores_advertise_their_list(self):
        for name, lst in (("gmail", h.GMAIL_LIKE), ("m365", h.M365_LIKE)):
            store = h.TunnelStore(T, f"advertise-{name}", capabilities=lst)
            greeting, command = store.advertised()
            self.assertEqual(greeting, lst.split(), f"{name}: the PREAUTH greeting")
            self.assertEqual(command, lst.split(), f"{name}: CAPABILITY")

    def test_gate_records_what_was_not_advertised(self):
        """A raw session through the gate: Dovecot answers OK to extensions it
        did not advertise; the gate records each, and nothing else."""
        cases = {
            "gmail": (h.GMAIL_LIKE, [
                ("ENABLE", "CONDSTORE", None),
                ("ENABLE", "QRESYNC", "QRESYNC"),
                ("SELECT", 'INBOX (QRESYNC (1 1))', "QRESYNC"),
                ("UID", "FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)", "QRESYNC"),
                ("APPEND", "INBOX {3+}\r\nabc", None),
                ("STATUS", "INBOX (UIDNEXT HIGHESTMODSEQ)", None),
                ("LIST", '"" "*" RETURN (STATUS (MESSAGES HIGHESTMODSEQ))', None),
                ("UID", "SEARCH RETURN (ALL) 1:*", None),
                ("UID", "FETCH 1:* (FLAGS MODSEQ) (CHANGEDSINCE 1)", None),
            ]),
            "m365": (h.M365_LIKE, [
                ("ENABLE", "CONDSTORE", ("ENABLE", "CONDSTORE")),
                ("CREATE", "Other", None),
                ("STATUS", "INBOX (UIDNEXT HIGHESTMODSEQ)", "CONDSTORE"),
                ("LIST", '"" "*" RETURN (STATUS (MESSAGES))', "LIST-STATUS"),
                ("LIST", '(SUBSCRIBED) "" "*"', "LIST-EXTENDED"),
                ("SELECT", "INBOX (CONDSTORE)", "CONDSTORE"),
                ("UID", "SEARCH RETURN (ALL) 1:*", "ESEARCH"),
                ("UID", "FETCH 1:* (FLAGS) (CHANGEDSINCE 1)", "CONDSTORE"),
                ("UID", "FETCH 1:* (FLAGS)", None),
                ("UID", "MOVE 1 Other", None),
                ("COMPRESS", "DEFLATE", "COMPRESS=DEFLATE"),
            ]),
        }
        for name, (lst, commands) in cases.items():
            store = h.TunnelStore(T, f"gate-{name}", capabilities=lst)
            store.append("INBOX", s.message("gate", 0))
            p = s.Pair(T, f"gate-{name}", remote=store)
            g = p.gate("remote")
            answers = raw_session(g.command(), [f"{cmd} {args}" for cmd, args, _ in commands])
            for (cmd, args, _), answer in zip(commands, answers):
                self.assertTrue(answer.startswith("OK"), f"{name}: Dovecot refused {cmd} {args}: {answer}")
            expected = [c for _, _, cap in commands if cap for c in ((cap,) if isinstance(cap, str) else cap)]
            h.wait_until("the gate's last lines", lambda: len(g.violations()) >= len(expected), 10)
            got = g.violations()
            self.assertEqual(len(got), len(expected), f"{name}:\n" + "\n".join(got))
            for cap, line in zip(expected, got):
                self.assertIn(f" {cap} not advertised", line)
            s.log(f"{name}: {len(got)} violations recorded, as expected")

    def test_gate_clean_on_a_qresync_run(self):
        """interimap as it is today (QRESYNC both sides) through gates on
        full Dovecot stores: first copy, changes, a no-op, no violation."""
        p = s.Pair(T, "gate-qresync")
        gates = [p.gate("local"), p.gate("remote")]
        m = tl.Model(p)
        inbox = m.add("local", "INBOX", s.msgs("q", 6, ["\\Seen"]))
        m.add("remote", "R", s.msgs("qr", 5), subscribe=True)
        m.add("remote", "Big", [(s.message("big", 0, size=300 * 1024), [])])  # literals over 4096
        m.expect()
        s.assert_ok(p.run())
        p.assert_gates_clean()
        m.check()
        m.flag("remote", "INBOX", inbox[0], "-FLAGS", ["\\Seen"])
        m.expunge("local", "INBOX", inbox[1])
        m.add("local", "INBOX", s.msgs("q-new", 3))
        m.expect()
        s.assert_ok(p.run())
        p.assert_gates_clean()
        m.check()
        marks = [g.mark() for g in gates]
        s.assert_ok(p.run())
        p.assert_gates_clean()
        for g, mark in zip(gates, marks):
            tl.assert_cheap_noop(g, mark, "qresync", len(m.boxes))
        verbs = {v for g in gates for v, _ in g.commands()}
        self.assertTrue({"ENABLE", "SELECT", "UID FETCH", "APPEND", "LIST"} <= verbs, sorted(verbs))


class GmailRemote(tl.Scenarios, unittest.TestCase):
    REMOTE_CAPS = h.GMAIL_LIKE

    def test_gmail_example_config(self):
        """examples/config/interimap-gmail.conf's ignore-mailbox: Gmail's
        [Gmail]/All Mail, Important and Starred (every message again) are
        not copied, the other [Gmail]/ mailboxes and the labels are."""
        example = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "config",
                               "interimap-gmail.conf")
        with open(example) as f:
            pattern = next(line.split("=", 1)[1].strip() for line in f if line.startswith("ignore-mailbox"))
        p = s.Pair(T, "gmail-example", remote_caps=h.GMAIL_LIKE, default={"ignore-mailbox": pattern})
        e = p.seed("remote", {"INBOX": s.msgs("inbox", 3), "[Gmail]\0Sent Mail": s.msgs("sent", 2),
                              "Label": s.msgs("label", 1)}, create=True)
        p.seed("remote", {"[Gmail]\0All Mail": s.msgs("inbox", 3) + s.msgs("sent", 2) + s.msgs("label", 1),
                          "[Gmail]\0Important": s.msgs("inbox", 1), "[Gmail]\0Starred": s.msgs("label", 1)},
               create=True)
        s.assert_ok(p.run())
        local = p.side_snapshot("local")
        self.assertEqual(sorted(local), sorted(["INBOX", "[Gmail]\0Sent Mail", "Label"]))
        p.check(mailboxes=["INBOX", "[Gmail]\0Sent Mail", "Label"], expect=e)


if __name__ == "__main__":
    s.main(globals())
