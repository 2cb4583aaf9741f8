#!/usr/bin/env python3
"""interimap ($INTERIMAP): the guard (issue 15), against real Dovecot stores.

Refused, with one ERROR line naming the numbers, the side and the option,
a non-zero exit, both stores (mailboxes, UIDs, flags, bodies,
subscriptions) and the database file (bytes) as they were:
 - Refused.test_remote_replaced_by_empty_store: the remote's store swapped
   for a new, empty one with the same mailbox names (new UIDVALIDITYs);
 - Refused.test_remote_expunged_then_allowed: every remote message
   expunged (same UIDVALIDITYs); then --allow-mass-deletion lets the wipe
   through, and the next run is a no-op;
 - Refused.test_database_of_another_account: account B run with a copy of
   account A's database (same mailbox names);
 - Refused.test_mailbox_limit: mailbox-deletion-share = 50 (off by
   default): emptying Trash stops before Trash changes; the option lets
   it through.
Let through (the defaults: 50% and 10 messages):
 - Allowed.test_legitimate_runs: a first sync; emptying Trash (12 of 54);
   deleting a big folder's content and two more (18 of 42); a 3-message
   account losing 2, then the last one.
Self-sync:
 - SelfSync.test_same_store_refused: [local] and [remote] tunnels to the
   same store (two different tunnel commands): refused, nothing written
   (no database file, the store as it was, no probe mailbox left), also
   with --repair; then with the database of a real pair whose [remote]
   was edited to reach [local]'s store, and with a database recording
   equal UIDVALIDITYs on both sides (what the reference's self-sync
   loop leaves): refused, the database kept byte for byte;
 - SelfSync.test_copied_store_is_not_refused: two stores, one a file copy
   of the other (identical listings): the probe tells them apart and the
   run goes on.
"""

import os
import shutil
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import synclib as s  # noqa: E402

# 54 messages; Trash is 22% of them, Lists 30%.
LAYOUT = {"INBOX": 12, "Archive": 14, "Lists": 16, "Trash": 12}
T = None


def setUpModule():
    global T
    T = h.TestDir("iit-sync-guard-")


def synced(name, layout=LAYOUT, **kw):
    p = s.Pair(T, name, **kw)
    e = p.seed("local", {box: s.msgs(f"{name}-{box}", n) for box, n in layout.items()})
    p.sync()
    p.check(expect=e)
    return p, e


def state(p):
    """Both stores (messages and subscriptions) and the database's bytes."""
    with open(p.db, "rb") as f:
        db = f.read()
    return (s.snapshot(p.local), s.subscribed(p.local), s.snapshot(p.remote), s.subscribed(p.remote), db)


def expunge_all(store, boxes):
    with h.Imap(store) as m:
        for box in boxes:
            uids = m.uids(box)
            if uids:
                m.expunge(box, uids)


class Case(unittest.TestCase):
    def refused(self, p, *patterns, args=()):
        before = state(p)
        r = p.run(*args)
        s.assert_fails(r, *patterns)
        self.assertEqual(len(r.error_lines()), 1, r.describe())
        after = state(p)
        for what, b, a in zip(("local store", "local subscriptions", "remote store", "remote subscriptions",
                               "database bytes"), before, after):
            self.assertEqual(b, a, f"{what} changed\n" + r.describe())
        return r


