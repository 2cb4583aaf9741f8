#!/usr/bin/env python3
"""interimap ($INTERIMAP): every interrupted run and every --repair ends
where an uninterrupted run would (issue 18), four scenarios, each
deterministic:

 - Repair.test_repair_propagates_expunge: INBOX of 3 messages,
   synchronized; the second expunged on one side (each side in turn);
   --repair expunges the other copy ("Removed 1 UID(s) ..."), it does
   not copy it back ("disappeared. Redownloading");
 - Repair.test_repair_resolves_conflict: a message with \\Seen gets
   +\\Flagged locally and +\\Answered remotely; --repair sets both to
   the union (\\Answered \\Flagged \\Seen);
 - Resume.test_crash_during_copy_then_changes: a mailbox synchronized,
   then 300 new messages on one side; the copy is killed after the
   target stored the first MULTIAPPEND (128 messages) and before the
   mappings were committed; then old messages change on both sides
   (flag 1 and expunge 4 remotely, flag 3 and expunge 2 locally): the
   next run propagates all four, the run after it is a no-op;
 - Resume.test_crash_then_source_expunged: a run killed between an
   APPEND (3 messages) and the commit of its mappings; the source's
   second new message expunged before the next run: its unrecorded copy
   on the target is expunged, not copied back.

The crash points are in the target's answers, through lib/cutrelay.py
(--down --freeze --line): the target's tunnel freezes at the first tagged
"OK [APPENDUID" line and interimap is SIGKILLed: "before" = the target
stored the messages but its answer never reached interimap, "after" =
interimap got the APPENDUIDs (and was killed 0.3 s later, waiting for the
next answer).  The point is a line, not a byte count measured on another
run: Dovecot's untagged "* N EXISTS" comes before or after the tagged OK
depending on timing (interimap pipelines its next APPEND), which moves
the bytes; the byte where each run froze is logged.  The remote side
runs without COMPRESS (the relay reads the answers).
Each scenario first asserts its
precondition (the target holds more messages than the database maps),
so that it cannot pass vacuously.  After each scenario's runs: the
convergence check with the exact expected contents (synclib), a no-op
run (crashlib.no_op) and PRAGMA integrity_check.
"""

import hashlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import crashlib as c  # noqa: E402
import harness as h  # noqa: E402
import synclib as s  # noqa: E402

APPENDUID = rb" OK \[APPENDUID "
# The relay reads the answers in clear: no COMPRESS (the remote side's default)
PLAIN = {"remote_opts": {"compress": "no"}}


def setUpModule():
    c.CrashCase.setup("iit-sync-recover-")


def other(side):
    return "remote" if side == "local" else "local"


def store(p, side):
    return p.local if side == "local" else p.remote


def uid_of(p, side, mailbox, sha):
    """The UID of the message whose body has this digest (one)."""
    uids = [u for u, (_, d) in s.snapshot(store(p, side), [mailbox])[mailbox].items() if d == sha]
    assert len(uids) == 1, f"{side}: {len(uids)} messages with digest {sha[:8]}"
    return uids[0]


def sha(msg):
    return hashlib.sha256(msg).hexdigest()


def mapped(p, mailbox="INBOX"):
    db = s.read_db(p.db)
    idx = {n: i for i, (n, _) in db["mailboxes"].items()}[mailbox]
    return db["mapping"].get(idx, [])


class Settled(c.CrashCase):
    def name(self, label, msgs):
        """Names digests in the failure messages."""
        if not hasattr(self, "names"):
            self.names = {}
        for i, (msg, _) in enumerate(msgs):
            self.names[f"{label} {i + 1}"] = sha(msg)

    def settled(self, p, expect):
        """The exact expected contents, then a no-op run, then the
        database's integrity."""
        diff = []
        for side in ("local", "remote"):
            got = s.multiset(s.snapshot(store(p, side), ["INBOX"])["INBOX"])
            for what, items in (("missing", expect["INBOX"] - got), ("extra", got - expect["INBOX"])):
                diff += [f"{side}: {what} {d[:8]} {list(fl)}" + (f" x{n}" if n > 1 else "")
                         for (fl, d), n in sorted(items.items())]
        if diff:
            self.fail("INBOX is not as expected:\n  " + "\n  ".join(diff) + "\n(digests: "
                      + ", ".join(f"{k} {v[:8]}" for k, v in self.names.items()) + ")")
        p.check(expect=expect)
        self.assertEqual(c.no_op(p), [], "the run after it is not a no-op")
        p.check(expect=expect)
        self.assertEqual(c.integrity(p), "ok")


