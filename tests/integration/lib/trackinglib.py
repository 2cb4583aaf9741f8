"""Change tracking per side (issue 12): the scenarios of
test_sync_condstore.py and test_sync_plain.py, run against stores that
advertise a provider's capability list (harness.GMAIL_LIKE,
harness.M365_LIKE) with lib/capgate.py in every tunnel.

    SANITY       GATE_SELFTEST=1: every store keeps Dovecot's full list
                 (QRESYNC everywhere) and no mode is forced: the same
                 scenarios, through the same gates, must pass with today's
                 engine (the gate and the scenarios proven on their own)
    caps, forced, FORBID   what a test asks for, neutralised under SANITY
    Model        the expected end state, computed from the changes made
                 (never from interimap's output): messages by body
                 digest, flags, subscriptions; the conflict rules
    assert_cheap_noop  what a no-op run may send one side, by mode
    Scenarios    the TestCase mixin: first copy + no-op, two-sided changes
                 of every kind, SIGKILL mid-run then rerun; a subclass sets
                 LOCAL_CAPS / REMOTE_CAPS and the modes they imply
"""

import collections
import hashlib
import os
import random

import crashlib as cl
import harness as h
import synclib as s

SANITY = os.environ.get("GATE_SELFTEST", "") not in ("", "0")

# What a forced mode must not use even where the server advertises it.
FORBID = {"auto": (), "qresync": (), "condstore": ("QRESYNC",), "plain": ("QRESYNC", "CONDSTORE")}


def caps(lst):
    """A store's capability list: Dovecot's own under SANITY."""
    return None if SANITY else lst


def mode_of(lst):
    """The mode auto should pick for a store advertising lst (None: Dovecot's)."""
    if lst is None or SANITY:
        return "qresync"
    words = set(lst.split())
    return "qresync" if "QRESYNC" in words else "condstore" if "CONDSTORE" in words else "plain"


def forced(mode):
    """The section options forcing mode (none under SANITY: today's
    interimap refuses an unknown option)."""
    return {} if SANITY or mode == "auto" else {"change-tracking": mode}


def forbid(mode):
    return () if SANITY else FORBID[mode]


def sha(msg):
    return hashlib.sha256(msg).hexdigest()


def norm(flags):
    return frozenset(f for f in flags if f.lower() != "\\recent")


