#!/usr/bin/env python3
"""interimap ($INTERIMAP): refusals and repairs.

 - a known mailbox gone from one side only: a non-zero exit, a message
   naming the mailbox, stores and database as they were; a UIDVALIDITY
   change is no longer refused: the mailbox is paired again (issue 15);
 - a concurrent run on the same database is refused at once;
 - --repair after the database was tampered with (sqlite edits).
Stores are read through imaplib and the database through sqlite3.
--delete and --rename: test_sync_commands.py.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import synclib as s  # noqa: E402


def setUpModule():
    s.SeededCase.tdir = h.TestDir("iit-sync-errors-")


class Errors(s.SeededCase):
    def test_uidvalidity_change(self):
        # No longer a refusal (issue 15, test_sync_adopt.py for the details):
        # the mailbox is paired again, what the recreated side lost comes
        # back from the other one, its new message goes over, with a warning.
        for side in ("local", "remote"):
            with self.subTest(side=side):
                p, e = self.synced()
                store = p.local if side == "local" else p.remote
                with h.Imap(store) as sd:  # same name, new UIDVALIDITY
                    sd.delete("Box")
                    sd.create("Box")
                    sd.append("Box", s.message("new box"))
                r = p.sync()
                self.assertRegex(r.err, rf"{side}\(Box\): WARNING: UIDVALIDITY changed \(\d+ -> \d+\): re-paired 0 "
                                        rf"message\(s\) by content; copying 3 message\(s\) to {side} \(3 of them "
                                        rf"lost with the change\) and 1 to ")
                e["Box"] = e["Box"] + s.counter((s.message("new box"), []))
                p.check(expect=e)

    def test_mailbox_gone_from_one_side(self):
        for side in ("local", "remote"):
            with self.subTest(side=side):
                p, e = self.synced()
                store = p.local if side == "local" else p.remote
                with h.Imap(store) as sd:
                    sd.delete("Box")
                before = self.state(p)
                r = p.run()
                s.assert_fails(r, "Box")
                self.assert_unchanged(p, before)

    def test_concurrent_run_refused(self):
        p, e = self.synced()
        e2 = s.merge(e, p.seed("remote", {"INBOX": s.msgs("more", 5)}, create=False))
        # the first run's remote tunnel starts slowly: it holds the database meanwhile
        p.write_config(remote_command=f"sleep 5; exec {p.remote.command} 2>>{p.remote.log_path}")
        first = p.spawn()
        time.sleep(1.0)
        p.write_config(remote_command=None)
        r = p.run(timeout=20)
        self.assertIsNone(first.poll(), "the first run ended too early for this test")
        s.assert_fails(r, "lock|in use|busy|already")
        self.assertLess(r.seconds, 3.5, "the second run should fail at once, not wait")
        err = first.communicate(timeout=60)[1].decode("utf-8", "replace")
        self.assertEqual(first.returncode, 0, err)
        p.check(expect=e2)

    def test_repair_after_tampering(self):
        p, e = self.synced()
        db = s.read_db(p.db)
        idx = {n: i for i, (n, _) in db["mailboxes"].items()}
        inbox, box = idx["INBOX"], idx["Box"]
        # 1. a local message the database believes was already seen (UIDNEXT moved past it)
        e2 = s.merge(e, p.seed("local", {"INBOX": s.msgs("hidden", 1)}, create=False))
        st = p.local.status("INBOX")
        # 2. a remote flag change the database believes was already synchronized
        lu, ru = sorted(db["mapping"][box])[0]
        with h.Imap(p.remote) as sd:
            sd.flag("Box", [ru], "+FLAGS", ["\\Flagged"])
        rst = p.remote.status("Box")
        s.db_execute(p.db,
                     ("UPDATE local SET UIDNEXT = ?, HIGHESTMODSEQ = ? WHERE idx = ?",
                      (st["UIDNEXT"], st["HIGHESTMODSEQ"], inbox)),
                     ("UPDATE remote SET HIGHESTMODSEQ = ? WHERE idx = ?", (rst["HIGHESTMODSEQ"], box)),
                     # 3. a mapping to messages that do not exist
                     ("INSERT INTO mapping (idx, lUID, rUID) VALUES (?, 9999, 9999)", (inbox,)))
        with self.assertRaises(AssertionError):
            p.check()  # the tampering is visible
        p.sync("--repair")
        l, r, _ = p.check(expect={k: v for k, v in e2.items() if k != "Box"})
        self.assertEqual(r["Box"][ru][0], ("\\Flagged", "\\Seen"))
        self.assertEqual(l["Box"][lu][0], ("\\Flagged", "\\Seen"))
        p.sync()
        p.check()


if __name__ == "__main__":
    s.main(globals())
