#!/usr/bin/env python3
"""Mailbox layer (include/interimap/mailbox.hpp) against throwaway Dovecot
stores reached as pre-authenticated tunnels, through $MAILBOX_PROBE
(tests/tools/mailbox-probe.cpp):

 - SELECT (QRESYNC ...): VANISHED (EARLIER) and flag changes since a
   mod-sequence; UID FETCH (CHANGEDSINCE ... VANISHED); UIDVALIDITY
   checks; unsolicited updates; switching mailboxes ([CLOSED]);
 - STORE and EXPUNGE of 5000 scattered UIDs in lines of <= 4096 bytes;
   UNCHANGEDSINCE and MODIFIED;
 - streamed FETCH: peak RSS does not grow with the number of messages;
   an empty message is reported as such;
 - MULTIAPPEND of 300 messages (UIDs in order, bodies, flags and
   INTERNALDATE preserved), LITERAL-, pipelined single APPENDs without
   MULTIAPPEND, TRYCREATE;
 - SEARCH with and without ESEARCH;
 - servers breaking RFC 7162's contract (a scripted fake server).

Server-side facts are checked with imaplib, independently of our code."""

import datetime
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402

h.require("dovecot-imap", "doveconf")
if h.is_root():
    h.require("setpriv")

PROBE = os.environ.get("MAILBOX_PROBE") or (
    os.path.join(os.path.dirname(os.environ["IMAP_PROBE"]), "mailbox-probe") if os.environ.get("IMAP_PROBE") else "")
if not PROBE or not os.access(PROBE, os.X_OK):
    h.skip(f"mailbox-probe not found (MAILBOX_PROBE={PROBE!r}); run through meson test")

# fsync off: seeding thousands of messages through imaplib stays fast.
FAST = "mail_fsync = never\n"
# Dovecot's capabilities minus MULTIAPPEND, ESEARCH and UNSELECT.
REDUCED_CAPS = ("imap_capability = IMAP4rev1 LITERAL+ SASL-IR ENABLE IDLE NAMESPACE UIDPLUS CHILDREN "
                "LIST-EXTENDED LIST-STATUS CONDSTORE QRESYNC\n")

T = None
MAIN = None       # maildir, LITERAL+ and every Dovecot capability
LITMINUS = None   # imap_literal_minus = yes
REDUCED = None    # no MULTIAPPEND, ESEARCH, UNSELECT


def setUpModule():
    global T, MAIN, LITMINUS, REDUCED
    T = h.TestDir("iit-mailbox-")
    MAIN = h.TunnelStore(T, "main", extra_conf=FAST)
    LITMINUS = h.TunnelStore(T, "litminus", literal_minus=True, extra_conf=FAST)
    REDUCED = h.TunnelStore(T, "reduced", extra_conf=FAST + REDUCED_CAPS)


class Result(h.Result):
    """mailbox-probe's Result, with its output parsed."""

    def rows(self, kind):
        """The tab-separated fields after KIND of each KIND line."""
        return [line.split("\t")[1:] for line in self.lines if line.split("\t")[0] == kind]

    def row(self, kind):
        rows = self.rows(kind)
        assert len(rows) == 1, f"expected one {kind} line\n" + self.describe()
        return rows[0]

    def sent(self):
        """Command lines as sent (tag included, CRLF excluded), from --debug output."""
        return [m.group(1) for m in re.finditer(r"C: (\d+ [^\n]*)", self.err)]


_config_for = {}


def config(store):
    if store.name not in _config_for:
        _config_for[store.name] = h.write_config(T, {"local": store.section()})
    return _config_for[store.name]


def probe(target, mailbox, *steps, debug=None, ok=True, timeout=240, env=None):
    """Runs mailbox-probe on a store (or a configuration file's [local])
    with steps given as lists (joined by ';')."""
    argv = [PROBE, "--config", target if isinstance(target, str) else config(target), "--section", "local"]
    if debug:
        argv += ["--debug", str(debug)]
    argv.append(mailbox)
    for i, step in enumerate(steps):
        if i:
            argv.append(";")
        argv += [str(a) for a in step]
    res = h.run(argv, timeout=timeout, env=env, cls=Result)
    if re.search(r"ERROR: (Address|Leak)Sanitizer|runtime error:", res.err):
        raise AssertionError("sanitizer report\n" + res.describe())
    if ok and res.rc != 0:
        raise AssertionError("expected success\n" + res.describe())
    if not ok and res.rc != 1:
        raise AssertionError("expected exit status 1\n" + res.describe())
    return res


def error_of(res):
    i = res.err.rfind("mailbox-probe: ")
    return res.err[i:].strip() if i >= 0 else ""


