#!/usr/bin/env python3
"""interimap ($INTERIMAP) between two throwaway Dovecot stores: the basic
synchronization.  Each test makes its own pair of stores, changes them
through imaplib, runs interimap and applies the convergence check
(synclib.Pair.check: same (flags, body digest) multisets on both sides,
the database maps exactly those messages) plus the exact expected
contents.

 - first copy local -> remote, remote -> local, both at once (nested
   mailboxes, flags, keywords, subscriptions), then a no-op run;
 - flag additions and removals on either side; a conflict (union);
 - deletions on either side; new messages on both sides at once;
 - new nested mailboxes on either side after the first run;
 - subscriptions (subscribe, unsubscribe) on either side;
 - different delimiters ('/' locally, '.' remotely);
 - 8-bit and binary-ish bodies; non-ASCII (modified UTF-7) names.
"""

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
    T = h.TestDir("iit-sync-basic-")


def by_sha(snap):
    """{sha: flags} of a mailbox snapshot whose bodies are all distinct."""
    out = {sha: fl for fl, sha in snap.values()}
    assert len(out) == len(snap), "duplicate bodies"
    return out


class Basic(unittest.TestCase):
    def pair(self, **kw):
        return s.Pair(T, self._testMethodName.replace("test_", ""), **kw)

    def synced_pair(self, **kw):
        """A pair after a first copy of a few messages each way."""
        p = self.pair(**kw)
        e = s.merge(p.seed("local", {"INBOX": s.msgs("li", 5, lambda i: ["\\Seen"] if i % 2 else [])}),
                    p.seed("remote", {"INBOX": s.msgs("ri", 5)}, create=False))
        p.sync()
        p.check(expect=e)
        return p, e

    def test_first_copy_local_to_remote(self):
        p = self.pair()
        e = p.seed("local", {"INBOX": s.msgs("a", 20, lambda i: ["\\Seen", "\\Flagged"][: i % 3]),
                             "Sent": s.msgs("b", 5, lambda i: ["\\Answered", "$Label1"]),
                             "lists\0dev\0002024": s.msgs("c", 3)})
        p.sync()
        _, r, db = p.check(expect=e)
        self.assertTrue({"INBOX", "Sent", "lists\0dev\0002024"} <= set(r), sorted(r))
        self.assertEqual(db["user_version"], 1)
        # a second run is a no-op: nothing changes on either side
        before = (s.snapshot(p.local), s.snapshot(p.remote))
        p.sync()
        self.assertEqual(before, (s.snapshot(p.local), s.snapshot(p.remote)))
        p.check(expect=e)

    def test_first_copy_remote_to_local(self):
        p = self.pair()
        e = p.seed("remote", {"INBOX": s.msgs("a", 20, lambda i: ["\\Deleted"] if i == 3 else ["\\Draft"]),
                              "Archive\0002023": s.msgs("b", 7, lambda i: ["\\Seen"])})
        p.sync()
        p.check(expect=e)

    def test_first_copy_both(self):
        p = self.pair()
        e = s.merge(p.seed("local", {"INBOX": s.msgs("l", 10), "Common": s.msgs("lc", 3), "L\0nested": s.msgs("ln", 2)}),
                    p.seed("remote", {"INBOX": s.msgs("r", 10), "Common": s.msgs("rc", 4), "R\0nested": s.msgs("rn", 2)},
                           create=True))
        p.sync()
        p.check(expect=e)
        self.assertEqual(len(p.check()[0]["Common"]), 7)

    def test_flags_either_side(self):
        p, e = self.synced_pair()
        old = by_sha(s.snapshot(p.local)["INBOX"])
        with h.Imap(p.local) as sd:
            lu = sd.uids("INBOX")
            sd.flag("INBOX", lu[:3], "+FLAGS", ["\\Flagged", "$Work"])
            sd.flag("INBOX", lu[1:2], "-FLAGS", ["\\Seen"])
        with h.Imap(p.remote) as sd:
            ru = sd.uids("INBOX")
            sd.flag("INBOX", ru[0:3], "+FLAGS", ["\\Answered"])
            sd.flag("INBOX", ru[3:5], "-FLAGS", ["\\Seen"])
            sd.flag("INBOX", ru[3:5], "+FLAGS", ["$Done"])
        # each message was changed on one side at most: that side wins
        new_l = by_sha(s.snapshot(p.local)["INBOX"])
        new_r = by_sha(s.snapshot(p.remote)["INBOX"])
        want = {sha: (new_l[sha] if new_l[sha] != old[sha] else new_r[sha]) for sha in old}
        self.assertGreaterEqual(sum(new_l[x] != old[x] for x in old), 3)
        self.assertGreaterEqual(sum(new_r[x] != old[x] for x in old), 3)
        p.sync()
        l, r, _ = p.check()
        self.assertEqual(by_sha(l["INBOX"]), want)
        self.assertEqual(by_sha(r["INBOX"]), want)

    def test_conflict_union(self):
        p, e = self.synced_pair()
        _, _, db = p.check()
        idx = {n: i for i, (n, _) in db["mailboxes"].items()}["INBOX"]
        lu, ru = sorted(db["mapping"][idx])[0]
        with h.Imap(p.local) as sd:
            sd.flag("INBOX", [lu], "FLAGS", ["\\Seen", "\\Flagged", "$Local"])
        with h.Imap(p.remote) as sd:
            sd.flag("INBOX", [ru], "FLAGS", ["\\Answered", "$Remote"])
        p.sync()
        l, r, _ = p.check()
        union = ("$Local", "$Remote", "\\Answered", "\\Flagged", "\\Seen")
        self.assertEqual(tuple(sorted(l["INBOX"][lu][0])), union)
        self.assertEqual(tuple(sorted(r["INBOX"][ru][0])), union)

    def test_deletions_either_side(self):
        p, e = self.synced_pair()
        p.seed("local", {"Box": s.msgs("box", 6)})
        p.sync()
        p.check()
        with h.Imap(p.local) as sd:
            lu = sd.uids("INBOX")
            sd.expunge("INBOX", lu[:2])
            bu = sd.uids("Box")
            sd.expunge("Box", bu[-1:])
        with h.Imap(p.remote) as sd:
            ru = sd.uids("INBOX")
            sd.expunge("INBOX", ru[-3:])
            bu = sd.uids("Box")
            sd.expunge("Box", bu[:1])
        p.sync()
        l, r, db = p.check()
        self.assertEqual(len(l["INBOX"]), 10 - 2 - 3)
        self.assertEqual(len(r["Box"]), 4)
        p.sync()
        p.check()

    def test_new_messages_both_sides(self):
        p, e = self.synced_pair()
        e2 = s.merge(e, p.seed("local", {"INBOX": s.msgs("newl", 15, lambda i: ["\\Seen"])}, create=False),
                     p.seed("remote", {"INBOX": s.msgs("newr", 12, lambda i: ["$X"])}, create=False))
        p.sync()
        p.check(expect=e2)

    def test_new_messages_both_sides_crossed(self):
        """New messages on both sides of one mailbox: both FETCHes go out
        before either APPEND (one round trip each way instead of two).
        What does not fit in 128 messages / 1 MiB per side (here: 140
        messages, one of 1.5 MiB) still arrives, by the streaming path."""
        p, e = self.synced_pair()
        big = s.message("big", 0, size=1536 * 1024)
        e2 = s.merge(e, p.seed("local", {"INBOX": s.msgs("crossl", 5, lambda i: ["\\Flagged"])}, create=False),
                     p.seed("remote", {"INBOX": s.msgs("crossr", 140) + [(big, ["\\Seen"])]}, create=False))
        r = p.sync("--debug")
        p.check(expect=e2)
        err = r.err
        lines = err.splitlines()
        body_fetches = [i for i, line in enumerate(lines) if re.search(r": C: \d+ UID FETCH .*BODY\.PEEK", line)]
        appends = [i for i, line in enumerate(lines) if re.search(r": C: \d+ APPEND ", line)]
        sides = {re.match(r"(\w+)", lines[i]).group(1) for i in body_fetches[:2]}
        self.assertEqual(sides, {"local", "remote"}, "\n".join(lines[i] for i in body_fetches))
        self.assertLess(max(body_fetches[:2]), min(appends), "both FETCHes before the first APPEND")
        self.assertGreater(len(body_fetches), 2, "the rest (beyond 128 messages / 1 MiB) streamed afterwards")

    def test_new_nested_mailboxes(self):
        p, e = self.synced_pair()
        e2 = s.merge(e, p.seed("local", {"a\0b\0c": s.msgs("abc", 2), "a\0d": s.msgs("ad", 1)}),
                     p.seed("remote", {"x\0y": s.msgs("xy", 3), "x\0y\0z": s.msgs("xyz", 1)}))
        p.sync()
        l, r, db = p.check(expect=e2)
        names = {n for n, _ in db["mailboxes"].values()}
        for n in ("a\0b\0c", "a\0d", "x\0y", "x\0y\0z"):
            self.assertIn(n, names)

    def test_subscriptions(self):
        p = self.pair()
        p.seed("local", {"L1": s.msgs("l1", 1), "L2": s.msgs("l2", 1), "Shared": s.msgs("sh", 1)})
        with h.Imap(p.local) as sd:
            sd.subscribe("L1")
            sd.subscribe("Shared")
        p.seed("remote", {"R1": s.msgs("r1", 1)})
        with h.Imap(p.remote) as sd:
            sd.subscribe("R1")
        p.sync()
        p.check()
        self.assertEqual(s.subscribed(p.remote), {"L1", "Shared", "R1"})
        # subscribe on one side, unsubscribe on the other
        with h.Imap(p.remote) as sd:
            sd.subscribe("L2")
            sd.subscribe("Shared", on=False)
        with h.Imap(p.local) as sd:
            sd.subscribe("R1", on=False)
        p.sync()
        p.check()
        self.assertEqual(s.subscribed(p.local), {"L1", "L2"})
        self.assertEqual(s.subscribed(p.remote), {"L1", "L2"})
        db = s.read_db(p.db)
        self.assertEqual({n for n, sub in db["mailboxes"].values() if sub}, {"L1", "L2"})

    def test_different_delimiters(self):
        p = self.pair(local_sep="/", remote_sep=".")
        e = s.merge(p.seed("local", {"INBOX": s.msgs("i", 3), "a\0b": s.msgs("ab", 2), "a\0b\0c": s.msgs("abc", 1)}),
                    p.seed("remote", {"x\0y": s.msgs("xy", 2)}))
        p.sync()
        p.check(expect=e)
        lnames = {n for n, _, _ in p.local.mailboxes()}
        rnames = {n for n, _, _ in p.remote.mailboxes()}
        self.assertTrue({"a/b", "a/b/c", "x/y"} <= lnames, lnames)
        self.assertTrue({"a.b", "a.b.c", "x.y"} <= rnames, rnames)
        # changes flow both ways through the translation
        with h.Imap(p.remote) as sd:
            sd.flag("a.b.c", sd.uids("a.b.c"), "+FLAGS", ["\\Flagged"])
            sd.create("x.y.new")
            sd.append("x.y.new", s.message("new"))
        p.sync()
        l, _, _ = p.check()
        self.assertEqual([v[0] for v in l["a\0b\0c"].values()], [("\\Flagged",)])
        self.assertIn("x/y/new", {n for n, _, _ in p.local.mailboxes()})

    def test_8bit_and_binary_bodies(self):
        p = self.pair()
        eight = (b"From: a@example.org\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nMIME-Version: 1.0\r\n"
                 b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                 + "Ça va très bien, naïve façade — 日本語 ✓\r\n".encode() * 20)
        binary = (b"From: b@example.org\r\nSubject: binary\r\nMIME-Version: 1.0\r\n"
                  b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
                  + bytes(b for b in range(1, 256) if b not in (10, 13)) * 8 + b"\r\nend\r\n")
        latin1 = b"Subject: latin1 \xe9\xe8\r\nFrom: c@example.org\r\n\r\n\xe0\xe7\xf1\xff\x80\x81\r\n"
        e = s.merge(p.seed("local", {"INBOX": [(eight, ["\\Seen"]), (binary, [])]}),
                    p.seed("remote", {"Bin": [(binary, ["\\Flagged"]), (latin1, [])]}))
        p.sync()
        p.check(expect=e)

    def test_non_ascii_names(self):
        p = self.pair(local_sep="/", remote_sep=".")
        # modified UTF-7 (RFC 3501 5.1.3): "Été/Données", "日本", "a&b"
        names = {"&AMk-t&AOk-\0Donn&AOk-es": s.msgs("fr", 2), "&ZeVnLA-": s.msgs("jp", 1), "a&-b": s.msgs("amp", 1)}
        e = p.seed("remote", names)
        e2 = p.seed("local", {"&AMk-t&AOk-\0Local": s.msgs("frl", 1)})
        p.sync()
        l, r, db = p.check(expect=s.merge(e, e2))
        lnames = {n for n, _, _ in p.local.mailboxes()}
        self.assertTrue({"&AMk-t&AOk-/Donn&AOk-es", "&ZeVnLA-", "a&-b"} <= lnames, lnames)
        self.assertIn("&AMk-t&AOk-.Local", {n for n, _, _ in p.remote.mailboxes()})
        self.assertIn("&AMk-t&AOk-\0Donn&AOk-es", {n for n, _ in db["mailboxes"].values()})


if __name__ == "__main__":
    s.main(globals())
