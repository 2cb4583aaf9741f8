#!/usr/bin/env python3
"""$INTERIMAP next to the reference (/usr/bin/interimap 0.5.7) over
randomized rounds (issue 18): two pairs seeded identically (a first copy
of INBOX, Box and Sub/kid from both sides), then per round the same random
changes on both pairs (lib/modellib.py: new messages on both sides, flag
changes on either side or both, expunges on either side, sometimes a new
mailbox), made by digest, then one run on each pair: plain, or --repair
(on an intact state).  After each round:
 - ours holds exactly what the model says (every message once, none
   expunged, flags by the conflict rule), converged (synclib's check);
 - ours and the reference hold the same multiset of (flags, body digest)
   per mailbox and side, except where the reference is known wrong:
     * it reports a conflict ("Conflicting flag update") for a message
       changed on one side only (or not at all) and sets the union: the
       flags of that message are not compared (ours is checked against
       the model, the normal-run end state, instead);
     * a --repair may leave new messages uncopied (on their side only):
       those of a mailbox new since the last run until a plain run, others
       until the next --repair: those are not compared (ours must have
       copied them: the model).
   After such a round the reference pair is brought back in line (the
   model's flags stored on both its sides, then a plain run, and a
   --repair when messages were left behind) and must then agree with
   the model, so that the next round starts from the same state on both
   pairs.
Any other difference fails.  Fixed seeds (DIFF_SEEDS=a,b,... for others,
DIFF_ROUNDS=n rounds per seed, default 8; DIFF_REPAIR=x the share of
--repair rounds, default 0.35).  Skipped when $INTERIMAP is the
reference or it is not installed.
"""

import collections
import os
import random
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import crashlib as c  # noqa: E402
import harness as h  # noqa: E402
import modellib as m  # noqa: E402
import synclib as s  # noqa: E402

SEEDS = [int(x) for x in (os.environ.get("DIFF_SEEDS") or "18,1807").split(",")]
ROUNDS = int(os.environ.get("DIFF_ROUNDS") or 8)
REPAIR = float(os.environ.get("DIFF_REPAIR") or 0.35)  # the share of --repair rounds
CONFLICT = re.compile(r"Conflicting flag update in (.+) for local UID (\d+) \(")


def setUpModule():
    c.CrashCase.setup("iit-sync-differential-")


def contents(p):
    """{(side, dbname): Counter((flags, digest))}."""
    out = {}
    for side in ("local", "remote"):
        for mb, msgs in p.side_snapshot(side).items():
            out[(side, mb)] = s.multiset(msgs)
    return out


def one_sided(ops):
    """The (mailbox, digest)s whose flags the ops changed on one side only."""
    return {(op[1], op[2]) for op in ops if op[0] == "flag" and len(op[3]) == 1}


def flag_ops(ops):
    return {(op[1], op[2]) for op in ops if op[0] == "flag"}