def uid_set(uids):
    """Compact IMAP form of an iterable of UIDs."""
    uids = sorted(set(uids))
    out, i = [], 0
    while i < len(uids):
        j = i
        while j + 1 < len(uids) and uids[j + 1] == uids[j] + 1:
            j += 1
        out.append(str(uids[i]) if i == j else f"{uids[i]}:{uids[j]}")
        i = j + 1
    return ",".join(out)


def parse_set(text):
    out = set()
    if text in ("", "-"):
        return out
    for part in text.split(","):
        a, _, b = part.partition(":")
        lo, hi = int(a), int(b or a)
        out.update(range(min(lo, hi), max(lo, hi) + 1))
    return out


def seed_maildir(store, mailbox, bodies):
    """Writes messages straight into a maildir mailbox (fast bulk seeding,
    independent of any IMAP code); Dovecot assigns UIDs on the next access."""
    folder = os.path.join(store.mail, "." + mailbox) if mailbox != "INBOX" else store.mail
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    for i, body in enumerate(bodies):
        # Sorted names: Dovecot's first sync assigns UIDs in this order.
        with open(os.path.join(folder, "new", f"1700000000.M{i:07d}P1.seed"), "wb") as f:
            f.write(body)
    if h.is_root():
        h.chown_tree(store.root, store.user)


def select_store(store, mailbox, *commands):
    """Runs imaplib commands on a selected mailbox: [(method, args...)]."""
    with store.imap() as m:
        typ, data = m.select(h.imap_quote(mailbox))
        assert typ == "OK", data
        out = []
        for method, *args in commands:
            typ, data = getattr(m, method)(*args)
            assert typ == "OK", (method, args, typ, data)
            out.append(data)
        return out


def search_uids(store, mailbox, criteria):
    data = select_store(store, mailbox, ("uid", "SEARCH", criteria))[0]
    return {int(x) for x in data[0].split()}


def status(store, mailbox):
    return store.status(mailbox)


def settled_status(store, mailbox):
    """STATUS once Dovecot tracks per-message mod-sequences: it starts on a
    mailbox's first CONDSTORE use (until then every message shares one
    MODSEQ), and the first read-write SELECT raises the MODSEQ of the
    messages whose \\Recent flag it clears.  A state taken before either
    would see every message as changed."""
    select_store(store, mailbox, ("uid", "FETCH", "1:*", "(MODSEQ)"))
    return store.status(mailbox)


def internaldates(store, mailbox):
    """{uid: INTERNALDATE as an aware datetime} through imaplib."""
    with store.imap() as m:
        m.select(h.imap_quote(mailbox), readonly=True)
        typ, data = m.uid("FETCH", "1:*", "(UID INTERNALDATE)")
        out = {}
        for item in data:
            item = item[0] if isinstance(item, tuple) else item
            uid = re.search(rb"UID (\d+)", item or b"")
            date = re.search(rb'INTERNALDATE "([^"]+)"', item or b"")
            if uid and date:
                out[int(uid.group(1))] = parse_date(date.group(1).decode())
        return out


def parse_date(text):
    return datetime.datetime.strptime(text.strip(), "%d-%b-%Y %H:%M:%S %z")


def norm_flags(flags):
    return sorted(f.lower() for f in flags if f.lower() != "\\recent")


# ---------------------------------------------------------------------------