class Repair(Settled):
    def test_repair_propagates_expunge(self):
        for side in ("local", "remote"):
            with self.subTest(expunged_on=side):
                p = self.pair()
                m = s.msgs("rx", 3, ["\\Seen"])
                self.name("message", m)
                p.seed("local", {"INBOX": m})
                p.sync()
                p.check()
                gone = uid_of(p, side, "INBOX", sha(m[1][0]))
                twin = uid_of(p, other(side), "INBOX", sha(m[1][0]))
                with h.Imap(store(p, side)) as sd:
                    sd.expunge("INBOX", [gone])
                r = p.sync("--repair")
                self.assertNotRegex(r.err, "disappeared|Redownloading", r.describe())
                self.assertRegex(r.err, rf"(?m)^{other(side)}\(INBOX\): Removed 1 UID\(s\) {twin}$",
                                 r.describe())
                self.settled(p, {"INBOX": s.counter(m[0], m[2])})

    def test_repair_resolves_conflict(self):
        p = self.pair()
        m = s.msgs("rc", 3, ["\\Seen"])
        self.name("message", m)
        p.seed("local", {"INBOX": m})
        p.sync()
        lu, ru = (uid_of(p, side, "INBOX", sha(m[0][0])) for side in ("local", "remote"))
        with h.Imap(p.local) as sd:
            sd.flag("INBOX", [lu], "+FLAGS", ["\\Flagged"])
        with h.Imap(p.remote) as sd:
            sd.flag("INBOX", [ru], "+FLAGS", ["\\Answered"])
        r = p.sync("--repair")
        self.assertNotIn("try again later", r.err, r.describe())
        union = ("\\Answered", "\\Flagged", "\\Seen")
        self.assertEqual(s.snapshot(p.local, ["INBOX"])["INBOX"][lu][0], union, r.describe())
        self.assertEqual(s.snapshot(p.remote, ["INBOX"])["INBOX"][ru][0], union, r.describe())
        self.settled(p, {"INBOX": s.counter((m[0][0], list(union)), m[1], m[2])})


class Resume(Settled):
    def crash(self, p, prepare, source, after):
        """prepare(p), then a run killed at the first APPEND's answer;
        asserts the precondition: the target holds messages the database
        does not map.  Returns how many."""
        target = other(source)
        prepare(p)
        got = c.run_frozen(p, target, f"frozen-{'after' if after else 'before'}", line=APPENDUID, past=after)
        last = got.rsplit(b"\r\n", 2)[-2] if got.endswith(b"\r\n") else b""
        (self.assertRegex if after else self.assertNotRegex)(last, APPENDUID, "not frozen at the APPENDUID")
        on_target = len(s.snapshot(store(p, target), ["INBOX"])["INBOX"])
        maps = len(mapped(p))
        s.log(f"killed {'after' if after else 'before'} the first APPEND was answered (at byte {len(got)} of "
              f"the {target} answers): the {target} INBOX holds {on_target} messages, the database maps {maps}")
        self.assertLess(maps, on_target, "precondition: the killed run left copies the database does not map")
        return on_target - maps

    def test_crash_during_copy_then_changes(self):
        old = s.msgs("old", 6, ["\\Seen"])
        self.name("old", old)
        for source, after in (("local", True), ("local", False), ("remote", True)):
            new = c.msgs(f"new-{source}", 300)

            def prepare(p):
                p.seed("local", {"INBOX": old})
                p.sync()
                p.seed(source, {"INBOX": new}, create=False)

            with self.subTest(source=source, killed="after APPENDUID" if after else "before APPENDUID"):
                p = self.pair(**PLAIN)
                unmapped = self.crash(p, prepare, source, after)
                self.assertGreaterEqual(unmapped, 128, "the first MULTIAPPEND was not 128 messages")
                digest = [sha(msg) for msg, _ in old]
                uid = {(side, k): uid_of(p, side, "INBOX", digest[k]) for side in ("local", "remote")
                       for k in range(4)}
                with h.Imap(p.remote) as sd:
                    sd.flag("INBOX", [uid["remote", 0]], "+FLAGS", ["\\Flagged"])
                    sd.expunge("INBOX", [uid["remote", 3]])
                with h.Imap(p.local) as sd:
                    sd.flag("INBOX", [uid["local", 2]], "+FLAGS", ["\\Flagged"])
                    sd.expunge("INBOX", [uid["local", 1]])
                p.sync()
                flagged = ["\\Flagged", "\\Seen"]
                self.settled(p, {"INBOX": s.counter((old[0][0], flagged), (old[2][0], flagged), *old[4:], *new)})

    def test_crash_then_source_expunged(self):
        old = s.msgs("old", 3, ["\\Seen"])
        self.name("old", old)
        # 3 new messages: one APPEND, the run killed before its answer;
        # 140: killed before or after the first answer (128 messages), the
        # second APPEND unanswered.  The source's second new message goes.
        for source in ("local", "remote"):
            for count, after in ((3, False), (140, False), (140, True)):
                new = c.msgs(f"new-{source}", count, lambda i: ["\\Flagged"] if i % 2 else [])
                self.name(f"new from {source}", new[:3])

                def prepare(p):
                    p.seed("local", {"INBOX": old})
                    p.sync()
                    p.seed(source, {"INBOX": new}, create=False)

                with self.subTest(source=source, new=count,
                                  killed="after APPENDUID" if after else "before APPENDUID"):
                    p = self.pair(**PLAIN)
                    unmapped = self.crash(p, prepare, source, after)
                    self.assertEqual(unmapped, min(count, 128))
                    with h.Imap(store(p, source)) as sd:
                        sd.expunge("INBOX", [uid_of(p, source, "INBOX", sha(new[1][0]))])
                    p.sync()
                    self.settled(p, {"INBOX": s.counter(*old, new[0], *new[2:])})

if __name__ == "__main__":
    s.main(globals())
