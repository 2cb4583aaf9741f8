#!/usr/bin/env python3
"""interimap --dry-run ($INTERIMAP, issue 15) between two throwaway Dovecot
stores, both reached through lib/capgate.py, which logs every command.

Each scenario sets up a state, then:
 1. runs `interimap --dry-run ARGS` and checks that nothing changed: both
    stores' snapshots (every mailbox's STATUS UIDVALIDITY, UIDNEXT,
    HIGHESTMODSEQ, MESSAGES, every message's UID, flags and body digest,
    the LIST and the subscriptions), the database file's bytes and mtime
    (or its absence), no DATABASE-appends file; the gates saw no command
    that writes (no SELECT, STORE, EXPUNGE, APPEND, CREATE, DELETE,
    RENAME, SUBSCRIBE, UNSUBSCRIBE, COPY, MOVE) and an EXAMINE wherever
    a mailbox was read; every line of its stderr starts with
    "(dry run) ";
 2. runs `interimap ARGS` for real, and checks that
    - the dry run's engine lines (the marker removed; the "IMAP traffic"
      lines and the summary left out) are the real run's lines;
    - the dry run's summary ("would append N message(s) (B bytes)",
      "would add flag F to N message(s): UID ...", "would remove flag",
      "would expunge", "would create mailbox", "would subscribe to",
      "would unsubscribe from", "would delete mailbox", "would rename
      mailbox") is exactly the difference between the stores before and
      after the real run (bytes: the sizes of the new messages);
    - "database: would be created / updated" iff the real run created the
      file or changed its content;
    - the exit status: 3 when the summary is not empty, 0 otherwise;
 3. a dry run after the real run: "nothing to do", exit 0 (unless the
    scenario leaves something, e.g. a refusal).

Scenarios: a first sync (no database yet; mailboxes new on either side,
nested, subscribed); 300 new messages and a 1.5 MB one (several APPEND
batches on both sides at once); incremental changes of every kind on both sides
(new messages, flags added and removed, expunges, a conflict) with QRESYNC
on both sides, and again with a remote forced to plain, a Gmail-like
(CONDSTORE alone) and a Microsoft-365-like one (neither); new mailboxes on either side
and subscription changes; a database-only change; a mailbox deleted on
one side (the run's refusal is the same, then --delete); --delete;
--rename; --repair (a lost mapping, a flag change); an interrupted run
(pending-append row and append journal: recovery pairs two copies and
expunges one whose source is gone; the journal stays until the real run);
a locked database; a dry run stopped by SIGTERM (exit 1, not "nothing to
do"); --dry-run with --watch or --notify refused.
"""

import collections
import hashlib
import os
import re
import sqlite3
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import synclib as s  # noqa: E402

T = None
MARK = "(dry run) "
WRITES = {"SELECT", "STORE", "UID STORE", "EXPUNGE", "UID EXPUNGE", "APPEND", "CREATE", "DELETE", "RENAME",
          "SUBSCRIBE", "UNSUBSCRIBE", "COPY", "UID COPY", "MOVE", "UID MOVE", "SETMETADATA", "SETACL"}
SUMMARY = re.compile(r"^(local|remote)(?:\((.*)\))?: would (.*)$")


def setUpModule():
    global T
    T = h.TestDir("iit-sync-dryrun-")


# ---------------------------------------------------------------------------
# Snapshots

def store_state(store):
    """Everything a client can see of a store: {'list': sorted names,
    'subscribed': sorted names, name: (status, {uid: (flags, sha, size)})}."""
    out = {}
    with h.Imap(store) as m:
        names = sorted(n for n, _, fl in m.list() if not {"\\noselect", "\\nonexistent"} & {f.lower() for f in fl})
        out["list"] = names
        out["subscribed"] = sorted(n for n, _, fl in m.lsub() if "\\noselect" not in {f.lower() for f in fl})
        for name in names:
            status = m.status(name)
            msgs = {uid: (tuple(sorted(f for f in fl if f.lower() != "\\recent")), hashlib.sha256(body).hexdigest(),
                          len(body))
                    for uid, (fl, body) in m.messages(name).items()}
            out[name] = (status, msgs)
    return out


