#!/usr/bin/env python3
"""Smoke test of the interimap synchronization engine ($INTERIMAP, ours
under meson) on two throwaway Dovecot stores reached as tunnels, with
different hierarchy delimiters ('/' locally, '.' remotely):

 - first copy both ways into stores that lack each other's mail
   (nested mailboxes created on the other side, flags and bodies kept);
 - a second run is a no-op: one LIST per server and no SELECT (from the
   --debug trace), and the stores do not change;
 - a flag change, a deletion and new messages on either side propagate;
 - a second run on the same database while the first one holds it is
   refused at once and changes nothing.

Every check reads the stores through imaplib, never interimap's output
(except the no-SELECT check, which is about the protocol itself)."""

import os
import re
import sqlite3
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import synclib as s  # noqa: E402

s.require()  # Dovecot, setpriv as root, $INTERIMAP
INTERIMAP = s.INTERIMAP
FAST = s.FAST


def snapshot(store, mailbox):
    """Sorted [(flags without \\Recent, sha256 of the body)] of a mailbox."""
    return sorted((tuple(f for f in flags if f != "\\Recent"), h.sha256_hex(body))
                  for flags, body in store.messages(mailbox).values())


class SyncSmoke(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.t = h.TestDir("iit-sync-smoke-")
        cls.local = h.TunnelStore(cls.t, "local", extra_conf=FAST)
        cls.remote = h.TunnelStore(cls.t, "remote", separator=".", extra_conf=FAST)
        cls.db = os.path.join(cls.t.path, "state.db")
        cls.config = h.write_config(cls.t, {"local": cls.local.section(), "remote": cls.remote.section()},
                                    default={"database": cls.db})

    def run_interimap(self, *args, config=None, check=True):
        r = h.run([INTERIMAP, "--config", config or self.config] + list(args), timeout=120)
        if check and r.rc != 0:
            self.fail(r.describe())
        return r.rc, r.err

    def wait_until_locked(self, proc, timeout=20):
        """Returns once proc holds the database's lock (an IMMEDIATE
        transaction of ours is refused)."""
        def locked():
            self.assertIsNone(proc.poll(), "the first run ended early")
            con = sqlite3.connect(self.db, timeout=0)
            try:
                con.execute("BEGIN IMMEDIATE")
                con.rollback()
                return False
            except sqlite3.OperationalError as e:
                if "locked" in str(e):
                    return True
                raise
            finally:
                con.close()

        h.wait_until("the first run locks the database", locked, timeout, interval=0.05)

    def assert_converged(self, pairs):
        for lname, rname in pairs:
            self.assertEqual(snapshot(self.local, lname), snapshot(self.remote, rname), f"{lname} / {rname}")

    def test_smoke(self):
        L, R = self.local, self.remote
        # Seed: remote INBOX and a nested mailbox; a local-only mailbox.
        R.append_many("INBOX", [h.make_message(f"remote {i}", body=f"body {i}\r\n") for i in range(20)])
        R.append("work.reports", h.make_message("report"), flags=["\\Seen", "$Label1"], create=True)
        L.append("archive/2024", h.make_message("old", body="8-bit: \xe9t\xe9\r\n"), flags=["\\Flagged"],
                 create=True)
        L.append("INBOX", h.make_message("local one"), flags=["\\Answered"])

        # 1. First copy both ways.
        self.run_interimap()
        pairs = [("INBOX", "INBOX"), ("work/reports", "work.reports"), ("archive/2024", "archive.2024")]
        self.assertIn("work/reports", s.selectable(L))
        self.assertIn("archive.2024", s.selectable(R))
        self.assert_converged(pairs)
        self.assertEqual(len(snapshot(L, "INBOX")), 21)
        self.assertIn((("$Label1", "\\Seen"), h.sha256_hex(h.make_message("report"))), snapshot(L, "work/reports"))

        # 2. Second run: nothing to do, no SELECT, nothing changes.
        before = {n: snapshot(L, n) for n, _ in pairs}, {n: snapshot(R, n) for _, n in pairs}
        status_before = L.status("INBOX"), R.status("INBOX")
        _, err = self.run_interimap("--debug")
        commands = re.findall(r"^(local|remote): C: \d+ (\S+)", err, re.M)
        self.assertTrue(commands, err)
        self.assertNotIn("SELECT", [c for _, c in commands], err)
        self.assertNotIn("EXAMINE", [c for _, c in commands], err)
        # Exactly one LIST (with LIST-STATUS) per server: the hierarchy
        # delimiter comes with its answer, as the reference takes it.
        # A one-shot run hangs its tunnels up (end of input) without a
        # LOGOUT, as the reference does; --watch logs out (test_watch*).
        for side in ("local", "remote"):
            self.assertEqual([c for s, c in commands if s == side and c not in ("COMPRESS", "ENABLE")],
                             ["LIST"], err)
        # MESSAGES comes with it for the mass-deletion guard (issue 15;
        # doc/design.md "The guard"): a few bytes per mailbox.
        self.assertRegex(err, r"C: \d+ LIST .*STATUS \(MESSAGES ", err)
        after = {n: snapshot(L, n) for n, _ in pairs}, {n: snapshot(R, n) for _, n in pairs}
        self.assertEqual(before, after)
        self.assertEqual(status_before, (L.status("INBOX"), R.status("INBOX")))

        # 3. A flag change locally, a deletion remotely, new mail on both sides.
        with L.imap() as m:
            m.select("INBOX")
            typ, _ = m.uid("STORE", "3", "+FLAGS", "(\\Seen $Important)")
            self.assertEqual(typ, "OK")
        victim = R.messages("INBOX")[5][1]
        with R.imap() as m:
            m.select("INBOX")
            m.uid("STORE", "5", "+FLAGS", "(\\Deleted)")
            m.expunge()
        R.append("work.reports", h.make_message("report 2"))
        L.append("INBOX", h.make_message("local two"))
        _, err = self.run_interimap()
        self.assert_converged(pairs)
        # The reference's closing lines, once per side, after a run that
        # did something (a no-op run prints nothing: checked below).
        for side in ("local", "remote"):
            self.assertEqual(len(re.findall(rf"^{side}: IMAP traffic \(bytes\): recv \d+(\.\d\dK)?"
                                            rf"( \(compr\. \S+, factor \d\.\d\d\))? sent \d+", err, re.M)), 1, err)
        _, err = self.run_interimap()
        # (the tunnels' own stderr, Dovecot's "imap(USER)..." lines, is ours)
        self.assertEqual([l for l in err.splitlines() if not l.startswith("imap(")], [],
                         "a no-op run without --debug says nothing")
        remote_inbox = R.messages("INBOX")
        local_inbox = snapshot(L, "INBOX")
        self.assertEqual(len(local_inbox), 21)  # 21 - 1 deleted + 1 new
        self.assertNotIn(h.sha256_hex(victim), [d for _, d in local_inbox])
        flagged = [f for f, b in remote_inbox.values() if "$Important" in f]
        self.assertEqual(len(flagged), 1)
        self.assertIn("\\Seen", flagged[0])
        self.assertEqual(len(snapshot(L, "work/reports")), 2)

        # 4. A second run while the first one holds the database: refused at
        # once, nothing changed.  The first run's local tunnel is slowed down
        # so that it holds the lock (taken before any network traffic).
        slow = h.write_config(self.t, {"local": L.section(command="sleep 5; " + L.command),
                                       "remote": R.section()}, default={"database": self.db})
        L.append("INBOX", h.make_message("while locked"))
        first = subprocess.Popen([INTERIMAP, "--config", slow], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            self.wait_until_locked(first)
            rc, err = self.run_interimap(check=False)
            self.assertIsNone(first.poll(), "the second run must fail at once, while the first one runs")
            self.assertEqual(rc, 1, err)
            self.assertRegex(err, r"(?i)locked", err)
            self.assertEqual(len(snapshot(R, "INBOX")), 21)  # not copied by the refused run
        finally:
            _, ferr = first.communicate(timeout=60)
        self.assertEqual(first.returncode, 0, ferr.decode("utf-8", "replace"))
        self.assert_converged(pairs)
        self.assertEqual(len(snapshot(R, "INBOX")), 22)


if __name__ == "__main__":
    unittest.main(verbosity=2)
