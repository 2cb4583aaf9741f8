"""What should exist after a synchronization, kept in Python
(test_sync_kill_loop.py, test_sync_differential.py).

    Model       {mailbox (database name): {body digest: flags}}: the
                messages created (on either side), minus the expunged
                ones (on either side: the other copy is expected gone
                too), with their flags after the flag changes: the side
                that changed a message wins; changed on both sides since
                the last synchronization: the union of both (the
                reference's rule, test_sync_basic's test_conflict_union).
                A STORE that changes nothing is no change (Dovecot keeps
                the MODSEQ).
    plan        random changes (ops) made from the model alone, so that
                the same ops apply to several pairs: new messages on
                either side, flag changes (+FLAGS, -FLAGS, FLAGS) on
                either side or both (a conflict), expunges on either side
    apply       makes the ops on a pair's stores (h.Imap), finding the
                messages by digest
    Model.update  the model after the ops

Ambiguous cases are never planned: a message synchronized before the
epoch (model.begin_epoch()) is changed once per epoch (on one side, or on
both at once); a message created during the epoch is changed only on the
side that created it (its copy on the other side may not be mapped yet,
after an interruption), once.  So the expected end state does not depend
on how far an interrupted run got.
"""

import collections
import hashlib

import harness as h
import synclib as s

FLAGS = ["\\Seen", "\\Flagged", "\\Answered", "\\Draft", "$Work", "$Later"]


def digest(msg):
    return hashlib.sha256(msg).hexdigest()


class Model:
    def __init__(self):
        self.boxes = {}       # dbname -> {digest: frozenset(flags)}
        self.settled = set()  # (dbname, digest) synchronized before this epoch, not touched since
        self.fresh = {}       # (dbname, digest) -> side: created this epoch, not touched since
        self.new_boxes = {}   # dbname -> side: created this epoch (on that side only, maybe)
        self.counter = 0

    def begin_epoch(self):
        """All messages are synchronized now: each may change once."""
        self.settled = {(mb, d) for mb, msgs in self.boxes.items() for d in msgs}
        self.fresh = {}
        self.new_boxes = {}

    def expect(self):
        """{dbname: Counter((sorted flags), digest)} as synclib.Pair.check takes it."""
        return {mb: collections.Counter((tuple(sorted(fl)), d) for d, fl in msgs.items())
                for mb, msgs in self.boxes.items()}

    def new_message(self, tag):
        self.counter += 1
        return s.message(f"{tag} {self.counter}", self.counter, size=300 + 37 * (self.counter % 40))

    # ---------------------------------------------------------------------
    def plan(self, rng, new=(0, 12), changes=(0, 10), big=0.0, new_box=0.0, sides=("local", "remote"),
             tag="m"):
        """Random ops from the model (not from the stores):
            ("new", side, dbname, message bytes, flags)
            ("flag", dbname, digest, {side: (op, flags)})   op: +FLAGS, -FLAGS, FLAGS
            ("expunge", side, dbname, digest)
            ("create", side, dbname)
        new: how many new messages per side (a range); big: the chance of
        130 more on one side (beyond one MULTIAPPEND); new_box: the chance
        of a new mailbox on one side; changes: flag changes and expunges."""
        ops = []
        # a mailbox created this epoch gets messages from its side only
        boxes = {side: sorted(b for b in self.boxes if self.new_boxes.get(b, side) == side) for side in sides}
        if rng.random() < new_box:
            side = rng.choice(sides)
            name = f"New{self.counter + 1}"
            if rng.random() < 0.5:
                name = f"Nest\0{name}"
            ops.append(("create", side, name))
            boxes[side].append(name)  # its messages come from that side
        for side in sides:
            n = rng.randint(*new)
            if rng.random() < big:
                n += 130
            for _ in range(n):
                mb = rng.choice(boxes[side]) if rng.random() < 0.5 else boxes[side][0]
                flags = sorted(set(rng.sample(FLAGS, rng.randint(0, 2))))
                ops.append(("new", side, mb, self.new_message(f"{tag}-{side}"), flags))
        settled = sorted(self.settled)
        fresh = sorted(self.fresh.items())
        for _ in range(rng.randint(*changes)):
            if settled and (not fresh or rng.random() < 0.75):
                mb, d = settled.pop(rng.randrange(len(settled)))
                self.settled.discard((mb, d))
                what = rng.random()
                if what < 0.25:
                    ops.append(("expunge", rng.choice(sides), mb, d))
                elif what < 0.45 and len(sides) == 2:  # a conflict
                    ops.append(("flag", mb, d, {side: self._flag_op(rng) for side in sides}))
                else:
                    ops.append(("flag", mb, d, {rng.choice(sides): self._flag_op(rng)}))
            elif fresh:
                (mb, d), side = fresh.pop(rng.randrange(len(fresh)))
                del self.fresh[(mb, d)]
                if rng.random() < 0.5:
                    ops.append(("expunge", side, mb, d))
                else:
                    ops.append(("flag", mb, d, {side: self._flag_op(rng)}))
        return ops

    @staticmethod
    def _flag_op(rng):
        op = rng.choice(["+FLAGS", "-FLAGS", "FLAGS"])
        return op, sorted(set(rng.sample(FLAGS, rng.randint(1 if op != "FLAGS" else 0, 2))))

    def update(self, ops):
        """The model after ops (made on the stores by apply())."""
        for op in ops:
            if op[0] == "create":
                self.boxes.setdefault(op[2], {})
                if op[1] != "both":  # both: there already (INBOX)
                    self.new_boxes[op[2]] = op[1]
            elif op[0] == "new":
                _, side, mb, msg, flags = op
                d = digest(msg)
                self.boxes.setdefault(mb, {})[d] = frozenset(flags)
                self.fresh[(mb, d)] = side
            elif op[0] == "expunge":
                _, side, mb, d = op
                del self.boxes[mb][d]
            elif op[0] == "flag":
                _, mb, d, per_side = op
                old = self.boxes[mb][d]
                new = {side: apply_flag_op(old, *o) for side, o in per_side.items()}
                changed = [fl for fl in new.values() if fl != old]
                if len(changed) == 2:
                    self.boxes[mb][d] = changed[0] | changed[1]
                elif changed:
                    self.boxes[mb][d] = changed[0]


