#!/usr/bin/env python3
"""Database compatibility between $INTERIMAP and the reference
(/usr/bin/interimap 0.5.7): a database written by one is continued by
the other with no duplicate and no loss, both ways: first copy by A,
then changes on both sides (new messages, flags, expunges, a new nested
mailbox, a subscription) synchronized by B, then a no-op run by A.
Skipped when $INTERIMAP is the reference itself or it is not installed."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import synclib as s  # noqa: E402

T = None


def setUpModule():
    global T
    T = h.TestDir("iit-sync-compat-")


class Compat(unittest.TestCase):
    def handover(self, first, second, label):
        p = s.Pair(T, label, local_sep="/", remote_sep=".")
        e = s.merge(p.seed("local", {"INBOX": s.msgs("li", 30, ["\\Seen"]), "Box\0kid": s.msgs("lk", 5)}),
                    p.seed("remote", {"R": s.msgs("rr", 20, ["$Label"])}))
        with h.Imap(p.local) as sd:
            sd.subscribe("Box/kid")
        p.sync(binary=first)
        p.check(expect=e)
        # changes on both sides
        with h.Imap(p.local) as sd:
            u = sd.uids("INBOX")
            sd.flag("INBOX", u[:5], "+FLAGS", ["\\Flagged"])
            sd.expunge("INBOX", u[5:8])
            sd.create("New/deep")
            sd.append("New/deep", s.message("nd"))
        with h.Imap(p.remote) as sd:
            u = sd.uids("R")
            sd.flag("R", u[:4], "-FLAGS", ["$Label"])
            sd.expunge("R", u[-2:])
            sd.append("INBOX", s.message("ri-new"))
            sd.subscribe("R")
        want = {"INBOX": s.multiset(s.snapshot(p.local, ["INBOX"])["INBOX"]) + s.counter((s.message("ri-new"), [])),
                "R": s.multiset(s.snapshot(p.remote, ["R"])["R"]),
                "Box\0kid": e["Box\0kid"], "New\0deep": s.counter((s.message("nd"), []))}
        p.sync(binary=second)
        p.check(expect=want)
        self.assertEqual(s.subscribed(p.local), {"Box/kid", "R"})
        p.sync(binary=first)
        p.check(expect=want)
        p.sync(binary=second)
        p.check(expect=want)

    def test_reference_then_ours(self):
        self.handover(s.REFERENCE, s.INTERIMAP, "ref-then-ours")

    def test_ours_then_reference(self):
        self.handover(s.INTERIMAP, s.REFERENCE, "ours-then-ref")


if __name__ == "__main__":
    s.require()
    if not os.access(s.REFERENCE, os.X_OK):
        h.skip(f"{s.REFERENCE} not installed (apt-get install interimap)")
    if s.is_reference():
        h.skip("INTERIMAP is the reference itself: nothing to compare")
    s.main(globals())