class Select(unittest.TestCase):
    def test_qresync_vanished_earlier_and_flag_changes(self):
        box = "qresync"
        uids = MAIN.append_many(box, [h.make_message(f"q{i}") for i in range(10)], create=True)
        self.assertEqual(uids, list(range(1, 11)))
        st = settled_status(MAIN, box)
        # Changes after the known state, by another client.
        select_store(MAIN, box, ("uid", "STORE", "3:4", "+FLAGS", "(\\Deleted)"), ("expunge",),
                     ("uid", "STORE", "5", "+FLAGS", "(\\Seen)"), ("uid", "STORE", "6", "+FLAGS", "($Label1)"))
        r = probe(MAIN, box, ["select", "qresync", st["UIDVALIDITY"], st["HIGHESTMODSEQ"], "1:10"], ["changes"],
                  debug=1)
        self.assertTrue(any(re.search(r"SELECT \S+ \(QRESYNC \(\d+ \d+ 1:10\)\)", line) for line in r.sent()),
                        r.describe())
        sel = r.row("SELECTED")
        self.assertEqual(int(sel[0]), st["UIDVALIDITY"])
        self.assertEqual(int(sel[1]), 11)
        self.assertGreater(int(sel[2]), st["HIGHESTMODSEQ"])
        self.assertEqual(int(sel[3]), 8)
        self.assertEqual(sel[4], "rw")
        self.assertIn("(EARLIER)", r.err)  # the server's own words
        self.assertEqual(parse_set(r.row("VANISHED")[0]), {3, 4})
        changes = {int(u): (int(m), f.split()) for u, m, f in r.rows("CHANGE")}
        self.assertEqual(set(changes), {5, 6}, r.describe())
        self.assertEqual(norm_flags(changes[5][1]), ["\\seen"])
        self.assertEqual(norm_flags(changes[6][1]), ["$label1"])
        for modseq, _ in changes.values():
            self.assertGreater(modseq, st["HIGHESTMODSEQ"])

        # The same through UID FETCH (CHANGEDSINCE n VANISHED) after a plain SELECT.
        r = probe(MAIN, box, ["enable"], ["select"], ["changedsince", st["HIGHESTMODSEQ"]], debug=1)
        self.assertTrue(any(re.search(r"UID FETCH 1:4294967295 \(FLAGS MODSEQ\) \(CHANGEDSINCE \d+ VANISHED\)$", line)
                            for line in r.sent()), r.describe())
        self.assertEqual(parse_set(r.row("VANISHED")[0]), {3, 4})
        self.assertEqual({int(u) for u, _, _ in r.rows("CHANGE")}, {5, 6})

        # Nothing since the current HIGHESTMODSEQ.
        st2 = status(MAIN, box)
        r = probe(MAIN, box, ["select", "qresync", st2["UIDVALIDITY"], st2["HIGHESTMODSEQ"], "1:10"], ["changes"],
                  ["changedsince", st2["HIGHESTMODSEQ"], "1:10"])
        self.assertEqual(r.rows("VANISHED"), [["-"], ["-"]])
        self.assertEqual(r.rows("CHANGE"), [])

    def test_uidvalidity_changed(self):
        box = "uidvalidity"
        MAIN.append(box, h.make_message("uv"), create=True)
        st = status(MAIN, box)
        r = probe(MAIN, box, ["select", "qresync", st["UIDVALIDITY"] + 1, st["HIGHESTMODSEQ"]], ok=False)
        self.assertRegex(error_of(r), rf"local: {box}: UIDVALIDITY changed! \({st['UIDVALIDITY'] + 1} != "
                                      rf"{st['UIDVALIDITY']}\)")

    def test_missing_mailbox(self):
        r = probe(MAIN, "no-such-mailbox", ["select"], ok=False)
        self.assertEqual(r.row("ERROR")[:2], ["SELECT", "NO"])
        self.assertRegex(error_of(r), r"local: no-such-mailbox: SELECT failed: NO .*Mailbox doesn't exist")

    def test_examine_is_read_only(self):
        box = "examine"
        MAIN.append(box, h.make_message("ro"), create=True)
        r = probe(MAIN, box, ["select", "examine"], ["store", "add", "1", "\\Seen"], ok=False)
        self.assertEqual(r.row("SELECTED")[4], "ro")
        self.assertRegex(error_of(r), rf"local: {box}: UID STORE: mailbox is selected read-only")

    def test_unsolicited_updates(self):
        box = "unsolicited"
        MAIN.append_many(box, [h.make_message(f"u{i}") for i in range(4)], create=True)
        # Another client, run by the probe's `shell` step while the mailbox is selected.
        script = T.file("unsolicited.py", f"""
import imaplib
m = imaplib.IMAP4_stream({MAIN.command + " 2>>" + MAIN.log_path!r})
m.select('{box}')
m.uid('STORE', '2', '+FLAGS', '(\\\\Flagged)')
m.uid('STORE', '3', '+FLAGS', '(\\\\Deleted)')
m.expunge()
m.append('{box}', None, None, b'Subject: new one\\r\\n\\r\\nhello\\r\\n')
m.logout()
""")
        r = probe(MAIN, box, ["enable"], ["select"], ["newmail"], ["shell", sys.executable, script], ["noop"],
                  ["changes"], ["newmail"], ["state"])
        self.assertEqual(r.rows("NEWMAIL"), [["0"], ["1"]], r.describe())
        self.assertEqual(parse_set(r.row("VANISHED")[0]), {3})
        changes = {int(u): f.split() for u, _, f in r.rows("CHANGE")}
        self.assertIn(2, changes, r.describe())
        self.assertEqual(norm_flags(changes[2]), ["\\flagged"])
        state = r.row("STATE")
        self.assertEqual(int(state[3]), 4)  # 4 - 1 expunged + 1 new
        self.assertEqual(state[4], "1")

    def test_switching_mailboxes(self):
        for box in ("switch-a", "switch-b"):
            MAIN.append_many(box, [h.make_message(f"{box} {i}") for i in range(3)], create=True)
        r = probe(MAIN, "switch-a", ["enable"], ["select"], ["store", "add", "1", "\\Seen"], ["use", "switch-b"],
                  ["select"], ["state"], ["use", "switch-a"], ["state"], ["store", "add", "2", "\\Seen"], ok=False,
                  debug=1)
        states = r.rows("STATE")
        self.assertEqual(states[0][4], "1")   # switch-b selected
        self.assertEqual(states[1][4], "0")   # switch-a no longer
        self.assertIn("[CLOSED]", r.err)
        self.assertRegex(error_of(r), r"local: switch-a: UID STORE: mailbox not selected")
        self.assertEqual(search_uids(MAIN, "switch-a", "SEEN"), {1})

    def test_close(self):
        box = "close"
        MAIN.append(box, h.make_message("close"), create=True)
        r = probe(MAIN, box, ["select"], ["close"], ["state"], debug=1)
        self.assertTrue(any(line.endswith(" UNSELECT") for line in r.sent()), r.describe())
        self.assertEqual(r.row("STATE")[4], "0")
        # Without UNSELECT: EXAMINE + CLOSE (expunges nothing).
        REDUCED.append(box, h.make_message("close"), create=True, flags=("\\Deleted",))
        r = probe(REDUCED, box, ["select", "examine"], ["close"], debug=1)
        self.assertTrue(any(line.endswith(" CLOSE") for line in r.sent()), r.describe())
        self.assertEqual(status(REDUCED, box)["MESSAGES"], 1)
        # Read-write without UNSELECT: nothing sent (CLOSE would expunge); the
        # server's selection ends with the next SELECT's [CLOSED].
        REDUCED.append_many("close-next", [h.make_message("n1"), h.make_message("n2")], create=True)
        r = probe(REDUCED, box, ["enable"], ["select"], ["close"], ["state"], ["use", "close-next"], ["select"],
                  ["state"], debug=1)
        self.assertFalse(any(line.endswith(" CLOSE") for line in r.sent()), r.describe())
        self.assertEqual(status(REDUCED, box)["MESSAGES"], 1)
        self.assertIn("[CLOSED]", r.err)
        self.assertEqual([row[3:] for row in r.rows("STATE")], [["1", "0"], ["2", "1"]])