def db_file(path):
    """(bytes, mtime_ns) of the database, or None when absent."""
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return f.read(), os.stat(path).st_mtime_ns


def db_content(path):
    """Every table's rows (sorted) and user_version, or None when absent."""
    if not os.path.exists(path):
        return None
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = {"user_version": con.execute("PRAGMA user_version").fetchone()[0]}
        for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall():
            out[t] = sorted(con.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
        return out
    finally:
        con.close()


def uidset(text):
    out = set()
    for part in text.split(","):
        a, _, b = part.partition(":")
        lo, hi = sorted((int(a), int(b or a)))
        out.update(range(lo, hi + 1))
    return out


def expected_summary(before, after):
    """The summary a dry run must print for a real run that took the stores
    from `before` to `after`: {(side, mailbox or ''): [entries]}, each entry
    a comparable tuple."""
    out = collections.defaultdict(list)
    for side in ("local", "remote"):
        b, a = before[side], after[side]
        for name in sorted(set(a["list"]) - set(b["list"])):
            out[(side, "")].append(("create", name))
        for name in sorted(set(b["list"]) - set(a["list"])):
            out[(side, "")].append(("delete", name))
        for name in sorted(set(a["subscribed"]) - set(b["subscribed"])):
            out[(side, "")].append(("subscribe", name))
        for name in sorted(set(b["subscribed"]) - set(a["subscribed"])):
            out[(side, "")].append(("unsubscribe", name))
        for name in a["list"]:
            new = a[name][1]
            old = b[name][1] if name in b else {}
            fresh = sorted(set(new) - set(old))
            if fresh:
                out[(side, name)].append(("append", len(fresh), sum(new[u][2] for u in fresh)))
            gone = set(old) - set(new)
            if gone:
                out[(side, name)].append(("expunge", frozenset(gone)))
            added, removed = collections.defaultdict(set), collections.defaultdict(set)
            for uid in set(old) & set(new):
                for f in set(new[uid][0]) - set(old[uid][0]):
                    added[f].add(uid)
                for f in set(old[uid][0]) - set(new[uid][0]):
                    removed[f].add(uid)
            for f, uids in added.items():
                out[(side, name)].append(("add", f, frozenset(uids)))
            for f, uids in removed.items():
                out[(side, name)].append(("remove", f, frozenset(uids)))
    return {k: sorted(v, key=repr) for k, v in out.items()}


def parse_summary(lines):
    out = collections.defaultdict(list)
    for line in lines:
        m = SUMMARY.match(line)
        assert m, f"not a summary line: {line!r}"
        side, mailbox, what = m.group(1), m.group(2) or "", m.group(3)
        if mm := re.fullmatch(r"append (\d+) message\(s\) \((\d+) bytes\)", what):
            entry = ("append", int(mm.group(1)), int(mm.group(2)))
        elif mm := re.fullmatch(r"expunge (\d+) message\(s\): UID (\S+)", what):
            entry = ("expunge", frozenset(uidset(mm.group(2))))
            assert len(entry[1]) == int(mm.group(1)), line
        elif mm := re.fullmatch(r"(add|remove) flag (\S+) (?:to|from) (\d+) message\(s\): UID (\S+)", what):
            entry = (mm.group(1), mm.group(2), frozenset(uidset(mm.group(4))))
            assert len(entry[2]) == int(mm.group(3)), line
        elif mm := re.fullmatch(r"(create|delete) mailbox (.+)", what):
            entry = (mm.group(1), mm.group(2))
        elif mm := re.fullmatch(r"subscribe to (.+)", what):
            entry = ("subscribe", mm.group(1))
        elif mm := re.fullmatch(r"unsubscribe from (.+)", what):
            entry = ("unsubscribe", mm.group(1))
        elif mm := re.fullmatch(r"rename mailbox (.+) to (.+)", what):
            entry = ("rename", mm.group(1), mm.group(2))
        else:
            raise AssertionError(f"unknown summary line: {line!r}")
        out[(side, mailbox)].append(entry)
    return {k: sorted(v, key=repr) for k, v in out.items()}


def engine_lines(stderr):
    """The lines of a run that say what it did: no traffic line."""
    return [line for line in stderr.splitlines() if "IMAP traffic (bytes)" not in line]


class DryRun(unittest.TestCase):
    def pair(self, **kw):
        p = s.Pair(T, self._testMethodName.replace("test_", ""), **kw)
        self.gates = {side: p.gate(side) for side in ("local", "remote")}
        return p

    def synced(self, **kw):
        p = self.pair(**kw)
        p.seed("local", {"INBOX": s.msgs("li", 6, lambda i: ["\\Seen"] if i % 2 else []),
                         "Box": s.msgs("lb", 3, ["$Label1"])})
        p.seed("remote", {"INBOX": s.msgs("ri", 6, lambda i: ["\\Flagged"] if i % 3 == 0 else [])}, create=False)
        p.sync()
        p.check()
        return p

    def state(self, p):
        return {"local": store_state(p.local), "remote": store_state(p.remote)}

    def dry(self, p, *args):
        """A dry run that must change nothing; returns (rc, engine lines
        without the marker, summary lines, database line or None)."""
        before = self.state(p)
        db_before = db_file(p.db)
        journal_before = db_file(p.db + "-appends")
        marks = {side: g.mark() for side, g in self.gates.items()}
        r = p.run("--dry-run", *args)
        self.assertIn(r.rc, (0, 1, 3), r.describe())
        self.assertEqual(before, self.state(p), "a store changed during the dry run\n" + r.describe())
        self.assertEqual(db_before, db_file(p.db), "the database file changed (bytes or mtime)")
        self.assertEqual(journal_before, db_file(p.db + "-appends"), "the dry run touched the append journal")
        self.assertFalse(os.path.exists(p.db + "-journal"), "the dry run left an SQLite journal")
        self.verbs = {}
        for side, g in self.gates.items():
            sent = g.commands(marks[side])
            self.assertTrue(sent, f"{side}: no command logged")
            writes = [c for verb, c in sent if verb in WRITES]
            self.assertEqual(writes, [], f"{side}: the dry run sent commands that write")
            self.verbs[side] = {verb for verb, _ in sent}
        g_lines = r.err.splitlines()
        for line in g_lines:
            self.assertTrue(line.startswith(MARK), f"a dry run line without the marker: {line!r}")
        lines = [line[len(MARK):] for line in g_lines]
        summary = [x for x in lines if SUMMARY.match(x)]
        db_lines = [x for x in lines if x.startswith("database: would be ")]
        last = [x for x in lines if x.startswith("dry run: ")]
        rest = [x for x in engine_lines("\n".join(lines)) if x not in summary + db_lines + last]
        if r.rc in (0, 3):
            self.assertEqual(len(last), 1, r.describe())
            self.assertEqual(last[0], "dry run: nothing to do" if r.rc == 0 else "dry run: changes pending, none made")
            self.assertEqual(r.rc == 3, bool(summary or db_lines), r.describe())
        return r, rest, summary, db_lines

    def dry_then_real(self, p, *args, expect_rc=3, real_rc=0):
        """The dry run, then the real run; checks that the plan is what the
        real run does.  Returns the real run's Result."""
        before = self.state(p)
        content_before = db_content(p.db)
        r, planned, summary, db_lines = self.dry(p, *args)
        self.assertEqual(r.rc, expect_rc, r.describe())
        real = p.run(*args)
        self.assertEqual(real.rc, real_rc, real.describe())
        after = self.state(p)
        self.assertEqual(sorted(planned), sorted(engine_lines(real.err)),
                         "the dry run's lines are not the real run's\n--- dry\n" + r.err + "--- real\n" + real.err)
        if "--rename" not in args:
            self.assertEqual(parse_summary(summary), expected_summary(before, after),
                             "the summary is not what the real run did\n" + r.err)
        content_after = db_content(p.db)
        if content_before is None:
            expect_db = ["database: would be created: " + p.db] if content_after is not None else []
        else:
            expect_db = ["database: would be updated: " + p.db] if content_after != content_before else []
        self.assertEqual(db_lines, expect_db, r.err)
        for g in self.gates.values():
            g.assert_clean("(capabilities)")
        h.log(f"dry run: {len(planned)} engine line(s), {len(summary)} summary line(s) {db_lines}; "
              f"real run: {len(engine_lines(real.err))} line(s)")
        return real, r, summary

    def nothing_left(self, p, *args):
        r, planned, summary, db_lines = self.dry(p, *args)
        self.assertEqual((r.rc, summary, db_lines), (0, [], []), r.describe())

    # ------------------------------------------------------------------
    def test_first_sync(self):
        p = self.pair()
        p.seed("local", {"INBOX": s.msgs("a", 7, lambda i: ["\\Seen", "\\Flagged"][: i % 3]),
                         "Sent": s.msgs("b", 3, ["\\Answered", "$Label1"]), "lists\0dev": s.msgs("c", 2)})
        p.seed("remote", {"INBOX": s.msgs("r", 4), "Archive": s.msgs("d", 5, ["\\Seen"]), "Empty": []},
               create=True)
        with h.Imap(p.remote) as m:
            m.subscribe("Archive")
        _, dry, summary = self.dry_then_real(p)
        self.assertIn("local: would create mailbox Archive", summary)
        self.assertIn("local: would subscribe to Archive", summary)
        self.assertTrue(any(x.startswith("remote(lists/dev): would append 2 message(s)") for x in summary), summary)
        p.check()
        self.nothing_left(p)

    def test_many_messages(self):
        # Several APPEND batches (128 messages or 1 MiB each) on both sides at
        # once, a large message alone in its batch: the UIDs the dry run
        # hands out are those the servers then give.
        p = self.synced()
        p.seed("remote", {"INBOX": s.msgs("many", 300)}, create=False)
        p.seed("local", {"Box": s.msgs("big", 3, size=lambda i: 1_500_000 if i == 1 else None)}, create=False)
        _, _, summary = self.dry_then_real(p)
        self.assertIn("local(INBOX): would append 300 message(s)", " ".join(summary))
        p.check()
        self.nothing_left(p)

    def incremental(self, **kw):
        p = self.synced(**kw)
        with h.Imap(p.local) as m:
            m.append("INBOX", s.message("ln", 1), ["\\Seen"])
            m.append("INBOX", s.message("ln", 2, size=3000))
            m.append("Box", s.message("lb-new", 1), [])
            uids = m.uids("INBOX")
            m.flag("INBOX", [uids[0]], "+FLAGS", ["\\Answered", "$Work"])
            m.flag("INBOX", [uids[1]], "-FLAGS", ["\\Seen"])
            m.flag("INBOX", [uids[2]], "+FLAGS", ["\\Flagged"])  # conflict below
            m.expunge("INBOX", [uids[3]])
        with h.Imap(p.remote) as m:
            m.append("INBOX", s.message("rn", 1, size=5000), ["\\Draft"])
            uids = m.uids("INBOX")
            m.flag("INBOX", [uids[2]], "+FLAGS", ["\\Deleted"])  # the conflicting pair
            m.flag("INBOX", [uids[-2]], "-FLAGS", ["\\Flagged"])
            m.expunge("INBOX", [uids[5]])
            buids = m.uids("Box")
            m.expunge("Box", [buids[0]])
        self.dry_then_real(p)
        for side in ("local", "remote"):
            self.assertIn("EXAMINE", self.verbs[side])
        p.check()
        self.nothing_left(p)

    def test_incremental_qresync(self):
        self.incremental()

    def test_incremental_plain_remote(self):
        self.incremental(remote_opts={"change-tracking": "plain"})

    def test_incremental_gmail_like_remote(self):
        # CONDSTORE without QRESYNC (its tracker reads the copies' MODSEQs
        # again at the end), through the gate with Gmail's capabilities.
        self.incremental(remote_caps=h.GMAIL_LIKE)

    def test_incremental_m365_like_remote(self):
        # Neither (plain), no LIST-STATUS, no MULTIAPPEND, no ENABLE.
        self.incremental(remote_caps=h.M365_LIKE)

    def test_new_mailboxes_and_subscriptions(self):
        p = self.synced()
        p.seed("local", {"Lnew": s.msgs("ln", 2), "Box\0kid": s.msgs("kid", 1, ["\\Seen"])})
        p.seed("remote", {"Rnew": []})
        with h.Imap(p.local) as m:
            m.subscribe("Box")
        with h.Imap(p.remote) as m:
            m.subscribe("Rnew")
        _, _, summary = self.dry_then_real(p)
        self.assertIn("remote: would create mailbox Lnew", summary)
        self.assertIn("local: would create mailbox Rnew", summary)
        p.check()
        self.nothing_left(p)

    def test_database_only(self):
        # Subscribed on both sides alike: only the database's record changes.
        p = self.synced()
        for store in (p.local, p.remote):
            with h.Imap(store) as m:
                m.subscribe("Box")
        _, _, summary = self.dry_then_real(p)
        self.assertEqual(summary, [])
        self.nothing_left(p)

    def test_mailbox_deleted_then_delete(self):
        p = self.synced()
        with h.Imap(p.remote) as m:
            m.delete("Box")
        # The real run refuses (a known mailbox on one side only): so does the dry run.
        real, dry, _ = self.dry_then_real(p, expect_rc=1, real_rc=1)
        self.assertIn("--target=database --delete Box", dry.err)
        self.dry_then_real(p, "--delete", "Box")
        self.nothing_left(p)

    def test_delete(self):
        p = self.synced()
        # --quiet: the engine's informational lines go (its notices stay,
        # as the reference's msg()), the summary stays.
        r, planned, summary, db_lines = self.dry(p, "--quiet", "--delete", "Box")
        self.assertEqual((r.rc, planned), (3, ["database: Removed mailbox Box"]), r.describe())
        self.assertEqual(sorted(summary), ["local: would delete mailbox Box", "remote: would delete mailbox Box"])
        self.assertEqual(db_lines, ["database: would be updated: " + p.db])
        _, _, summary = self.dry_then_real(p, "--delete", "Box")
        self.assertEqual(sorted(summary), ["local: would delete mailbox Box", "remote: would delete mailbox Box"])
        self.nothing_left(p)

    def test_rename(self):
        p = self.synced()
        before = self.state(p)
        _, _, summary = self.dry_then_real(p, "--rename", "Box", "Renamed")
        self.assertEqual(sorted(summary), ["local: would rename mailbox Box to Renamed",
                                           "remote: would rename mailbox Box to Renamed"])
        after = self.state(p)
        for side in ("local", "remote"):
            self.assertIn("Box", before[side]["list"])
            self.assertEqual(before[side]["Box"][1], after[side]["Renamed"][1])
        self.nothing_left(p)

    def test_repair(self):
        p = self.synced()
        db = s.read_db(p.db)
        idx = next(i for i, (name, _) in db["mailboxes"].items() if name == "INBOX")
        lost = sorted(db["mapping"][idx])[1]
        # A mapping lost (its two messages look new to --repair: copied
        # again both ways) and a flag change on one side.
        s.db_execute(p.db, ("DELETE FROM mapping WHERE idx = ? AND lUID = ?", (idx, lost[0])))
        with h.Imap(p.local) as m:
            m.flag("INBOX", [sorted(db["mapping"][idx])[3][0]], "+FLAGS", ["\\Seen", "$Repair"])
        _, dry, _ = self.dry_then_real(p, "--repair")
        self.assertIn("Redownloading", dry.err)
        p.check(allow_duplicates=True)
        self.nothing_left(p, "--repair")

    def test_interrupted_run(self):
        # The state a run leaves when killed between the target's execution
        # of an APPEND and the commit of its mappings (test_sync_recover
        # makes it with a real kill): three new remote messages copied to
        # local, the database as before the copy plus the pending-append
        # row, the append journal naming the copies; then the source of the
        # second one is expunged.  The next run pairs two copies and
        # expunges the third: so must the dry run say, and leave the
        # journal and the row for the real run.
        p = self.synced()
        old_next = p.local.status("INBOX")["UIDNEXT"]
        with open(p.db, "rb") as f:
            saved = f.read()
        with h.Imap(p.remote) as m:
            for i in range(3):
                m.append("INBOX", s.message("crash", i), ["\\Seen"] if i == 0 else [])
            ruids = m.uids("INBOX")[-3:]
            bodies = m.messages("INBOX")
        p.sync()
        with open(p.db, "wb") as f:
            f.write(saved)
        idx = next(i for i, (name, _) in s.read_db(p.db)["mailboxes"].items() if name == "INBOX")
        s.db_execute(p.db, ("INSERT INTO interimap_pending_append (idx, side, UIDNEXT) VALUES (?, 0, ?)",
                            (idx, old_next)))
        with open(p.db + "-appends", "w") as f:
            for uid in ruids:
                flags = " ".join(sorted(bodies[uid][0]))
                f.write(f"{idx} 0 {old_next} {uid} {hashlib.sha256(bodies[uid][1]).hexdigest()}"
                        f"{' ' + flags if flags else ''}\n")
        with h.Imap(p.remote) as m:
            m.expunge("INBOX", [ruids[1]])
        _, dry, summary = self.dry_then_real(p)
        self.assertIn("Recovered 2 message(s)", dry.err)
        self.assertEqual(summary, [f"local(INBOX): would expunge 1 message(s): UID {old_next + 1}"])
        self.assertFalse(os.path.exists(p.db + "-appends"))
        p.check()
        self.nothing_left(p)

    def test_locked_database(self):
        p = self.synced()
        # Read before the lock: closing any descriptor of the file would
        # drop this process's POSIX locks, SQLite's included.
        before = db_file(p.db)
        con = sqlite3.connect(p.db)
        con.execute("PRAGMA locking_mode = EXCLUSIVE")
        con.execute("BEGIN EXCLUSIVE")
        try:
            r = p.run("--dry-run")
            s.assert_fails(r, r"database is locked by another process")
            self.assertEqual(r.rc, 1)
        finally:
            con.rollback()
            con.close()
        self.assertEqual(before, db_file(p.db))
        self.nothing_left(p)

    def test_stopped_by_a_signal(self):
        # SIGTERM while the local tunnel is still starting: the run stops
        # before its pass, so the dry run saw nothing; it must not say
        # "nothing to do" (exit 0) but exit 1, its plan incomplete.
        p = self.synced()
        with h.Imap(p.remote) as m:
            m.append("INBOX", s.message("late", 1))
        p.write_config(local_command=f"sleep 2; {p.local.command} 2>>{p.local.log_path}")
        before = self.state(p)
        proc = p.spawn("--dry-run")
        time.sleep(0.5)  # its signal handlers are in place; the tunnel sleeps
        proc.terminate()
        _, err = proc.communicate(timeout=60)
        err = err.decode("utf-8", "replace")
        self.assertEqual(proc.returncode, 1, err)
        self.assertIn("(dry run) ERROR: dry run stopped by a signal: the plan above is incomplete", err)
        self.assertNotIn("dry run: nothing to do", err)
        self.assertEqual(before, self.state(p))

    def test_refusals(self):
        p = self.synced()
        for args in (["--dry-run", "--watch"], ["--dry-run", "--notify"]):
            r = p.run(*args)
            self.assertEqual(r.rc, 1, r.describe())
            self.assertIn("Usage:", r.err)


if __name__ == "__main__":
    s.main(globals())
