#!/usr/bin/env python3
"""interimap ($INTERIMAP): adoption of existing mail and UIDVALIDITY
recovery (issue 15).  Real Dovecot stores, read through imaplib.

Adopt:
 - test_first_sync_adopts: both stores hold the same 1000 messages (same
   bodies and INTERNALDATE, other UIDs, some other flags) and 50 of their
   own; after the first run each side holds 1100, each body once (by
   Message-ID and by digest), the adopted pairs carry the union of their
   flags, the database maps every message; the bytes each side sent are
   far below the adopted bodies' size (the "IMAP traffic" line); one
   "Adopted" line per side; a second run is a no-op;
 - test_duplicates_and_no_message_id: two copies on one side and one on
   the other make one pair and one copy; messages without Message-ID are
   paired by body digest; a same-header message with another body is not
   paired;
 - test_crash_after_adoption: a run killed while copying the rest (after
   the adopted pairs were committed): the next run ends converged, no
   duplicate.
UidValidity (each for a QRESYNC, a CONDSTORE (Gmail-like) and a plain
(Microsoft-365-like) side where noted):
 - test_recreated_same_messages: the remote mailbox deleted and created
   again with the same messages in another order (new UIDVALIDITY, new
   UIDs), then new messages and flag changes on both sides: the run
   warns, re-pairs, converges; no duplicate, nothing lost; the unchanged
   side's flag changes win; a second run is a no-op;
 - test_recreated_fewer: the mailbox recreated with 20 of its 30
   messages: the 10 missing come back from the other side, nothing is
   expunged anywhere;
 - test_repair_mode: the same under --repair;
 - test_crash_during_recovery: killed while copying the lost messages
   back (before and after the APPENDUID reached interimap): the next run
   converges, no duplicate.
"""

import collections
import hashlib
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import synclib as s  # noqa: E402

T = None


def setUpModule():
    global T
    T = h.TestDir("iit-sync-adopt-")


def date_of(i):
    """A distinct INTERNALDATE per message (imaplib's quoted form)."""
    return f'"{1 + i % 28:02d}-Mar-2023 {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d} +0100"'


def msg(tag, i, size=None, headers=(), head=None, body=None):
    return h.make_message(subject=f"{tag} {i}", size=size, headers=headers, head=head,
                          body=body or f"Message {tag} number {i}.\r\n")


def seed(store, mailbox, items, create=False):
    """items: [(bytes, flags, date)]; returns the UIDs."""
    with h.Imap(store) as m:
        if create and mailbox.upper() != "INBOX":
            m.create(mailbox)
        return [m.append(mailbox, body, fl, date) for body, fl, date in items]


def sha(b):
    return hashlib.sha256(b).hexdigest()


def message_ids(store, mailbox):
    """Counter of Message-ID header values."""
    out = collections.Counter()
    with h.Imap(store) as m:
        bodies = [body for _, (_, body) in m.messages(mailbox).items()]
    for body in bodies:
        found = re.search(rb"(?im)^Message-ID:\s*(\S+)", body)
        out[found.group(1) if found else None] += 1
    return out


def traffic(err):
    """{side: (recv bytes, sent bytes)} from the closing lines."""
    units = {"": 1, "K": 1024, "M": 1 << 20, "G": 1 << 30}

    def num(t):
        m = re.fullmatch(r"([\d.]+)([KMG]?)", t)
        return float(m.group(1)) * units[m.group(2)]
    out = {}
    for side, recv, sent in re.findall(r"(local|remote): IMAP traffic \(bytes\): recv (\S+)(?: \([^)]*\))? sent (\S+)",
                                       err):
        out[side] = (num(recv), num(sent))
    return out


def union(a, b):
    return sorted(set(a) | set(b))