class StoreExpunge(unittest.TestCase):
    N = 10000

    @classmethod
    def setUpClass(cls):
        seed_maildir(MAIN, "many", [b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(cls.N)])
        assert status(MAIN, "many")["MESSAGES"] == cls.N

    def check_lines(self, r, verb):
        lines = [line for line in r.sent() if f" {verb} " in line]
        self.assertGreater(len(lines), 1, f"{verb} should need several lines")
        longest = max(len(line) + 2 for line in lines)
        self.assertLessEqual(longest, 4096, r.describe())
        return len(lines), longest

    def test_store_5000_uids(self):
        odd = set(range(1, self.N + 1, 2))
        self.assertEqual(len(odd), 5000)
        r = probe(MAIN, "many", ["enable"], ["select"], ["store", "add", uid_set(odd), "\\Seen $Odd"], ["changes"],
                  debug=1)
        count, longest = self.check_lines(r, "UID STORE")
        print(f"\n  STORE of 5000 UIDs: {count} commands, longest line {longest} bytes", flush=True)
        self.assertEqual(r.row("MODIFIED"), ["-"])
        # Our own store's FETCH echoes are not reported as changes.
        self.assertEqual(r.rows("CHANGE"), [], "own STORE echoed as changes")
        self.assertEqual(search_uids(MAIN, "many", "SEEN"), odd)
        self.assertEqual(search_uids(MAIN, "many", "KEYWORD $Odd"), odd)
        # Remove, then replace.
        thirds = set(range(1, self.N + 1, 3))
        r = probe(MAIN, "many", ["select"], ["store", "remove", uid_set(thirds), "$Odd"], debug=1)
        self.check_lines(r, "UID STORE")
        self.assertEqual(search_uids(MAIN, "many", "KEYWORD $Odd"), odd - thirds)
        r = probe(MAIN, "many", ["select"], ["store", "replace", uid_set(odd), "\\Flagged"])
        self.assertEqual(search_uids(MAIN, "many", "SEEN"), set())
        self.assertEqual(search_uids(MAIN, "many", "FLAGGED"), odd)

    def test_unchangedsince(self):
        box = "unchanged"
        MAIN.append_many(box, [h.make_message(f"uc{i}") for i in range(4)], create=True)
        st = settled_status(MAIN, box)
        select_store(MAIN, box, ("uid", "STORE", "2", "+FLAGS", "(\\Answered)"))
        r = probe(MAIN, box, ["enable"], ["select"],
                  ["store", "add", "1:4", "\\Seen", st["HIGHESTMODSEQ"]], ["changes"], debug=1)
        self.assertIn("(UNCHANGEDSINCE", "\n".join(r.sent()))
        self.assertEqual(parse_set(r.row("MODIFIED")[0]), {2})
        self.assertEqual(search_uids(MAIN, box, "SEEN"), {1, 3, 4})
        # The refused UID is pending with unknown flags (fetch them again).
        changes = {int(u): f for u, _, f in r.rows("CHANGE")}
        self.assertEqual(changes, {2: "?"}, r.describe())

    def test_fetch_flags(self):
        box = "fetchflags"
        MAIN.append_many(box, [h.make_message(f"ff{i}") for i in range(3)], create=True)
        select_store(MAIN, box, ("uid", "STORE", "2", "+FLAGS", "(\\Seen kw)"))
        r = probe(MAIN, box, ["enable"], ["select"], ["flags", "1:10"])
        rows = {int(u): norm_flags(f.split()) for u, _, f in r.rows("FLAGS")[1:]}  # after SELECT's FLAGS line
        self.assertEqual(rows, {1: [], 2: ["\\seen", "kw"], 3: []}, r.describe())

    def test_expunge_scattered(self):
        box = "expunge"
        seed_maildir(MAIN, box, [b"Subject: %d\r\n\r\nx\r\n" % i for i in range(6000)])
        doomed = set(range(2, 6001, 2)) | {7001, 7003}  # two UIDs that do not exist
        r = probe(MAIN, box, ["enable"], ["select"], ["expunge", uid_set(doomed)], ["changes"], ["state"], debug=1)
        count, longest = self.check_lines(r, "UID EXPUNGE")
        self.check_lines(r, "UID STORE")
        print(f"\n  EXPUNGE of 3002 UIDs: {count} UID EXPUNGE commands, longest line {longest} bytes", flush=True)
        self.assertEqual(parse_set(r.row("NOTEXPUNGED")[0]), {7001, 7003})
        self.assertEqual(r.row("VANISHED"), ["-"])  # expunged ones are not reported again
        self.assertEqual(int(r.row("STATE")[3]), 3000)
        self.assertEqual(search_uids(MAIN, box, "ALL"), set(range(1, 6001, 2)))

    def test_update_expunge_and_store_pipelined(self):
        box = "update"
        MAIN.append_many(box, [h.make_message(f"up{i}") for i in range(8)], create=True)
        st = settled_status(MAIN, box)
        # Another client changes UID 6 first: UNCHANGEDSINCE refuses it.
        select_store(MAIN, box, ("uid", "STORE", "6", "+FLAGS", "(\\Draft)"))
        r = probe(MAIN, box, ["enable"], ["select"],
                  ["update", "2:3", "4:6", "\\Seen kw", st["HIGHESTMODSEQ"]], ["changes"], debug=1)
        self.assertEqual(parse_set(r.row("NOTEXPUNGED")[0]), set(), r.describe())
        self.assertEqual(parse_set(r.row("MODIFIED")[0]), {6}, r.describe())
        self.assertEqual(search_uids(MAIN, box, "ALL"), {1, 4, 5, 6, 7, 8})
        stored = MAIN.messages(box)
        self.assertEqual(norm_flags(stored[4][0]), ["\\seen", "kw"])
        self.assertEqual(norm_flags(stored[6][0]), ["\\draft"])
        # One round trip: every command goes out before the first answer.
        lines = [line for line in r.err.splitlines() if re.search(r": [CS]: ", line)]
        sent = [i for i, line in enumerate(lines) if re.search(r"C: \d+ UID (STORE|EXPUNGE)", line)]
        answers = [i for i, line in enumerate(lines) if re.search(r"S: \d+ (OK|NO|BAD)", line)]
        self.assertEqual(len(sent), 3, r.describe())
        first_answer = min(i for i in answers if i > sent[0])
        self.assertLess(sent[-1], first_answer, "\n".join(lines))

    def test_own_append_is_not_new_mail(self):
        box = "ownappend"
        MAIN.append_many(box, [h.make_message(f"oa{i}") for i in range(2)], create=True)
        lines = []
        for i in range(3):
            lines.append(f"{T.file(f'{box}-{i}.eml', h.make_message(f'own {i}'))}\t\t")
        manifest = T.file(f"{box}.manifest", "\n".join(lines) + "\n")
        script = T.file("ownappend.py", f"""
import imaplib
m = imaplib.IMAP4_stream({MAIN.command + " 2>>" + MAIN.log_path!r})
m.append('{box}', None, None, b'Subject: someone else\\r\\n\\r\\nhello\\r\\n')
m.logout()
""")
        r = probe(MAIN, box, ["enable"], ["select"], ["append", manifest], ["noop"], ["newmail"],
                  ["shell", sys.executable, script], ["noop"], ["newmail"], ["state"])
        # EXISTS grew by our own three messages: not news; then by another
        # client's: news.
        self.assertEqual(r.rows("NEWMAIL"), [["0"], ["1"]], r.describe())
        self.assertEqual(int(r.row("STATE")[3]), 6)

    def test_expunge_without_qresync(self):
        box = "expunge-plain"
        REDUCED.append_many(box, [h.make_message(f"ep{i}") for i in range(4)], create=True)
        r = probe(REDUCED, box, ["select"], ["expunge", "2:3"], ["state"])
        self.assertEqual(r.row("NOTEXPUNGED"), ["-"])
        self.assertEqual(int(r.row("STATE")[3]), 2)
        self.assertEqual(search_uids(REDUCED, box, "ALL"), {1, 4})