class Model:
    """What both sides of a Pair must hold after the next run.

    Changes go through the model, which makes them on the stores (h.Imap)
    and remembers them; expect() applies the rules and returns the
    expected contents, as Pair.check(expect=...) takes them:
      - a message new on one side is copied, with its flags;
      - flags changed on one side only: that side's;
      - flags changed on both sides (a conflict): the union of both;
      - expunged on either side: gone from both (even if the other side
        changed its flags);
      - subscribing or unsubscribing on one side: both.
    Mailbox names are the stores' ('/' on both sides)."""

    def __init__(self, pair):
        self.p = pair
        self.boxes = {}            # name -> {sha: frozenset(flags)} (both sides agree)
        self.subs = set()
        self._reset()

    def _reset(self):
        self.new = collections.defaultdict(list)       # name -> [(sha, flags)]
        self.changed = {"local": {}, "remote": {}}     # (name, sha) -> flags
        self.gone = set()                              # (name, sha)
        self.sub_changes = {}
        self._uids = {}

    # changes ----------------------------------------------------------------
    def add(self, side, name, msgs, subscribe=False):
        """Appends [(bytes, flags)] on side (CREATE first unless INBOX or known)."""
        store = self.p.local if side == "local" else self.p.remote
        with h.Imap(store) as m:
            if name.upper() != "INBOX" and name not in self.boxes and name not in self.new:
                m.create(name)
            for msg, flags in msgs:
                m.append(name, msg, flags)
                self.new[name].append((sha(msg), norm(flags)))
            if subscribe:
                m.subscribe(name)
                self.sub_changes[name] = True
        return [msg for msg, _ in msgs]

    def current(self, side, name, digest):
        return self.changed[side].get((name, digest), self.boxes[name][digest])

    def _uid(self, side, name, digest):
        key = (side, name)
        if key not in self._uids:
            snap = s.snapshot(self.p.local if side == "local" else self.p.remote, [name])[name]
            self._uids[key] = {d: uid for uid, (_, d) in snap.items()}
        return self._uids[key][digest]

    def flag(self, side, name, msg, op, flags):
        """UID STORE op (flags) on the message whose body is msg (bytes or digest)."""
        digest = msg if isinstance(msg, str) else sha(msg)
        cur = set(self.current(side, name, digest))
        flags = set(flags)
        new = cur | flags if op == "+FLAGS" else cur - flags if op == "-FLAGS" else flags
        store = self.p.local if side == "local" else self.p.remote
        with h.Imap(store) as m:
            m.flag(name, [self._uid(side, name, digest)], op, sorted(flags) or [])
        if frozenset(new) != self.boxes[name][digest] or (name, digest) in self.changed[side]:
            self.changed[side][(name, digest)] = frozenset(new)

    def expunge(self, side, name, msg):
        digest = msg if isinstance(msg, str) else sha(msg)
        store = self.p.local if side == "local" else self.p.remote
        with h.Imap(store) as m:
            m.expunge(name, [self._uid(side, name, digest)])
        self.gone.add((name, digest))

    def subscribe(self, side, name, on=True):
        store = self.p.local if side == "local" else self.p.remote
        with h.Imap(store) as m:
            m.subscribe(name, on)
        self.sub_changes[name] = on

    def messages(self, name):
        """The digests of a mailbox's messages (sorted: a stable order to pick from)."""
        return sorted(self.boxes.get(name, {}))

    # the end state -------------------------------------------------------------
    def expect(self):
        """Applies the pending changes to the model; returns
        {db name: Counter((flags, digest))}."""
        for name, msgs in self.new.items():
            box = self.boxes.setdefault(name, {})
            for digest, flags in msgs:
                box[digest] = flags
        for name, box in self.boxes.items():
            for digest in list(box):
                if (name, digest) in self.gone:
                    del box[digest]
                    continue
                lo = self.changed["local"].get((name, digest))
                re_ = self.changed["remote"].get((name, digest))
                lo = lo if lo != box[digest] else None
                re_ = re_ if re_ != box[digest] else None
                if lo is not None and re_ is not None:
                    box[digest] = lo | re_
                elif lo is not None or re_ is not None:
                    box[digest] = lo if lo is not None else re_
        for name, on in self.sub_changes.items():
            (self.subs.add if on else self.subs.discard)(name)
        self._reset()
        return self.expected()

    def expected(self):
        return {name.replace("/", "\0"): collections.Counter((tuple(sorted(fl)), d) for d, fl in box.items())
                for name, box in self.boxes.items()}

    def check(self, testcase=None):
        """Pair.check against the model, and the subscriptions."""
        out = self.p.check(expect=self.expected())
        subs = {n for n in s.subscribed(self.p.local)}
        if subs != self.subs:
            raise AssertionError(f"[{self.p.name}] subscriptions: local {sorted(subs)}, expected {sorted(self.subs)}")
        return out


# ---------------------------------------------------------------------------
# The cost of a no-op run

WRITES = {"APPEND", "STORE", "UID STORE", "EXPUNGE", "UID EXPUNGE", "MOVE", "UID MOVE", "COPY", "UID COPY",
          "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE"}


def assert_cheap_noop(gate, mark, mode, mailboxes):
    """What a no-op run sent gate's side, by that side's mode:
    nothing written anywhere; no message body fetched; qresync and
    condstore: no SELECT/EXAMINE and no FETCH at all (the STATUS of each
    mailbox did not move); plain: at most one SELECT/EXAMINE and one FETCH
    of UIDs and flags per mailbox (flags are only known by asking).
    Returns a one-line summary (commands, bytes)."""
    cmds = gate.commands(mark)
    conns = gate.connections(mark)
    summary = (f"{gate.side} ({mode}): {len(cmds)} commands, "
               f"{sum(c['up'] for c in conns)} bytes up, {sum(c['down'] for c in conns)} down: "
               + ", ".join(sorted({v for v, _ in cmds})))
    problems = [f"{v}: {c}" for v, c in cmds if v in WRITES]
    fetches = [c for v, c in cmds if v in ("FETCH", "UID FETCH")]
    selects = [c for v, c in cmds if v in ("SELECT", "EXAMINE")]
    problems += [f"a body fetched: {c}" for c in fetches if "BODY" in c.upper() or "RFC822" in c.upper()
                 or "BINARY" in c.upper()]
    if mode in ("qresync", "condstore"):
        problems += [f"SELECT/EXAMINE of an unchanged mailbox: {c}" for c in selects]
        problems += [f"FETCH in an unchanged mailbox: {c}" for c in fetches]
    else:
        if len(selects) > mailboxes:
            problems.append(f"{len(selects)} SELECT/EXAMINE for {mailboxes} mailboxes")
        if len(fetches) > mailboxes:
            problems.append(f"{len(fetches)} FETCHes for {mailboxes} mailboxes")
    if problems:
        raise AssertionError(f"a no-op run is not cheap on the {summary}\n  " + "\n  ".join(problems))
    s.log(f"no-op cost, {summary}")
    return summary