def apply_flag_op(flags, op, operand):
    operand = frozenset(operand)
    if op == "+FLAGS":
        return frozenset(flags) | operand
    if op == "-FLAGS":
        return frozenset(flags) - operand
    return operand


def apply(p, ops):
    """Makes the ops on the pair's stores: one connection per side.  The
    messages are found by digest (all copies: after an interruption a
    side may hold a message the database does not map yet)."""
    for side in ("local", "remote"):
        mine = [op for op in ops if (op[1] == side if op[0] != "flag" else side in op[3])]
        if not mine:
            continue
        store = p.local if side == "local" else p.remote
        with h.Imap(store) as sd:
            names = {}

            def uids(mb, d):
                name = p.from_db(side, mb)
                if name not in names:
                    names[name] = {}
                    for uid, (_, body) in sd.messages(name).items():
                        names[name].setdefault(digest(body or b""), []).append(uid)
                found = names[name].get(d, [])
                if not found:
                    raise AssertionError(f"{side} {name!r}: no message {d[:8]} to change")
                return found

            for op in mine:
                if op[0] == "create":
                    sd.create(p.from_db(side, op[2]))
                elif op[0] == "new":
                    _, _, mb, msg, flags = op
                    sd.append(p.from_db(side, mb), msg, flags)
                elif op[0] == "expunge":
                    _, _, mb, d = op
                    sd.expunge(p.from_db(side, mb), uids(mb, d))
                elif op[0] == "flag":
                    _, mb, d, per_side = op
                    o, fl = per_side[side]
                    sd.flag(p.from_db(side, mb), uids(mb, d), o, fl)


def describe(ops):
    """A one-line summary of ops."""
    c = collections.Counter()
    for op in ops:
        if op[0] == "flag":
            c["conflict" if len(op[3]) == 2 else f"flag {next(iter(op[3]))}"] += 1
        else:
            c[f"{op[0]} {op[1]}"] += 1
    return ", ".join(f"{k} x{n}" for k, n in sorted(c.items())) or "nothing"


def diff(p, model):
    """What differs between the pair's stores and the model: ["side
    mailbox: missing|extra digest [flags]"] (empty when they agree)."""
    out = []
    want = model.expect()
    for side in ("local", "remote"):
        snap = p.side_snapshot(side)
        for mb in sorted(set(want) | set(snap)):
            got = s.multiset(snap.get(mb, {}))
            exp = want.get(mb, collections.Counter())
            for what, items in (("missing", exp - got), ("extra", got - exp)):
                out += [f"{side} {mb!r}: {what} {d[:8]} {list(fl)}" + (f" x{n}" if n > 1 else "")
                        for (fl, d), n in sorted(items.items())]
    return out