class Fetch(unittest.TestCase):
    def fetch_hwm(self, box, count):
        bodies = [h.make_message(f"{box} {i}", size=20 * 1024) for i in range(count)]
        seed_maildir(MAIN, box, bodies)
        want = {h.sha256_hex(b) for b in bodies}
        # Under AddressSanitizer freed blocks wait in a quarantine, which
        # would make RSS track the bytes allocated in all; turn it off.
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS", ""), "quarantine_size_mb=0",
                                                     "thread_local_quarantine_size_kb=0"]))
        r = probe(MAIN, box, ["enable"], ["select"], ["fetch", "1:4294967295"], env=env)
        self.assertEqual(int(r.row("FETCHED")[0]), count)
        got = {row[2] for row in r.rows("MESSAGE")}
        self.assertEqual(got, want)
        before, peak = (int(x) for x in r.row("VMHWM"))
        return before, peak, sum(len(b) for b in bodies)

    def test_streaming_memory(self):
        b1, p1, size1 = self.fetch_hwm("rss-200", 200)
        b2, p2, size2 = self.fetch_hwm("rss-2000", 2000)
        print(f"\n  FETCH 200 x 20 KiB ({size1 >> 10} KiB): RSS {b1} kB -> peak {p1} kB (+{p1 - b1} kB)"
              f"\n  FETCH 2000 x 20 KiB ({size2 >> 10} KiB): RSS {b2} kB -> peak {p2} kB (+{p2 - b2} kB)", flush=True)
        # 36 MiB more data must not cost more than a little memory.
        self.assertLess((p2 - b2) - (p1 - b1), 2048)
        self.assertLess(p2 - b2, 4096)

    def test_abandoned_fetch(self):
        """The callback throws at the 3rd of 500 messages: the exception comes
        out at once and the connection stays usable, even for another FETCH
        started while the abandoned one is still streaming."""
        box = "abandon"
        bodies = [h.make_message(f"{box} {i}", size=20 * 1024) for i in range(500)]
        seed_maildir(MAIN, box, bodies)
        r = probe(MAIN, box, ["select"], ["fetchabort", "1:4294967295", "3"], ["fetch", "1:5"], ["flags", "1:2"],
                  ["fetch", "6"])
        self.assertEqual(r.row("ABORTED"), ["3"])
        got = [(int(row[0]), row[2]) for row in r.rows("MESSAGE")]
        self.assertEqual(got, [(i + 1, h.sha256_hex(bodies[i])) for i in (0, 1, 2, 3, 4, 5)])
        self.assertEqual([row[0] for row in r.rows("FLAGS")[1:]], ["1", "2"])

    def test_empty_message(self):
        box = "empty"
        seed_maildir(MAIN, box, [h.make_message("before"), b"", h.make_message("after")])
        r = probe(MAIN, box, ["select"], ["fetch", "1:3"])
        self.assertEqual(r.rows("EMPTY"), [["2"]])
        self.assertEqual([row[0] for row in r.rows("MESSAGE")], ["1", "3"])

    def test_envelope_without_body(self):
        box = "envelope"
        MAIN.append(box, h.make_message("env", headers=("Sender: Carol <carol@example.net>",)), create=True)
        r = probe(MAIN, box, ["select"], ["fetch", "1", "envelope", "nobody"], debug=1)
        row = r.row("MESSAGE")
        self.assertEqual(row[1], "0")
        self.assertEqual(row[-1], "carol@example.net")
        self.assertNotIn("BODY.PEEK[]", "\n".join(r.sent()))

    def test_large_message_literal_minus(self):
        box = "large"
        msg = h.make_message("large", size=300_000)
        uid = LITMINUS.append(box, msg, create=True)
        r = probe(LITMINUS, box, ["select"], ["fetch", str(uid)])
        self.assertEqual(r.row("MESSAGE")[1:3], [str(len(msg)), h.sha256_hex(msg)])