class Adopt(unittest.TestCase):
    def test_first_sync_adopts(self):
        p = s.Pair(T, "adopt")
        n, own = 1000, 50
        size = 8192
        common = [msg("common", i, size=size) for i in range(n)]
        lflags = [["\\Seen"] if i % 3 == 0 else ([] if i % 3 == 1 else ["$Work"]) for i in range(n)]
        rflags = [["\\Seen"] if i % 3 == 0 else (["\\Flagged"] if i % 5 == 0 else []) for i in range(n)]
        lonly = [(msg("lonly", i, size=size), ["\\Answered"] if i % 2 else [], date_of(5000 + i)) for i in range(own)]
        ronly = [(msg("ronly", i, size=size), ["\\Draft"] if i % 2 else [], date_of(6000 + i)) for i in range(own)]
        # local: in order, its own messages interleaved; remote: reversed
        litems, k = [], 0
        for i in range(n):
            litems.append((common[i], lflags[i], date_of(i)))
            if i % 20 == 19 and k < own:
                litems.append(lonly[k])
                k += 1
        litems += lonly[k:]
        ritems = [(common[i], rflags[i], date_of(i)) for i in reversed(range(n))] + ronly
        seed(p.local, "INBOX", litems)
        seed(p.remote, "INBOX", ritems)
        differ = sum(sorted(lflags[i]) != sorted(rflags[i]) for i in range(n))
        self.assertGreater(differ, 300)  # the flag merge is exercised

        expect = s.counter(*[(common[i], union(lflags[i], rflags[i])) for i in range(n)],
                           *[(b, f) for b, f, _ in lonly], *[(b, f) for b, f, _ in ronly])
        r = p.sync(timeout=180)
        s.log(f"first run (adoption of {n}): {r.seconds:.2f}s")
        l, rm, db = p.check(expect={"INBOX": expect})
        for snap in (l, rm):
            self.assertEqual(len(snap["INBOX"]), n + 2 * own)
            self.assertEqual(len({d for _, d in snap["INBOX"].values()}), n + 2 * own, "a body twice")
        for store in (p.local, p.remote):
            ids = message_ids(store, "INBOX")
            self.assertEqual(sum(ids.values()), n + 2 * own)
            self.assertEqual(max(ids.values()), 1, "a Message-ID twice")
        # one line per side, with the count
        for side in ("local", "remote"):
            self.assertRegex(r.err, rf"{side}\(INBOX\): Adopted {n} of {n + own} message\(s\)")
        self.assertNotRegex(r.err, r"Conflicting flag update")
        # what each side sent (its FETCH answers): the 50 copies' bodies and
        # the headers, far below the 1000 adopted bodies (8 MiB)
        t = traffic(r.err)
        self.assertEqual(set(t), {"local", "remote"}, r.err[-500:])
        adopted_bytes = n * size
        for side, (recv, _) in t.items():
            s.log(f"{side}: read {recv:.0f} bytes, adopted bodies {adopted_bytes}")
            self.assertLess(recv, own * size * 1.2 + adopted_bytes * 0.15, side)
        # the second run is a no-op
        before = (s.snapshot(p.local), s.snapshot(p.remote), s.read_db(p.db))
        r2 = p.sync()
        self.assertEqual(before, (s.snapshot(p.local), s.snapshot(p.remote), s.read_db(p.db)))
        self.assertNotRegex(r2.err, r"Adopted|Added|Updated")

    def test_duplicates_and_no_message_id(self):
        p = s.Pair(T, "dups")
        a = msg("a", 1)
        noid = [b"From: x@example.org\r\nSubject: no id %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(3)]
        # the same Message-ID, size and date, another header (the digest
        # of the header tells them apart)
        twin_l = msg("twin", 1, headers=["X-Copy: A"])
        twin_r = msg("twin", 1, headers=["X-Copy: B"])
        self.assertEqual(len(twin_l), len(twin_r))
        d = date_of(1)
        seed(p.local, "INBOX", [(a, ["\\Seen"], d), (a, [], d), (noid[0], [], d), (noid[1], ["$A"], d),
                                (noid[1], [], d), (twin_l, [], date_of(9))])
        seed(p.remote, "INBOX", [(noid[1], ["$B"], d), (a, ["\\Flagged"], d), (noid[0], [], d),
                                 (noid[2], [], d), (twin_r, [], date_of(9))])
        r = p.sync()
        # pairs: a (the first local copy, lowest UID), noid[0], noid[1] (the first local copy)
        for side in ("local", "remote"):
            self.assertRegex(r.err, rf"{side}\(INBOX\): Adopted 3 of \d+ message\(s\)")
        expect = s.counter((a, ["\\Flagged", "\\Seen"]), (a, []), (noid[0], []), (noid[1], ["$A", "$B"]),
                           (noid[1], []), (noid[2], []), (twin_l, []), (twin_r, []))
        p.check(expect={"INBOX": expect})

    def test_crash_after_adoption(self):
        import crashlib as c
        p = s.Pair(T, "crash", remote_opts={"compress": "no"})
        n = 200
        common = [msg("c", i) for i in range(n)]
        seed(p.local, "INBOX", [(common[i], ["\\Seen"] if i % 2 else [], date_of(i)) for i in range(n)]
             + [(msg("l", i), [], date_of(1000 + i)) for i in range(300)])
        seed(p.remote, "INBOX", [(common[i], ["\\Flagged"] if i % 3 else [], date_of(i)) for i in range(n)])
        expect = s.counter(*[(common[i], union(["\\Seen"] if i % 2 else [], ["\\Flagged"] if i % 3 else []))
                             for i in range(n)], *[(msg("l", i), []) for i in range(300)])
        # killed once interimap got the remote's first APPENDUID (after the
        # adoption's commit, before the copies' mappings were)
        c.run_frozen(p, "remote", "adopt-crash", line=rb" OK \[APPENDUID ", past=True)
        db = s.read_db(p.db)
        self.assertGreaterEqual(sum(len(v) for v in db["mapping"].values()), n, "adoption was not committed")
        r = p.sync()
        p.check(expect={"INBOX": expect})
        self.assertRegex(r.err, r"Resuming interrupted sync for INBOX")
        self.assertNotRegex(r.err, r"Adopted")


class UidValidity(unittest.TestCase):
    """A synchronized mailbox Box of 30 messages; the remote one recreated."""
    N = 30

    def synced(self, n=None, **kw):
        p = s.Pair(T, self._testMethodName.replace("test_", ""), **kw)
        items = [(msg("box", i), ["\\Seen"] if i % 2 else [], date_of(i)) for i in range(n or self.N)]
        seed(p.local, "Box", items, create=True)
        p.sync()
        p.check()
        return p, items

    def recreate(self, p, items, keep, order=reversed):
        """Deletes and creates the remote Box, then appends items[keep]
        (with their current remote flags) in the given order."""
        now = {d: f for f, d in s.snapshot(p.remote, ["Box"])["Box"].values()}
        with h.Imap(p.remote) as m:
            m.delete("Box")
            m.create("Box")
            for i in order(keep):
                body, _, date = items[i]
                m.append("Box", body, list(now[sha(body)]), date)

    def uidvalidity(self, p):
        db = s.read_db(p.db)
        idx = {n: i for i, (n, _) in db["mailboxes"].items()}["Box"]
        return db["remote"][idx][0]

    def scenario(self, fewer=False, repair=False, **kw):
        p, items = self.synced(**kw)
        old_uv = self.uidvalidity(p)
        lsnap = s.snapshot(p.local, ["Box"])["Box"]
        luid = {d: u for u, (_, d) in lsnap.items()}
        keep = list(range(20)) if fewer else list(range(self.N))
        # before the change, on the remote: flags of 3 and 4 changed
        with h.Imap(p.remote) as m:
            ru = {d: u for u, (_, d) in s.snapshot(p.remote, ["Box"])["Box"].items()}
            m.flag("Box", [ru[sha(items[3][0])]], "+FLAGS", ["$Remote"])
            m.flag("Box", [ru[sha(items[4][0])]], "FLAGS", ["\\Answered"])
        self.recreate(p, items, keep)
        # after it: new messages on both sides, flags changed on both
        new_l = [(msg("newl", i), ["\\Flagged"], date_of(100 + i)) for i in range(4)]
        new_r = [(msg("newr", i), [], date_of(200 + i)) for i in range(3)]
        seed(p.local, "Box", new_l)
        seed(p.remote, "Box", new_r)
        with h.Imap(p.local) as m:
            m.flag("Box", [luid[sha(items[5][0])]], "FLAGS", ["$LocalWins"])   # unchanged side: wins
            m.flag("Box", [luid[sha(items[9][0])]], "-FLAGS", ["\\Seen"])     # wins over the remote's \Seen
        with h.Imap(p.remote) as m:
            ru = {d: u for u, (_, d) in s.snapshot(p.remote, ["Box"])["Box"].items()}
            m.flag("Box", [ru[sha(items[7][0])]], "+FLAGS", ["$RemoteNew"])   # merged (union)
            m.flag("Box", [ru[sha(items[5][0])]], "+FLAGS", ["$Lost"])        # loses against $LocalWins
        expect = {}
        for i, (body, fl, _) in enumerate(items):
            f = list(fl)
            if i == 3:
                f = union(f, ["$Remote"])
            if i == 4:
                f = ["\\Answered"]
            if i == 5:
                f = ["$LocalWins"]
            if i == 9:
                f = []
            if i == 7:
                f = union(f, ["$RemoteNew"])
            expect[sha(body)] = (body, f)
        for body, fl, _ in new_l + new_r:
            expect[sha(body)] = (body, fl)
        lbefore = set(d for _, d in s.snapshot(p.local, ["Box"])["Box"].values())
        r = p.sync("--repair") if repair else p.sync()
        self.assertRegex(r.err, r"remote\(Box\): WARNING: UIDVALIDITY changed \(\d+ -> \d+\): re-paired "
                                rf"{len(keep)} message\(s\)")
        if fewer:
            self.assertRegex(r.err, rf"copying {self.N - len(keep) + len(new_l)} message\(s\) to remote "
                                    rf"\({self.N - len(keep)} of them lost with the change\) and {len(new_r)} to local")
        l, rm, db = p.check(expect={"Box": s.counter(*expect.values())})
        self.assertNotEqual(self.uidvalidity(p), old_uv)
        # nothing the local side had was expunged
        self.assertTrue(lbefore <= set(d for _, d in l["Box"].values()))
        # a second run is a no-op
        before = (s.snapshot(p.local), s.snapshot(p.remote), s.read_db(p.db))
        r2 = p.sync()
        self.assertEqual(before, (s.snapshot(p.local), s.snapshot(p.remote), s.read_db(p.db)))
        self.assertNotRegex(r2.err, r"UIDVALIDITY|Added|Updated")
        return p

    def test_crash_during_recovery(self):
        """Killed while the recovery copies what the recreated side lost,
        before or after interimap got the APPENDUID: the next run ends
        converged, nothing duplicated or lost."""
        import crashlib as c
        for past in (False, True):
            with self.subTest(after=past):
                # 300 lost: three APPEND batches, the run still busy after the first
                p, items = self.synced(n=310, remote_opts={"compress": "no"})
                expect = s.counter(*[(b, f) for b, f, _ in items])
                self.recreate(p, items, list(range(10)))
                c.run_frozen(p, "remote", f"uv-crash-{past}", line=rb" OK \[APPENDUID ", past=past)
                r = p.sync()
                p.check(expect={"Box": expect})
                if past:
                    self.assertRegex(r.err, r"Resuming interrupted sync for Box")
                # the second run is a no-op
                before = (s.snapshot(p.local), s.snapshot(p.remote), s.read_db(p.db))
                p.sync()
                self.assertEqual(before, (s.snapshot(p.local), s.snapshot(p.remote), s.read_db(p.db)))

    def test_recreated_same_messages(self):
        self.scenario()

    def test_recreated_fewer(self):
        self.scenario(fewer=True)

    def test_repair_mode(self):
        self.scenario(repair=True)

    def test_condstore_side_recreated(self):
        self.scenario(remote_caps=h.GMAIL_LIKE)

    def test_condstore_side_unchanged(self):
        self.scenario(local_caps=h.GMAIL_LIKE)

    def test_plain_side_recreated(self):
        self.scenario(remote_caps=h.M365_LIKE)

    def test_plain_side_unchanged(self):
        self.scenario(fewer=True, local_caps=h.M365_LIKE)


if __name__ == "__main__":
    s.main(globals())
