#!/usr/bin/env python3
"""Connection layer over `type = tunnel` to throwaway Dovecot stores:
capabilities, LIST-STATUS counts, APPEND/FETCH byte-exactness, CREATE,
COMPRESS through both tunnel forms, LITERAL-, and a failing command.
Server-side facts are checked with imaplib, independently of our code."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402

h.require("imap-probe", "dovecot-imap", "doveadm", "doveconf")
if h.is_root():
    h.require("setpriv")

T = None          # the TestDir
MAIN = None       # maildir, '/' separator
DOTS = None       # mdbox, '.' separator
LITMINUS = None   # maildir, imap_literal_minus = yes


def setUpModule():
    global T, MAIN, DOTS, LITMINUS
    T = h.TestDir("iit-tunnel-")
    MAIN = h.TunnelStore(T, "main")
    DOTS = h.TunnelStore(T, "dots", fmt="mdbox", separator=".")
    LITMINUS = h.TunnelStore(T, "litminus", literal_minus=True)


def probe(section_opts, action, *args, section="local", debug=None):
    config = h.write_config(T, {section: section_opts})
    return h.run_probe(config, action, *args, section=section, debug=debug)


def append_file(store, mailbox, data, *flags, **section_opts):
    path = os.path.join(T.path, f"msg-{h.sha256_hex(data)[:16]}.eml")
    with open(path, "wb") as f:
        f.write(data)
    r = h.assert_ok(probe(store.section(**section_opts), "append", mailbox, path, *flags))
    words = r.out.split()
    assert words[0] == "APPENDED" and len(words) == 3, r.describe()
    return int(words[1]), int(words[2])


def fetch_sha(store, mailbox, uid, **section_opts):
    r = h.assert_ok(probe(store.section(**section_opts), "fetch", mailbox, uid))
    words = r.out.split()
    assert words[0] == "BODY" and len(words) == 3, r.describe()
    return int(words[1]), words[2]


def normalized_flags(flags):
    """LIST flags, lower-cased, without those that depend on the LIST form
    or on selection (\\HasChildren, \\HasNoChildren, \\Marked, \\Unmarked);
    \\NonExistent counts as \\Noselect (RFC 5258 3)."""
    out = {f.lower() for f in flags} - {"\\haschildren", "\\hasnochildren", "\\marked", "\\unmarked"}
    if "\\nonexistent" in out:
        out = (out - {"\\nonexistent"}) | {"\\noselect"}
    return out


class Capabilities(unittest.TestCase):
    def test_capabilities(self):
        r = h.assert_ok(probe(MAIN.section(), "capabilities"))
        caps, tls, compress = h.parse_capabilities(r.out)
        for cap in ("IMAP4REV1", "QRESYNC", "CONDSTORE", "ENABLE", "LIST-STATUS", "UIDPLUS", "LITERAL+"):
            self.assertIn(cap, caps, r.out)
        self.assertFalse(tls)
        self.assertFalse(compress, "compress defaults to NO for a section other than [remote]")

    def test_compress_imap_binary(self):
        r = h.assert_ok(probe(MAIN.section(compress="YES"), "capabilities"))
        caps, _, compress = h.parse_capabilities(r.out)
        self.assertIn("COMPRESS=DEFLATE", caps)
        self.assertTrue(compress, r.describe())
        r = h.assert_ok(probe(MAIN.section(compress="NO"), "capabilities"))
        self.assertFalse(h.parse_capabilities(r.out)[2], r.describe())
        # [remote]'s compress default is YES
        r = h.assert_ok(probe(MAIN.section(), "capabilities", section="remote"))
        self.assertTrue(h.parse_capabilities(r.out)[2], r.describe())

    def test_compress_doveadm_exec(self):
        # doveadm exec imap drops `protocol imap {}`: no COMPRESS=DEFLATE
        r = h.assert_ok(probe(MAIN.section(doveadm=True, compress="YES"), "capabilities"))
        caps, _, compress = h.parse_capabilities(r.out)
        self.assertNotIn("COMPRESS=DEFLATE", caps)
        self.assertIn("QRESYNC", caps)
        self.assertFalse(compress)
        # and it carries real traffic
        MAIN.create("viadoveadm")
        r = h.assert_ok(probe(MAIN.section(doveadm=True), "list", "viadoveadm"))
        self.assertIn("viadoveadm", h.parse_list(r.out))

    def test_literal_minus_advertised(self):
        r = h.assert_ok(probe(LITMINUS.section(), "capabilities"))
        caps = h.parse_capabilities(r.out)[0]
        self.assertIn("LITERAL-", caps)
        self.assertNotIn("LITERAL+", caps)


class ListStatus(unittest.TestCase):
    def test_counts_after_seeding(self):
        n = 7
        uids = MAIN.append_many("counts", [h.make_message(f"count {i}") for i in range(n)], create=True)
        self.assertEqual(uids, list(range(1, n + 1)))
        status = MAIN.status("counts")
        r = h.assert_ok(probe(MAIN.section(), "list", "counts"))
        boxes = h.parse_list(r.out)
        self.assertEqual(list(boxes), ["counts"], r.out)
        box = boxes["counts"]
        self.assertEqual(box["delim"], "/")
        self.assertEqual(box["messages"], n)
        self.assertEqual(box["uidnext"], n + 1)
        self.assertEqual(box["uidvalidity"], status["UIDVALIDITY"])
        self.assertEqual(box["highestmodseq"], status["HIGHESTMODSEQ"])

    def test_list_all_matches_server(self):
        MAIN.create("listall/child")
        r = h.assert_ok(probe(MAIN.section(), "list"))
        ours = h.parse_list(r.out)
        theirs = {name: (delim, flags) for name, delim, flags in MAIN.mailboxes()}
        self.assertEqual(set(ours), set(theirs), r.out)
        for name, (delim, flags) in theirs.items():
            self.assertEqual(ours[name]["delim"], delim or "NIL", name)
            # A plain LIST and LIST ... RETURN (STATUS ...) differ in flags:
            # Dovecot gives (\Noselect \HasChildren) to the former and
            # (\NonExistent) to the latter, \HasChildren only on request.
            self.assertEqual(normalized_flags(ours[name]["flags"]), normalized_flags(flags), name)
            if "\\Noselect" not in flags:
                st = MAIN.status(name)
                self.assertEqual(ours[name]["messages"], st["MESSAGES"], name)
                self.assertEqual(ours[name]["uidnext"], st["UIDNEXT"], name)
        self.assertIn("\\noselect", normalized_flags(ours["listall"]["flags"]))
        self.assertIsNone(ours["listall"]["messages"], "no STATUS for a \\Noselect mailbox")

    def test_dot_separator_mdbox(self):
        DOTS.append_many("INBOX", [h.make_message("dots 1"), h.make_message("dots 2")])
        DOTS.create("a.b")
        r = h.assert_ok(probe(DOTS.section(), "list"))
        boxes = h.parse_list(r.out)
        self.assertEqual(boxes["INBOX"]["messages"], 2, r.out)
        self.assertEqual(boxes["a.b"]["delim"], ".")
        self.assertIn("a", boxes)


class AppendFetch(unittest.TestCase):
    def roundtrip(self, store, mailbox, data, *flags, **opts):
        if mailbox not in [m[0] for m in store.mailboxes(mailbox)]:
            store.create(mailbox)
        uidvalidity, uid = append_file(store, mailbox, data, *flags, **opts)
        self.assertEqual(uidvalidity, store.status(mailbox)["UIDVALIDITY"])
        size, sha = fetch_sha(store, mailbox, uid, **opts)
        self.assertEqual((size, sha), (len(data), h.sha256_hex(data)), "fetch by the probe")
        stored_flags, body = store.messages(mailbox)[uid]
        self.assertEqual(h.sha256_hex(body), h.sha256_hex(data), "as the server stores it (imaplib)")
        for flag in flags:
            self.assertIn(flag, stored_flags)
        return uid

    def test_small(self):
        self.roundtrip(MAIN, "INBOX", h.make_message("small"))

    def test_flags(self):
        self.roundtrip(MAIN, "flagged", h.make_message("flags"), "\\Seen", "\\Flagged", "$Label1")

    def test_8bit(self):
        msg = h.make_message("8bit", "Grüße aus Köln, ça va? € 日本語\r\n".encode() + b"\xe9t\xe9 (latin-1)\r\n")
        self.roundtrip(MAIN, "INBOX", msg)

    def test_binaryish(self):
        # every byte but NUL, CR and LF (Dovecot normalizes bare CR/LF), CRLF lines
        line = bytes(b for b in range(1, 256) if b not in (10, 13)) + b"\r\n"
        self.roundtrip(MAIN, "INBOX", h.make_message("binary-ish", line * 40))

    def test_empty_body_no_final_newline(self):
        self.roundtrip(MAIN, "INBOX", b"Subject: no newline at the end\r\n\r\nabc")

    def test_5mib_compressed(self):
        msg = h.make_message("big", size=5 * 1024 * 1024)
        self.roundtrip(MAIN, "big", msg, compress="YES")

    def test_5mib_mdbox_uncompressed(self):
        msg = h.make_message("big mdbox", size=5 * 1024 * 1024 + 17)
        self.roundtrip(DOTS, "big", msg, compress="NO")

    def test_literal_minus_large(self):
        # > 4096 bytes: a LITERAL- client must wait for the continuation
        for size in (1000, 4096, 4097, 70000):
            self.roundtrip(LITMINUS, "INBOX", h.make_message(f"literal- {size}", size=size))

    def test_fetch_missing_uid(self):
        MAIN.create("missinguid")
        r = probe(MAIN.section(), "fetch", "missinguid", 4242)
        h.assert_fails(r, "4242")


class Create(unittest.TestCase):
    def created(self, store, name):
        r = h.assert_ok(probe(store.section(), "create", name))
        self.assertEqual(r.out.strip(), f"CREATED {name}")
        names = [m[0] for m in store.mailboxes()]
        self.assertIn(name, names)
        return names

    def test_nested(self):
        names = self.created(MAIN, "parent/child/grandchild")
        self.assertIn("parent/child", names)

    def test_modified_utf7(self):
        self.created(MAIN, "Entw&APw-rfe")
        self.created(MAIN, "Entw&APw-rfe/&ZeVnLIqe-")

    def test_with_space_and_quotes(self):
        self.created(MAIN, 'with space "and quotes"')

    def test_dot_separator(self):
        names = self.created(DOTS, "Entw&APw-rfe.sub")
        self.assertIn("Entw&APw-rfe", names)

    def test_existing_is_an_error(self):
        self.created(MAIN, "twice")
        r = probe(MAIN.section(), "create", "twice")
        h.assert_fails(r, "twice|exists")


class BrokenTunnel(unittest.TestCase):
    def test_command_exits_at_once(self):
        r = probe({"type": "tunnel", "command": "/bin/false"}, "capabilities")
        h.assert_fails(r, r"/bin/false|exit|status|closed|EOF|end of")

    def test_command_with_status(self):
        r = probe({"type": "tunnel", "command": "echo oops >&2; exit 3"}, "capabilities")
        h.assert_fails(r, r"exit|status|3|closed|EOF|end of")

    def test_command_not_found(self):
        r = probe({"type": "tunnel", "command": "/nonexistent/imapd --foo"}, "capabilities")
        h.assert_fails(r, r"nonexistent|exec|No such file|exit|status|127|closed")

    def test_not_imap(self):
        r = probe({"type": "tunnel", "command": "echo hello; sleep 0.5"}, "capabilities")
        h.assert_fails(r)


if __name__ == "__main__":
    unittest.main(verbosity=2)
