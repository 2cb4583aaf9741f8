#!/usr/bin/env python3
"""interimap ($INTERIMAP): which mailboxes are synchronized.

 - list-reference: two remotes mirrored into one local store under
   perso/ and work/ (two configs, two databases);
 - ignore-mailbox (a PCRE on the name with NUL as delimiter);
 - list-select-opts = SUBSCRIBED;
 - list-mailbox patterns;
 - MAILBOX arguments override list-mailbox and ignore-mailbox.
Stores are read through imaplib; see synclib.Pair.check.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import synclib as s  # noqa: E402

T = None


def setUpModule():
    global T
    T = h.TestDir("iit-sync-select-")


class Select(unittest.TestCase):
    def pair(self, **kw):
        return s.Pair(T, self._testMethodName.replace("test_", ""), **kw)

    def test_list_reference_two_remotes(self):
        local = h.TunnelStore(T, "ref-local", extra_conf=s.FAST)
        perso = self.pair(local=local, local_ref="perso/")
        work = s.Pair(T, "work", local=local, local_ref="work/")
        e_p = s.merge(perso.seed("remote", {"INBOX": s.msgs("p-inbox", 4, ["\\Seen"]), "Lists\0a": s.msgs("p-la", 2)},
                                 create=True),
                      perso.seed("local", {"Local": s.msgs("p-local", 1)}))
        e_w = work.seed("remote", {"INBOX": s.msgs("w-inbox", 3), "Projects\0x\0y": s.msgs("w-xy", 2)})
        with h.Imap(local) as sd:  # outside both references: never synchronized
            sd.append("INBOX", s.message("local-own"))
            sd.create("Other")
        perso.sync()
        work.sync()
        perso.check(expect=e_p)
        work.check(expect=e_w)
        self.assertTrue({"perso/INBOX", "perso/Lists/a", "perso/Local", "work/INBOX", "work/Projects/x/y"}
                        <= s.selectable(local), s.selectable(local))
        self.assertNotIn("Other", s.selectable(perso.remote) | s.selectable(work.remote))
        self.assertNotIn("Local", s.selectable(work.remote))
        self.assertEqual(len(s.snapshot(local, ["INBOX"])["INBOX"]), 1)
        self.assertNotEqual(perso.db, work.db)
        # changes on the shared local store go to the right remote
        e_p2 = s.merge(e_p, perso.seed("local", {"INBOX": s.msgs("p-new", 2)}, create=False))
        e_w2 = s.merge(e_w, work.seed("local", {"Projects\0x\0y": s.msgs("w-new", 1)}, create=False))
        perso.sync()
        work.sync()
        perso.check(expect=e_p2)
        work.check(expect=e_w2)

    def test_ignore_mailbox(self):
        p = self.pair(default={"ignore-mailbox": "^(?:Junk|virtual)(?:\\x00|$)"})
        e = s.merge(p.seed("local", {"INBOX": s.msgs("in", 2), "Junk": s.msgs("junk", 2), "Keep": s.msgs("keep", 1),
                                     "JunkNot": s.msgs("jn", 1)}),
                    p.seed("remote", {"virtual": s.msgs("v", 1), "virtual\0sub": s.msgs("vs", 1),
                                      "Keep\0Child": s.msgs("kc", 1)}))
        p.sync()
        p.check(mailboxes=["INBOX", "Keep", "JunkNot", "Keep\0Child"],
                expect={k: v for k, v in e.items() if k in ("INBOX", "Keep", "JunkNot", "Keep\0Child")})
        self.assertNotIn("Junk", s.selectable(p.remote))
        self.assertFalse({"virtual", "virtual/sub"} & s.selectable(p.local))
        dbnames = s.db_names(p)
        self.assertFalse({"Junk", "virtual", "virtual\0sub"} & dbnames, dbnames)

    def test_subscribed_only(self):
        p = self.pair(default={"list-select-opts": "SUBSCRIBED"})
        e = p.seed("remote", {"Sub": s.msgs("sub", 2), "Unsub": s.msgs("unsub", 2), "Sub\0Kid": s.msgs("kid", 1)})
        with h.Imap(p.remote) as sd:
            sd.subscribe("Sub")
            sd.subscribe("Sub/Kid")
        p.sync()
        p.check(mailboxes=["Sub", "Sub\0Kid"], expect={k: e[k] for k in ("Sub", "Sub\0Kid")})
        self.assertNotIn("Unsub", s.selectable(p.local))
        self.assertEqual(s.subscribed(p.local), {"Sub", "Sub/Kid"})

    def test_list_mailbox(self):
        p = self.pair(default={"list-mailbox": '"INBOX" "Arch\\x00%"'})
        e = p.seed("local", {"INBOX": s.msgs("in", 1), "Arch\0one": s.msgs("a1", 1), "Arch\0one\0deep": s.msgs("a2", 1),
                             "Else": s.msgs("else", 1)})
        p.sync()
        p.check(mailboxes=["INBOX", "Arch\0one"], expect={k: e[k] for k in ("INBOX", "Arch\0one")})
        self.assertFalse({"Else", "Arch/one/deep"} & s.selectable(p.remote))

    def test_mailbox_arguments(self):
        p = self.pair(default={"ignore-mailbox": "^Ignored$", "list-mailbox": "INBOX"})
        e = p.seed("local", {"INBOX": s.msgs("in", 2), "Ignored": s.msgs("ig", 2), "Other": s.msgs("o", 1),
                             "Deep\0er": s.msgs("d", 1)})
        # MAILBOX arguments replace list-mailbox and bypass ignore-mailbox
        p.sync("Ignored", "Deep/er")
        p.check(mailboxes=["Ignored", "Deep\0er"], expect={k: e[k] for k in ("Ignored", "Deep\0er")})
        self.assertFalse({"INBOX", "Other"} & {n for n, _ in s.read_db(p.db)["mailboxes"].values()})
        self.assertNotIn("Other", s.selectable(p.remote))
        self.assertEqual(s.snapshot(p.remote, ["INBOX"])["INBOX"], {})
        # without arguments the config applies again
        p.sync()
        p.check(mailboxes=["INBOX"], expect={"INBOX": e["INBOX"]})
        self.assertNotIn("Other", s.selectable(p.remote))


if __name__ == "__main__":
    s.main(globals())
