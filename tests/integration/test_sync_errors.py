#!/usr/bin/env python3
"""interimap ($INTERIMAP): refusals, commands and repairs.

 - UIDVALIDITY change, and a known mailbox gone from one side only: a
   non-zero exit, a message naming the mailbox, stores and database as
   they were;
 - a concurrent run on the same database is refused at once;
 - --delete and --rename with each --target (and the default: all),
   --rename refused when the destination exists;
 - --repair after the database was tampered with (sqlite edits).
Stores are read through imaplib and the database through sqlite3.
"""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import synclib as s  # noqa: E402

T = None


def setUpModule():
    global T
    T = h.TestDir("iit-sync-errors-")


def msgs(tag, n, flags=()):
    return [(s.message(tag, i), list(flags)) for i in range(n)]


def names(store):
    return {n for n, _, fl in store.mailboxes() if "\\noselect" not in {f.lower() for f in fl}}


def db_names(p):
    return {n for n, _ in s.read_db(p.db)["mailboxes"].values()}


class Errors(unittest.TestCase):
    def synced(self, **kw):
        p = s.Pair(T, self._testMethodName.replace("test_", ""), **kw)
        e = s.merge(p.seed("local", {"INBOX": msgs("in", 3), "Box": msgs("box", 3, ["\\Seen"]),
                                     "Par": msgs("par", 1), "Par\0kid": msgs("kid", 2)}),
                    p.seed("remote", {"Other": msgs("other", 2)}))
        p.sync()
        p.check(expect=e)
        return p, e

    def state(self, p):
        return s.snapshot(p.local), s.snapshot(p.remote), s.read_db(p.db)

    def assert_unchanged(self, p, before):
        after = self.state(p)
        self.assertEqual(before[0], after[0], "local store changed")
        self.assertEqual(before[1], after[1], "remote store changed")
        self.assertEqual(before[2], after[2], "database changed")

    def test_uidvalidity_change(self):
        for side in ("local", "remote"):
            with self.subTest(side=side):
                p, e = self.synced()
                store = p.local if side == "local" else p.remote
                with s.Seeder(store) as sd:  # same name, new UIDVALIDITY
                    sd.delete("Box")
                    sd.create("Box")
                    sd.append("Box", s.message("new box"))
                before = self.state(p)
                r = p.run()
                s.assert_fails(r, "Box", "UIDVALIDITY")
                self.assert_unchanged(p, before)

    def test_mailbox_gone_from_one_side(self):
        for side in ("local", "remote"):
            with self.subTest(side=side):
                p, e = self.synced()
                store = p.local if side == "local" else p.remote
                with s.Seeder(store) as sd:
                    sd.delete("Box")
                before = self.state(p)
                r = p.run()
                s.assert_fails(r, "Box")
                self.assert_unchanged(p, before)

    def test_concurrent_run_refused(self):
        p, e = self.synced()
        e2 = s.merge(e, p.seed("remote", {"INBOX": msgs("more", 5)}, create=False))
        # the first run's remote tunnel starts slowly: it holds the database meanwhile
        p.write_config(remote_command=f"sleep 5; exec {p.remote.command} 2>>{p.remote.log_path}")
        first = p.spawn()
        time.sleep(1.0)
        p.write_config(remote_command=None)
        r = p.run(timeout=20)
        self.assertIsNone(first.poll(), "the first run ended too early for this test")
        s.assert_fails(r, "lock|in use|busy|already")
        self.assertLess(r.elapsed, 3.5, "the second run should fail at once, not wait")
        err = first.communicate(timeout=60)[1].decode("utf-8", "replace")
        self.assertEqual(first.returncode, 0, err)
        p.check(expect=e2)

    def test_delete_targets(self):
        cases = {None: (False, False, False), ("local",): (False, True, True),
                 ("remote",): (True, False, True), ("database",): (True, True, False),
                 ("local", "database"): (False, True, False)}
        for targets, (in_local, in_remote, in_db) in cases.items():
            with self.subTest(targets=targets):
                p, e = self.synced()
                args = [f"--target={t}" for t in targets or ()]
                p.sync(*args, "--delete", "Box")
                self.assertEqual("Box" in names(p.local), in_local)
                self.assertEqual("Box" in names(p.remote), in_remote)
                self.assertEqual("Box" in db_names(p), in_db)
                # the rest is untouched
                others = ["INBOX", "Par", "Par\0kid", "Other"]
                p.check(mailboxes=others, expect={k: e[k] for k in others})
                if targets is None:
                    p.sync()  # and the next run agrees
                    p.check(expect={k: e[k] for k in others})
        p, e = self.synced()
        s.assert_fails(p.run("--delete", "INBOX"), "INBOX")

    def test_rename_targets(self):
        cases = {None: ("local", "remote", "database"), ("local",): ("local",), ("remote",): ("remote",),
                 ("database",): ("database",), ("remote", "database"): ("remote", "database")}
        for targets, renamed in cases.items():
            with self.subTest(targets=targets):
                p, e = self.synced()
                args = [f"--target={t}" for t in targets or ()]
                p.sync(*args, "--rename", "Par", "New/Name")
                for where, present in (("local", names(p.local)), ("remote", names(p.remote)),
                                       ("database", {n.replace("\0", "/") for n in db_names(p)})):
                    want = {"New/Name", "New/Name/kid"} if where in renamed else {"Par", "Par/kid"}
                    gone = {"Par", "Par/kid"} if where in renamed else {"New/Name", "New/Name/kid"}
                    self.assertTrue(want <= present, f"{where}: {sorted(present)}")
                    self.assertFalse(gone & present, f"{where}: {sorted(present)}")
                if targets is None:
                    e2 = {("New\0Name" + k[3:] if k.startswith("Par") else k): v for k, v in e.items()}
                    p.check(expect=e2)
                    p.sync()
                    p.check(expect=e2)
        # refused when the destination exists on either side
        for side in ("local", "remote"):
            with self.subTest(dest_exists_on=side):
                p, e = self.synced()
                with s.Seeder(p.local if side == "local" else p.remote) as sd:
                    sd.create("Taken")
                before = self.state(p)
                s.assert_fails(p.run("--rename", "Box", "Taken"), "Taken")
                self.assert_unchanged(p, before)

    def test_repair_after_tampering(self):
        p, e = self.synced()
        db = s.read_db(p.db)
        idx = {n: i for i, (n, _) in db["mailboxes"].items()}
        inbox, box = idx["INBOX"], idx["Box"]
        # 1. a local message the database believes was already seen (UIDNEXT moved past it)
        e2 = s.merge(e, p.seed("local", {"INBOX": msgs("hidden", 1)}, create=False))
        st = p.local.status("INBOX")
        # 2. a remote flag change the database believes was already synchronized
        lu, ru = sorted(db["mapping"][box])[0]
        with s.Seeder(p.remote) as sd:
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
