#!/usr/bin/env python3
"""Connection layer against a server advertising only IMAP4rev1 (Dovecot
with `imap_capability = IMAP4rev1`): no LITERAL+/-, LIST-STATUS, UIDPLUS,
CONDSTORE, QRESYNC, ENABLE or COMPRESS.  `capabilities` always works;
LIST falls back to STATUS per mailbox; APPEND uses synchronizing literals.
(Refusing to sync without QRESYNC is the sync layer's business.)"""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402

h.require("imap-probe", "dovecot-imap", "doveconf")
if h.is_root():
    h.require("setpriv")

T = MIN = None


def setUpModule():
    global T, MIN
    T = h.TestDir("iit-minimal-")
    MIN = h.TunnelStore(T, "minimal", extra_conf="imap_capability = IMAP4rev1\n")


def probe(action, *args, **opts):
    config = h.write_config(T, {"remote": MIN.section(**opts)})
    return h.run_probe(config, action, *args, section="remote")


class MinimalServer(unittest.TestCase):
    def test_capabilities(self):
        r = h.assert_ok(probe("capabilities", compress="YES"))
        caps, tls, compress = h.parse_capabilities(r.out)
        self.assertIn("IMAP4REV1", caps)
        for cap in ("QRESYNC", "CONDSTORE", "LIST-STATUS", "LITERAL+", "COMPRESS=DEFLATE"):
            self.assertNotIn(cap, caps)
        self.assertFalse(tls)
        self.assertFalse(compress, "COMPRESS not advertised: compress = YES is a no-op")

    def test_required_capability_missing(self):
        # QRESYNC is what interimap cannot go without: one clear line naming
        # the connection and the capability, exit status 1.
        msg = h.assert_fails(probe("require", "QRESYNC"), r"^imap-probe: remote: server lacks required capability QRESYNC$")
        self.assertNotIn("\n", msg)
        h.assert_ok(probe("require", "IMAP4rev1"))

    def test_list_without_list_status(self):
        MIN.append_many("seeded", [h.make_message(f"seed {i}") for i in range(3)], create=True)
        MIN.create("seeded/child")
        status = MIN.status("seeded")
        r = h.assert_ok(probe("list", "seeded*"))
        boxes = h.parse_list(r.out)
        self.assertEqual(set(boxes), {"seeded", "seeded/child"}, r.out)
        self.assertEqual(boxes["seeded"]["messages"], 3, r.out)
        self.assertEqual(boxes["seeded"]["uidnext"], 4, r.out)
        self.assertEqual(boxes["seeded"]["uidvalidity"], status["UIDVALIDITY"], r.out)
        self.assertEqual(boxes["seeded/child"]["messages"], 0, r.out)

    def test_append_with_synchronizing_literal(self):
        MIN.create("sync-literal")
        msg = h.make_message("no LITERAL+", size=20_000)
        path = T.file("sync-literal.eml", msg)
        r = probe("append", "sync-literal", path, "\\Seen")
        # Dovecot sends APPENDUID even when UIDPLUS is not advertised; a
        # client may use it or not, but the message must be there once.
        if r.rc == 0:
            self.assertRegex(r.out, r"^APPENDED \d+ \d+")
        messages = MIN.messages("sync-literal")
        self.assertEqual([body for _, body in messages.values()], [msg], r.describe())
        uid, (flags, _) = next(iter(messages.items()))
        self.assertIn("\\Seen", flags)
        r = h.assert_ok(probe("fetch", "sync-literal", uid))
        self.assertEqual(r.out.split()[1:], [str(len(msg)), h.sha256_hex(msg)])


if __name__ == "__main__":
    unittest.main(verbosity=2)