class Refused(Case):
    def test_remote_replaced_by_empty_store(self):
        p, _ = synced("replaced")
        new = h.TunnelStore(T, p.name + "-new", extra_conf=s.FAST)
        old_uv = {box: p.remote.status(box)["UIDVALIDITY"] for box in LAYOUT}
        # Dovecot's UIDVALIDITY is a creation time (then +1 per mailbox):
        # a new mailbox that happens to get its predecessor's is made again.
        with h.Imap(new) as m:
            for box in LAYOUT:
                if box != "INBOX":
                    m.create(box)
                    while m.status(box)["UIDVALIDITY"] == old_uv[box]:
                        m.delete(box)
                        m.create(box)
            self.assertNotEqual(m.status("INBOX")["UIDVALIDITY"], old_uv["INBOX"])
        p.remote = new
        p.write_config()
        self.refused(p, r"(?m)^remote: ERROR: Mass deletion: 54 of the 54 synchronized messages \(100%\) are gone from "
                        r"remote, 4 of 4 mailbox\(es\) wholly \(replaced \(new UIDVALIDITY\): Archive, INBOX, "
                        r"Lists, Trash\)", "mass-deletion-share = 50%", "--allow-mass-deletion")

    def test_remote_expunged_then_allowed(self):
        p, _ = synced("expunged")
        expunge_all(p.remote, LAYOUT)
        self.refused(p, r"(?m)^remote: ERROR: Mass deletion: 54 of the 54 .* \(emptied: Archive, INBOX, Lists, Trash\)",
                     "--allow-mass-deletion")
        # Also --repair, which compares everything.
        self.refused(p, r"(?m)^remote: ERROR: Mass deletion: 54 of the 54", args=("--repair",))
        # The option lets the deliberate wipe through.
        p.sync("--allow-mass-deletion")
        lsnap, _, db = p.check(expect={box: s.counter() for box in LAYOUT})
        self.assertEqual(sum(len(v) for v in lsnap.values()), 0)
        self.assertEqual(sum(len(v) for v in db["mapping"].values()), 0)
        before = state(p)
        p.sync()  # nothing left to guard: a plain run is a no-op
        self.assertEqual(before, state(p))

    def test_database_of_another_account(self):
        a, _ = synced("account-a")
        time.sleep(1.1)  # account B's mailboxes get other UIDVALIDITYs
        b, _ = synced("account-b")
        shutil.copyfile(a.db, b.db)
        self.refused(b, r"(?m)^local: ERROR: Mass deletion: 54 of the 54 .*replaced \(new UIDVALIDITY\): "
                        r"Archive, INBOX, Lists, Trash", "--allow-mass-deletion")

    def test_mailbox_limit(self):
        p, e = synced("mailbox-limit", default={"mailbox-deletion-share": "50%", "mailbox-deletion-minimum": "10"})
        trash_db = s.read_db(p.db)
        idx = {n: i for i, (n, _) in trash_db["mailboxes"].items()}["Trash"]
        local_trash = s.snapshot(p.local, ["Trash"])
        expunge_all(p.remote, ["Trash"])
        r = p.run()
        s.assert_fails(r, r"(?m)^local: ERROR: Mass deletion in Trash: 12 of its 12 synchronized messages \(100%\) are "
                          r"gone from remote and would be expunged from local", "mailbox-deletion-share = 50%",
                       "--allow-mass-deletion")
        self.assertEqual(local_trash, s.snapshot(p.local, ["Trash"]), "local Trash changed")
        self.assertEqual(sorted(trash_db["mapping"][idx]), sorted(s.read_db(p.db)["mapping"][idx]))
        # Below the per-mailbox minimum: 5 of INBOX's 12 go through.
        with h.Imap(p.remote) as m:
            m.expunge("INBOX", m.uids("INBOX")[:5])
        p.sync("--allow-mass-deletion")
        lsnap, _, _ = p.check()
        self.assertEqual(len(lsnap["Trash"]), 0)
        self.assertEqual(len(lsnap["INBOX"]), 7)


class Allowed(Case):
    def test_legitimate_runs(self):
        p, _ = synced("legit")  # a first sync: nothing mapped yet, 54 copies
        # Emptying Trash: 12 of 54 (22%), the whole mailbox.
        expunge_all(p.remote, ["Trash"])
        p.sync()
        lsnap, _, _ = p.check()
        self.assertEqual(len(lsnap["Trash"]), 0)
        # Deleting a big folder's content, and two more: 18 of 42 (43%).
        with h.Imap(p.local) as m:
            m.expunge("Lists", m.uids("Lists"))
            m.expunge("INBOX", m.uids("INBOX")[:2])
        p.sync()
        _, rsnap, _ = p.check()
        self.assertEqual((len(rsnap["Lists"]), len(rsnap["INBOX"])), (0, 10))
        # A small account: 2 of 3, then the last one.
        q, _ = synced("small", {"INBOX": 3})
        with h.Imap(q.remote) as m:
            m.expunge("INBOX", m.uids("INBOX")[:2])
        q.sync()
        self.assertEqual(len(q.check()[0]["INBOX"]), 1)
        expunge_all(q.remote, ["INBOX"])
        q.sync()
        self.assertEqual(len(q.check()[0]["INBOX"]), 0)


