#!/usr/bin/env python3
"""interimap ($INTERIMAP): the --delete and --rename commands.

 - --delete and --rename with each --target (and the default: all);
 - --delete INBOX refused; --rename refused when the destination exists
   (stores and database as they were).
Stores are read through imaplib and the database through sqlite3.
Refusals and repairs: test_sync_errors.py.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import synclib as s  # noqa: E402


def setUpModule():
    s.SeededCase.tdir = h.TestDir("iit-sync-commands-")


class Commands(s.SeededCase):
    def test_delete_targets(self):
        cases = {None: (False, False, False), ("local",): (False, True, True),
                 ("remote",): (True, False, True), ("database",): (True, True, False),
                 ("local", "database"): (False, True, False)}
        for targets, (in_local, in_remote, in_db) in cases.items():
            with self.subTest(targets=targets):
                p, e = self.synced()
                args = [f"--target={t}" for t in targets or ()]
                p.sync(*args, "--delete", "Box")
                self.assertEqual("Box" in s.selectable(p.local), in_local)
                self.assertEqual("Box" in s.selectable(p.remote), in_remote)
                self.assertEqual("Box" in s.db_names(p), in_db)
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
                for where, present in (("local", s.selectable(p.local)), ("remote", s.selectable(p.remote)),
                                       ("database", {n.replace("\0", "/") for n in s.db_names(p)})):
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
                with h.Imap(p.local if side == "local" else p.remote) as sd:
                    sd.create("Taken")
                before = self.state(p)
                s.assert_fails(p.run("--rename", "Box", "Taken"), "Taken")
                self.assert_unchanged(p, before)


if __name__ == "__main__":
    s.main(globals())
