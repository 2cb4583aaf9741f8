#!/usr/bin/env python3
"""interimap ($INTERIMAP): large messages and long UID sets.

 - a 20 MiB message each way (one with long text lines, one base64
   attachment) next to small ones, then a no-op run; the bodies arrive
   byte for byte (SHA-256 through imaplib) and the database maps them;
 - 2000 messages, then flags changed on every even one on one side and
   every odd one expunged on the other: UID sets of 1000 scattered UIDs
   (> 4 KiB written out) must be split into acceptable commands;
 - a store with LITERAL- (imap_literal_minus) and mdbox on one side."""

import base64
import os
import random
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import synclib as s  # noqa: E402

MiB = 1 << 20
T = None


def setUpModule():
    global T
    T = h.TestDir("iit-sync-big-")


def attachment_message(size):
    """A multipart message of about size bytes with a base64 attachment."""
    rng = random.Random(20)
    raw = rng.randbytes(size * 3 // 4)
    b64 = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    head = (b"From: big@example.org\r\nTo: b@example.org\r\nSubject: attachment\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"XyZ\"\r\n\r\n--XyZ\r\nContent-Type: text/plain\r\n\r\n"
            b"See attached.\r\n--XyZ\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n")
    return head + b64 + b"--XyZ--\r\n"


class Big(unittest.TestCase):
    def test_20_mib_each_way(self):
        p = s.Pair(T, "big")
        text = s.message("big text", size=20 * MiB)
        att = attachment_message(20 * MiB)
        self.assertGreaterEqual(len(text), 20 * MiB)
        self.assertGreaterEqual(len(att), 20 * MiB)
        e = s.merge(p.seed("local", {"INBOX": [(s.message("small", 1), []), (text, ["\\Seen"]),
                                               (s.message("small", 2), [])]}),
                    p.seed("remote", {"Att": [(att, ["\\Flagged"]), (s.message("small", 3), [])]}))
        r = p.sync(timeout=120)
        s.log(f"first copy of 2 x 20 MiB: {r.seconds:.2f}s")
        p.check(expect=e)
        r = p.sync(timeout=120)
        s.log(f"no-op run: {r.seconds:.2f}s")
        p.check(expect=e)

    def test_scattered_uid_sets(self):
        p = s.Pair(T, "scattered")
        with h.Imap(p.local) as sd:
            for i in range(2000):
                sd.append("INBOX", s.message("scat", i, body=f"n{i}\r\n"))
        r = p.sync(timeout=120)
        s.log(f"first copy of 2000 messages: {r.seconds:.2f}s")
        with h.Imap(p.local) as sd:
            u = sd.uids("INBOX")
            sd.flag("INBOX", u[::2], "+FLAGS", ["\\Seen", "$Odd"])
        with h.Imap(p.remote) as sd:
            u = sd.uids("INBOX")
            sd.expunge("INBOX", u[1::2])
        want_l = s.snapshot(p.local, ["INBOX"])["INBOX"]
        want_r = s.snapshot(p.remote, ["INBOX"])["INBOX"]
        # expected: local flags, remote deletions
        kept = {sha for _, sha in want_r.values()}
        want = s.multiset({u: v for u, v in want_l.items() if v[1] in kept})
        self.assertGreater(len(",".join(str(x) for x in u[1::2])), 4096)
        r = p.sync(timeout=120)
        s.log(f"propagating 1000 flag changes and 1000 expunges: {r.seconds:.2f}s")
        p.check(expect={"INBOX": want})

    def test_literal_minus_and_mdbox(self):
        local = h.TunnelStore(T, "litminus-local", fmt="mdbox", literal_minus=True, extra_conf=s.FAST)
        p = s.Pair(T, "litminus", local=local)
        e = s.merge(p.seed("remote", {"INBOX": [(s.message("lm", i, size=100 + 9000 * (i % 3)), ["\\Seen"])
                                                for i in range(40)]}, create=False),
                    p.seed("local", {"Box": [(s.message("lb", i), []) for i in range(10)]}))
        p.sync()
        p.check(expect=e)


if __name__ == "__main__":
    s.main(globals())