class Differential(c.CrashCase):
    def ref_conflicts(self, p, r):
        """The (mailbox, digest)s of the reference's conflict reports."""
        out = set()
        snap = p.side_snapshot("local")
        for name, luid in CONFLICT.findall(r.err):
            for mb in (name, name.replace("/", "\0")):
                if mb in snap and int(luid) in snap[mb]:
                    out.add((mb, snap[mb][int(luid)][1]))
        return out

    def compare(self, ours, ref, skip_flags, skip_new):
        """Differences between ours and the reference's contents, but for
        the flags of skip_flags and the absence of skip_new messages."""
        problems = []
        for key in sorted(set(ours) | set(ref)):
            side, mb = key
            o, r = ours.get(key, collections.Counter()), ref.get(key, collections.Counter())
            for what, items, mine in (("only ours", o - r, True), ("only the reference's", r - o, False)):
                for (fl, d), n in sorted(items.items()):
                    if (mb, d) in skip_flags and any(dd == d for _, dd in (r if mine else o)):
                        continue  # the same message with other flags: a known wrong conflict
                    if mine and (mb, d) in skip_new:
                        continue  # left behind by the reference's --repair
                    problems.append(f"{side} {mb!r}: {what}: {d[:8]} {list(fl)}" + (f" x{n}" if n > 1 else ""))
        return problems

    def realign(self, ref, model, skip_flags, runs):
        """The reference pair back to the model after a known deviation:
        the model's flags on both sides, then runs (argument lists)."""
        want = {mb: msgs for mb, msgs in model.boxes.items()}
        for side in ("local", "remote"):
            store = ref.local if side == "local" else ref.remote
            snap = ref.side_snapshot(side)
            with h.Imap(store) as sd:
                for mb, d in skip_flags:
                    if d not in want.get(mb, {}):
                        continue
                    uids = [u for u, (fl, dd) in snap.get(mb, {}).items() if dd == d]
                    if uids:
                        sd.flag(ref.from_db(side, mb), uids, "FLAGS", sorted(want[mb][d]))
        for a in runs:
            ref.sync(*a, binary=s.REFERENCE)

    def test_against_reference(self):
        failures = []
        for seed in SEEDS:
            rng = random.Random(seed)
            ours = s.Pair(self.tdir, f"ours-{seed}")
            ref = s.Pair(self.tdir, f"ref-{seed}")
            model = m.Model()
            ops = [("create", "both", "INBOX"), ("create", "local", "Box"), ("create", "remote", "Sub\0kid")]
            for side, boxes in (("local", ["INBOX", "Box"]), ("remote", ["INBOX", "Sub\0kid"])):
                for _ in range(rng.randint(10, 40)):
                    flags = sorted(set(rng.sample(m.FLAGS, rng.randint(0, 2))))
                    ops.append(("new", side, rng.choice(boxes), model.new_message(f"first-{side}"), flags))
            for rnd in range(ROUNDS + 1):
                if rnd:
                    model.begin_epoch()
                    ops = model.plan(rng, new=(0, 8), changes=(0, 12), big=0.0, new_box=0.15, tag=f"r{rnd}")
                args = ["--repair"] if rnd and rng.random() < REPAIR else []
                for p in (ours, ref):
                    m.apply(p, ops)
                model.update(ops)
                label = f"seed {seed} round {rnd} ({' '.join(args) or 'plain'}: {m.describe(ops)})"
                ours.sync(*args)
                r = ref.sync(*args, binary=s.REFERENCE)
                problems = m.diff(ours, model)
                if not problems:
                    try:
                        ours.check(expect=model.expect())
                    except AssertionError as ex:
                        problems.append(str(ex))
                # the reference's known deviations
                conflicts = self.ref_conflicts(ref, r)
                wrong = conflicts - (flag_ops(ops) - one_sided(ops))
                new = {(op[2], m.digest(op[3])) for op in ops if op[0] == "new"} if args else set()
                problems += self.compare(contents(ours), contents(ref), wrong, new)
                left_behind = [x for x in m.diff(ref, model) if ": missing " in x]
                if wrong or left_behind:
                    s.log(f"{label}: the reference: {len(wrong)} conflict(s) reported for messages changed on "
                          f"one side only, {len(left_behind)} message(s) left behind; realigned")
                    self.realign(ref, model, wrong, [[], ["--repair"]] if left_behind else [[]])
                    rest = m.diff(ref, model)
                    if rest:
                        problems.append("the reference still differs from the model after realignment: "
                                        + "; ".join(rest[:10]))
                s.log(f"{label}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
                if problems:
                    failures.append(f"{label}:\n    " + "\n    ".join(problems[:15]))
                    break  # this seed's pairs no longer start alike
        self.assertEqual(failures, [], f"{len(failures)} round(s) differ:\n" + "\n".join(failures))


if __name__ == "__main__":
    s.require()
    if not os.access(s.REFERENCE, os.X_OK):
        h.skip(f"{s.REFERENCE} not installed (apt-get install interimap)")
    if s.is_reference():
        h.skip("INTERIMAP is the reference itself: nothing to compare")
    s.main(globals())