class Append(unittest.TestCase):
    def messages(self, tag, count, big_every=0):
        out = []
        flag_choices = [[], ["\\Seen"], ["\\Flagged", "$Work"], ["\\Seen", "\\Answered", "\\Recent"], ["\\Draft"]]
        for i in range(count):
            size = 6000 if big_every and i % big_every == 0 else None
            body = h.make_message(f"{tag} {i}", size=size)
            flags = flag_choices[i % len(flag_choices)]
            date = f"{(i % 28) + 1:02d}-Mar-20{10 + i % 10} 1{i % 10}:0{i % 6}:{i % 60:02d} +0{i % 9}00"
            out.append((body, flags, date))
        return out

    def append(self, store, box, messages, create=True, debug=1, ok=True):
        if create:
            store.create(box)
        lines = []
        for i, (body, flags, date) in enumerate(messages):
            path = T.file(f"{box}-{i}.eml", body)
            lines.append(f"{path}\t{' '.join(flags)}\t{date}")
        manifest = T.file(f"{box}.manifest", "\n".join(lines) + "\n")
        return probe(store, box, ["append", manifest], debug=debug, ok=ok)

    def verify(self, store, box, messages, uids):
        self.assertEqual(uids, sorted(uids))
        self.assertEqual(len(set(uids)), len(messages))
        stored = store.messages(box)
        dates = internaldates(store, box)
        self.assertEqual(set(stored), set(uids))
        for uid, (body, flags, date) in zip(uids, messages):
            got_flags, got_body = stored[uid]
            self.assertEqual(got_body, body, f"UID {uid}")
            self.assertEqual(norm_flags(got_flags), norm_flags(flags), f"UID {uid}")
            self.assertEqual(dates[uid], parse_date(date), f"UID {uid}")

    def test_multiappend_300(self):
        box = "multiappend"
        msgs = self.messages(box, 300)
        r = self.append(MAIN, box, msgs)
        uids = [int(u) for u in r.row("APPENDED")[0].split()]
        self.assertEqual(uids, list(range(1, 301)))
        batches = r.rows("BATCH")
        self.assertEqual([int(b[0]) for b in batches], [0, 128, 256])
        appends = [line for line in r.sent() if " APPEND " in line]
        self.assertEqual(len(appends), 3, "MULTIAPPEND batches of 128")
        self.assertNotIn("\\Recent", "\n".join(appends))
        self.assertNotRegex(r.err, r"S: \+ ", "LITERAL+ needs no continuation")
        self.verify(MAIN, box, msgs, uids)

    def test_literal_minus(self):
        box = "litminus"
        msgs = self.messages(box, 300, big_every=50)  # 6 messages > 4096 bytes
        r = self.append(LITMINUS, box, msgs)
        uids = [int(u) for u in r.row("APPENDED")[0].split()]
        self.assertEqual(len(uids), 300)
        # RFC 7888: {N+} up to 4096 bytes, a synchronizing {N} above it.
        self.assertEqual(len(re.findall(r"S: \+ ", r.err)), 6, r.describe())
        self.assertEqual(len(re.findall(r"\{6\d\d\d\}", r.err)), 6)
        self.verify(LITMINUS, box, msgs, uids)

    def test_single_appends_without_multiappend(self):
        box = "single"
        msgs = self.messages(box, 20)
        r = self.append(REDUCED, box, msgs)
        uids = [int(u) for u in r.row("APPENDED")[0].split()]
        self.assertEqual(len([line for line in r.sent() if " APPEND " in line]), 20)
        self.assertEqual(len(r.rows("BATCH")), 20)
        # Pipelined: the commands went out before the first answer came back.
        first_ok = r.err.find(" OK [APPENDUID")
        self.assertGreater(first_ok, 0)
        self.assertGreaterEqual(r.err[:first_ok].count(" APPEND "), 2, "APPENDs not pipelined")
        self.verify(REDUCED, box, msgs, uids)

    def test_trycreate(self):
        r = self.append(MAIN, "does-not-exist", self.messages("x", 2), create=False, ok=False)
        self.assertEqual(r.row("ERROR"), ["APPEND", "NO", "TRYCREATE"])
        self.assertRegex(error_of(r), r"local: does-not-exist: APPEND of messages #1-#2 failed: NO \[TRYCREATE\]")

    def test_empty_message_refused(self):
        box = "append-empty"
        MAIN.create(box)
        path = T.file("empty.eml", b"")
        manifest = T.file("empty.manifest", f"{path}\t\t\n")
        r = probe(MAIN, box, ["append", manifest], ok=False)
        self.assertRegex(error_of(r), r"local: append-empty: APPEND: message #1 is empty")