class SelfSync(Case):
    def test_same_store_refused(self):
        store = h.TunnelStore(T, "self-store", extra_conf=s.FAST)
        with h.Imap(store) as m:
            for i in range(3):
                m.append("INBOX", s.message("self-inbox", i), ["\\Seen"] if i == 0 else [])
            m.create("Box")
            m.append("Box", s.message("self-box"))
            m.subscribe("Box")
        p = s.Pair(T, "self", local=store, remote=store)
        # Two different tunnels to the one store: Dovecot's imap binary and doveadm exec imap.
        p.write_config(remote_command=f"{store.doveadm_command} 2>>{store.log_path}")
        before = (s.snapshot(store), s.subscribed(store))
        for args in ((), ("--repair",)):
            r = p.run(*args)
            s.assert_fails(r, r"(?m)^ERROR: \[local\] and \[remote\] reach the same mail store: both list the same 2 "
                              r"mailbox\(es\)", "Refusing to synchronize a store with itself")
            self.assertEqual(len(r.error_lines()), 1, r.describe())
            self.assertFalse(os.path.exists(p.db), "a database was left behind\n" + r.describe())
            self.assertEqual(before, (s.snapshot(store), s.subscribed(store)), "the store changed")
        # A configuration edited so that [remote] reaches [local]'s store,
        # with the database of the pair it was: refused, the database kept
        # byte for byte.
        other = h.TunnelStore(T, "self-other", extra_conf=s.FAST)
        q = s.Pair(T, "self-edited", local=store, remote=other)
        q.sync()
        before = (s.snapshot(store), s.subscribed(store))
        q.write_config(remote_command=f"{store.doveadm_command} 2>>{store.log_path}")
        with open(q.db, "rb") as f:
            db = f.read()
        r = q.run()
        s.assert_fails(r, "(?m)^ERROR: \\[local\\] and \\[remote\\] reach the same mail store")
        with open(q.db, "rb") as f:
            self.assertEqual(db, f.read(), "the database changed")
        self.assertEqual(before, (s.snapshot(store), s.subscribed(store)), "the store changed")
        # The database a self-sync leaves (the reference's loop): both sides
        # recorded with the store's UIDVALIDITY for every mailbox.
        s.db_execute(q.db, "UPDATE remote SET UIDVALIDITY = (SELECT l.UIDVALIDITY FROM local l WHERE l.idx = remote.idx)")
        recorded = s.read_db(q.db)
        self.assertEqual(recorded["local"].keys(), recorded["remote"].keys())
        self.assertTrue(all(recorded["local"][i][0] == recorded["remote"][i][0] for i in recorded["local"]))
        with open(q.db, "rb") as f:
            db = f.read()
        s.assert_fails(q.run(), "(?m)^ERROR: \\[local\\] and \\[remote\\] reach the same mail store")
        with open(q.db, "rb") as f:
            self.assertEqual(db, f.read(), "the database changed")
        self.assertEqual(before, (s.snapshot(store), s.subscribed(store)), "the store changed")

    def test_copied_store_is_not_refused(self):
        a = h.TunnelStore(T, "copy-a", extra_conf=s.FAST)
        with h.Imap(a) as m:
            for i in range(3):
                m.append("INBOX", s.message("copy-inbox", i))
            m.create("Box")
        b = h.TunnelStore(T, "copy-b", extra_conf=s.FAST)
        shutil.copytree(a.mail, b.mail, dirs_exist_ok=True)
        if h.is_root():
            h.chown_tree(b.root, b.user)
        self.assertEqual(a.status("INBOX"), b.status("INBOX"))
        p = s.Pair(T, "copy", local=a, remote=b)
        r = p.sync("--debug")
        self.assertRegex(r.err, r"probing whether they are one store", r.err)
        self.assertRegex(r.err, r"local: C: \d+ CREATE", r.err)
        for store in (a, b):
            self.assertEqual(sorted(n for n, _, _ in store.mailboxes()), ["Box", "INBOX"])
        p.check()


if __name__ == "__main__":
    s.main(globals())