# ---------------------------------------------------------------------------
# The scenarios

class Scenarios:
    """A TestCase mixin.  The subclass sets LOCAL_CAPS, REMOTE_CAPS (a
    capability list, None for Dovecot's) and the script's setUpModule sets
    Scenarios.tdir."""

    tdir = None
    LOCAL_CAPS = None
    REMOTE_CAPS = None

    def pair(self, **kw):
        name = f"{type(self).__name__}-{self._testMethodName.replace('test_', '')}"
        p = s.Pair(self.tdir, name, local_caps=caps(self.LOCAL_CAPS), remote_caps=caps(self.REMOTE_CAPS), **kw)
        p.gate("local")
        p.gate("remote")
        return p

    def sync(self, p, what):
        marks = {side: g.mark() for side, g in p.gates.items()}
        r = p.run()
        p.assert_gates_clean(f"during {what}")
        if r.rc != 0:
            raise AssertionError(f"{what}: interimap failed\n" + r.describe())
        for side, g in p.gates.items():  # the gate really is in the tunnel
            self.assertTrue(g.commands(marks[side]), f"{what}: no command went through the {side} gate")
        return r

    def noop(self, p, model, what="a no-op run"):
        marks = {side: g.mark() for side, g in p.gates.items()}
        problems = cl.no_op(p)
        p.assert_gates_clean(f"during {what}")
        self.assertEqual(problems, [], f"{what} changed something")
        n = max(len(model.boxes), len(s.db_names(p)))  # parents (a of a/b) may be mailboxes too
        for side, g in p.gates.items():
            self.assertTrue(g.commands(marks[side]), f"{what}: no command went through the {side} gate")
            assert_cheap_noop(g, marks[side], mode_of(self.LOCAL_CAPS if side == "local" else self.REMOTE_CAPS), n)

    def test_first_copy_and_noop(self):
        p = self.pair()
        m = Model(p)
        m.add("local", "INBOX", s.msgs("li", 10, lambda i: [["\\Seen"], ["\\Flagged", "$Work"], []][i % 3]))
        m.add("local", "Sent", s.msgs("ls", 4, ["\\Seen", "\\Answered"]), subscribe=True)
        m.add("local", "a/b", s.msgs("lab", 3, ["$Label1"]))
        m.add("remote", "INBOX", s.msgs("ri", 8, lambda i: ["\\Draft"] if i == 2 else []))
        m.add("remote", "Archive/2024", s.msgs("ra", 6, ["\\Seen"]), subscribe=True)
        m.expect()
        self.sync(p, "the first copy")
        m.check()
        self.noop(p, m)
        self.noop(p, m, "a second no-op run")

    def test_two_sided_changes(self):
        p = self.pair()
        m = Model(p)
        inbox = m.add("local", "INBOX", s.msgs("in", 14, lambda i: ["\\Seen", "$Old"] if i in (2, 4, 6) else []))
        box = m.add("remote", "Box", s.msgs("box", 6, ["\\Seen"]))
        m.subscribe("local", "INBOX")
        m.expect()
        self.sync(p, "the first copy")
        m.check()
        # new messages on both sides, in an existing mailbox
        m.add("local", "INBOX", s.msgs("newl", 4, lambda i: ["\\Seen"] if i % 2 else []))
        m.add("remote", "INBOX", s.msgs("newr", 3, ["$New"]))
        m.add("remote", "Box", s.msgs("newbox", 2))
        # flags and keywords added and removed, on one side each
        m.flag("local", "INBOX", inbox[0], "+FLAGS", ["\\Flagged", "$Work"])
        m.flag("local", "INBOX", inbox[1], "+FLAGS", ["\\Answered"])
        m.flag("local", "INBOX", inbox[2], "-FLAGS", ["\\Seen"])
        m.flag("remote", "INBOX", inbox[3], "+FLAGS", ["\\Seen", "$Remote"])
        m.flag("remote", "INBOX", inbox[4], "-FLAGS", ["$Old"])
        # conflicting changes: the union
        m.flag("local", "INBOX", inbox[5], "FLAGS", ["\\Seen", "\\Flagged", "$L"])
        m.flag("remote", "INBOX", inbox[5], "FLAGS", ["\\Answered", "$R"])
        m.flag("local", "INBOX", inbox[6], "-FLAGS", ["\\Seen"])
        m.flag("remote", "INBOX", inbox[6], "+FLAGS", ["\\Flagged"])
        # expunges on either side, and on both
        m.expunge("local", "INBOX", inbox[7])
        m.expunge("remote", "INBOX", inbox[8])
        m.expunge("local", "INBOX", inbox[9])
        m.expunge("remote", "INBOX", inbox[9])
        # expunged on one side, flags changed on the other: the expunge wins
        m.expunge("local", "INBOX", inbox[10])
        m.flag("remote", "INBOX", inbox[10], "+FLAGS", ["\\Flagged"])
        m.flag("local", "INBOX", inbox[11], "+FLAGS", ["$Keep"])
        m.expunge("remote", "INBOX", inbox[11])
        m.expunge("remote", "Box", box[0])
        m.flag("local", "Box", box[1], "-FLAGS", ["\\Seen"])
        # new mailboxes on both sides; subscriptions both ways
        m.add("local", "New/Local", s.msgs("nl", 2), subscribe=True)
        m.add("remote", "NewRemote", s.msgs("nr", 2, ["\\Seen"]))
        m.subscribe("remote", "Box")
        m.subscribe("remote", "INBOX", on=False)
        m.expect()
        self.sync(p, "the run after changes on both sides")
        l, _, _ = m.check()
        # the model's rules, spelled out for the conflicts
        self.assertEqual(l["INBOX"][next(u for u, (_, d) in l["INBOX"].items() if d == sha(inbox[5]))][0],
                         ("$L", "$R", "\\Answered", "\\Flagged", "\\Seen"))
        self.assertNotIn(sha(inbox[10]), {d for _, d in l["INBOX"].values()})
        self.noop(p, m, "the no-op run after the changes")

    def test_killed_mid_run(self):
        rng = random.Random(cl.SEED)
        p = self.pair()
        m = Model(p)
        inbox = m.add("local", "INBOX", cl.msgs("li", 120, lambda i: ["\\Seen"] if i % 3 else ["\\Flagged", "$K"]))
        m.add("local", "L/sub", cl.msgs("ls", 20), subscribe=True)
        r_box = m.add("remote", "R", cl.msgs("rr", 120, lambda i: ["\\Answered"] if i % 4 == 0 else []))
        m.expect()
        initial = cl.stored_messages(p)
        outcomes = []
        for extra in (40, 130):
            outcome = cl.run_killed_at(p, initial + extra)
            outcomes.append(outcome[0])
            p.assert_gates_clean("during a killed first copy")
            if outcome[0] == "exited":
                self.assertEqual(outcome[1], 0, f"the first copy failed:\n{outcome[2]}")
                break
        s.log(f"first copy: {outcomes}")
        self.sync(p, "the rerun after a killed first copy")
        m.check()
        # an incremental run killed at random points, changes of every kind
        for d in inbox[:30]:
            m.flag("local", "INBOX", d, "+FLAGS", ["\\Flagged", "$Crash"])
        for d in inbox[30:40]:
            m.flag("local", "INBOX", d, "-FLAGS", ["\\Seen"])
        for d in inbox[40:50]:
            m.expunge("local", "INBOX", d)
        for d in inbox[50:55]:  # conflicts
            m.flag("remote", "INBOX", d, "+FLAGS", ["$Other"])
        for d in inbox[55:60]:  # expunge against a flag change
            m.flag("remote", "INBOX", d, "+FLAGS", ["\\Answered"])
            m.expunge("local", "INBOX", d)
        for d in r_box[::6]:
            m.expunge("remote", "R", d)
        for d in r_box[1::6]:
            m.flag("remote", "R", d, "+FLAGS", ["\\Seen"])
        m.add("local", "INBOX", cl.msgs("li-new", 40))
        m.add("remote", "R", cl.msgs("rr-new", 40, lambda i: ["\\Seen"]))
        m.expect()
        outcomes = []
        for _ in range(3):
            delay = rng.uniform(0.03, 0.4)
            outcome = cl.run_killed(p, delay)
            outcomes.append(f"{outcome[0]}@{delay:.2f}s")
            p.assert_gates_clean("during a killed incremental run")
            if outcome[0] == "exited":
                self.assertEqual(outcome[1], 0, f"the incremental run failed:\n{outcome[2]}")
                break
        s.log(f"incremental: {', '.join(outcomes)} (SYNC_SEED={cl.SEED})")
        self.sync(p, "the rerun after a killed incremental run")
        m.check()
        self.noop(p, m, "the no-op run after the reruns")
