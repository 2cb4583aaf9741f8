#!/usr/bin/env python3
"""interimap ($INTERIMAP): several mailboxes in flight at once (issue 14,
`max-connections`, libinterimap/sync/workers.hpp).

 - a first copy and an incremental run of many mailboxes use two
   connections per server (counted by capgate.py in each tunnel) and
   converge; a no-op, and a run with one mailbox to do, use one;
 - the log is the one of `max-connections = 1`, line for line (but the
   traffic totals), mailbox after mailbox;
 - a server refusing the second connection: a warning, and the run goes
   on with one.
The kill, cut and kill-loop tests cover interruptions with several
mailboxes in flight.
Stores are read through imaplib; see synclib.Pair.check.
"""

import os
import re
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import synclib as s  # noqa: E402

T = None
BOXES = [f"Box{i:02d}" for i in range(8)]


def setUpModule():
    global T
    s.require()
    if s.is_reference():
        raise unittest.SkipTest("max-connections is ours")
    T = h.TestDir("iit-sync-parallel-")


def seed_all(pair, tag, n=6):
    e = pair.seed("remote", {b: s.msgs(f"{tag}-r-{b}", n, ["\\Seen"]) for b in BOXES})
    return s.merge(e, pair.seed("local", {b: s.msgs(f"{tag}-l-{b}", n) for b in BOXES}))


def change_all(pair, tag):
    """A new message on each side, a flag change and an expunge, in every mailbox."""
    expect = {}
    for side in ("local", "remote"):
        expect = s.merge(expect, pair.seed(side, {b: s.msgs(f"{tag}-{side}-{b}", 1) for b in BOXES}, create=False))
    with h.Imap(pair.remote) as c:
        for b in BOXES:
            uids = c.uids(b)
            c.flag(b, uids[:1], "+FLAGS", ["\\Flagged"])
            c.expunge(b, uids[1:2])
    return expect


def sessions(gate, since):
    """How many connections a run opened to that side (capgate logs each)."""
    return len(gate.connections(since))


def lines(result, pair):
    """interimap's stderr lines but the traffic totals (the other
    connection's login makes them differ), the pair's name left out, in
    groups of consecutive lines about one mailbox; sorted within a group
    (a mailbox's two sides log from two threads, also with one
    connection, so their lines may come in either order)."""
    groups = []
    for ln in result.err.splitlines():
        if "IMAP traffic" in ln:
            continue
        m = re.match(r"(?:local|remote)\(([^)]*)\)", ln)
        key = m.group(1) if m else None
        if not groups or groups[-1][0] != key:
            groups.append((key, []))
        groups[-1][1].append(ln.replace(pair.name, "PAIR"))
    return [(key, sorted(group)) for key, group in groups]


class Parallel(unittest.TestCase):
    def pair(self, **kw):
        return s.Pair(T, self._testMethodName.replace("test_", ""), **kw)

    def test_two_connections_converge(self):
        p = self.pair()
        gates = {side: p.gate(side) for side in ("local", "remote")}
        seed_all(p, "conv")
        marks = {side: g.mark() for side, g in gates.items()}
        p.sync()
        p.check()
        for side, g in gates.items():
            self.assertEqual(sessions(g, marks[side]), 2, f"{side}: first copy of {len(BOXES)} mailboxes")
        # Every mailbox changed on both sides: two connections again.
        change_all(p, "inc")
        marks = {side: g.mark() for side, g in gates.items()}
        p.sync()
        p.check()
        for side, g in gates.items():
            self.assertEqual(sessions(g, marks[side]), 2, f"{side}: incremental run")
        # A no-op opens one; so does a run with one mailbox to do.
        marks = {side: g.mark() for side, g in gates.items()}
        r = p.sync()
        self.assertEqual(r.err.strip(), "")
        p.seed("local", {"Box03": s.msgs("one", 1)}, create=False)
        p.sync()
        p.check()
        for side, g in gates.items():
            self.assertEqual(sessions(g, marks[side]), 2, f"{side}: a no-op, then one mailbox")
        p.assert_gates_clean()

    def test_log_as_with_one_connection(self):
        # The same data and changes in two pairs, one per setting: the same
        # lines, in the same order (each mailbox's lines together).
        results = {}
        for n in ("1", "2"):
            p = self.pair(default={"max-connections": n})
            seed_all(p, "log")
            first = p.sync()
            change_all(p, "log-inc")
            second = p.sync()
            p.check()
            results[n] = (lines(first, p), lines(second, p))
        self.maxDiff = None
        self.assertEqual(results["1"], results["2"])
        # Mailbox after mailbox: once a mailbox's lines end, it is not named again.
        for run in results["2"]:
            keys = [key for key, _ in run if key is not None]
            self.assertEqual(len(keys), len(set(keys)), run)
            self.assertGreaterEqual(len(keys), len(BOXES), run)

    def test_second_connection_refused(self):
        p = self.pair()
        # The remote's tunnel serves one session, then fails: the second
        # connection is refused (as a server at its connection limit).
        flag = os.path.join(T.path, f"{p.name}-served")
        p.write_config(remote_command=f"if [ -e {flag} ]; then echo '* BYE too many connections'; exit 1; fi; "
                                      f"touch {flag}; {p.remote.command} 2>>{p.remote.log_path}")
        seed_all(p, "refused")
        r = p.sync()
        self.assertIn("Could not open one more connection, going on with fewer", r.err)
        self.assertEqual(len([ln for ln in r.err.splitlines() if "WARNING" in ln]), 1, r.err)
        os.unlink(flag)
        p.check()


if __name__ == "__main__":
    unittest.main(verbosity=2)