class Search(unittest.TestCase):
    def seed(self, store, box):
        old = [h.make_message(f"old {i}") for i in range(3)]
        new = [h.make_message(f"new {i}") for i in range(2)]
        store.create(box)
        for i, msg in enumerate(old):
            store.append(box, msg, date=946684800 + i * 86400)  # 2000-01-01
        for msg in new:
            store.append(box, msg)

    def test_esearch(self):
        self.seed(MAIN, "search")
        r = probe(MAIN, "search", ["select"], ["search", "UID", "1:5", "BEFORE", "1-Jan-2001"], debug=1)
        self.assertIn("UID SEARCH RETURN (ALL) UID 1:5 BEFORE 1-Jan-2001", "\n".join(r.sent()))
        self.assertEqual(r.row("SEARCH"), ["1:3"])
        r = probe(MAIN, "search", ["select"], ["search", "BEFORE", "1-Jan-1990"])
        self.assertEqual(r.row("SEARCH"), ["-"])

    def test_search_without_esearch(self):
        self.seed(REDUCED, "search")
        r = probe(REDUCED, "search", ["select"], ["search", "UID", "1:5", "BEFORE", "1-Jan-2001"], debug=1)
        self.assertNotIn("RETURN", "\n".join(r.sent()))
        self.assertEqual(r.row("SEARCH"), ["1:3"])


# A scripted server for contract violations: PREAUTH with QRESYNC, then
# answers by scenario.  Run as the tunnel command.
FAKE_SERVER = r'''
import sys
scenario = sys.argv[1]
out = sys.stdout.buffer
def send(s):
    out.write(s.encode() + b"\r\n"); out.flush()
send("* PREAUTH [CAPABILITY IMAP4rev1 ENABLE CONDSTORE QRESYNC UIDPLUS LITERAL+ UNSELECT] fake")
for raw in sys.stdin.buffer:
    line = raw.decode().rstrip("\r\n")
    tag, _, rest = line.partition(" ")
    verb = rest.split(" ")[0].upper()
    if verb == "ENABLE":
        send("* ENABLED QRESYNC")
    elif verb in ("SELECT", "EXAMINE"):
        send("* FLAGS (\\Seen)")
        send("* 3 EXISTS")
        if scenario != "nouidvalidity":
            send("* OK [UIDVALIDITY 7] ok")
        if scenario != "nouidnext":
            send("* OK [UIDNEXT 4] ok")
        send("* OK [NOMODSEQ] none" if scenario == "nomodseq" else "* OK [HIGHESTMODSEQ 9] ok")
    elif verb == "NOOP" and scenario == "expunge":
        send("* 2 EXPUNGE")
    elif verb == "LOGOUT":
        send("* BYE bye"); send(tag + " OK done"); break
    send(tag + " OK done")
'''


class BrokenServer(unittest.TestCase):
    def run_fake(self, scenario, *steps):
        script = T.file("fake_server.py", FAKE_SERVER)
        cfg = h.write_config(T, {"local": {"type": "tunnel", "command": f"{sys.executable} {script} {scenario}"}})
        return probe(cfg, "INBOX", *steps, ok=False)

    def test_nomodseq(self):
        r = self.run_fake("nomodseq", ["enable"], ["select"])
        self.assertRegex(error_of(r), r"local: INBOX: SELECT: the server sent NOMODSEQ although QRESYNC is enabled")

    def test_no_uidnext(self):
        r = self.run_fake("nouidnext", ["enable"], ["select"])
        self.assertRegex(error_of(r), r"local: INBOX: SELECT: the server sent no UIDNEXT although QRESYNC is enabled")

    def test_no_uidvalidity(self):
        r = self.run_fake("nouidvalidity", ["select"])
        self.assertRegex(error_of(r), r"local: INBOX: SELECT: the server sent no UIDVALIDITY")

    def test_expunge_under_qresync(self):
        r = self.run_fake("expunge", ["enable"], ["select"], ["noop"])
        self.assertRegex(error_of(r), r"local: INBOX: server sent EXPUNGE while QRESYNC is enabled, violating "
                                      r"RFC 7162 3.2.10")


if __name__ == "__main__":
    unittest.main(verbosity=2)
