#!/usr/bin/env python3
"""interimap ($INTERIMAP) interrupted at random points, epoch after epoch
(issue 18): every interrupted run ends where an uninterrupted run would.

Each epoch is one of
 - a first copy: a fresh pair, 20-200 messages on each side (INBOX on
   both, Box locally, Sub/kid remotely);
 - incremental: changes on both sides (lib/modellib.py: new messages,
   sometimes 130 more at once, sometimes a new mailbox; flag changes on
   either side or both, conflicts included; expunges on either side);
 - --repair: the same changes, every run of the epoch with --repair;
in 1 to 3 rounds: the round's changes, then one interrupted run: SIGKILL
after a random delay, or a tunnel (local or remote, lib/cutrelay.py)
dying after a random number of bytes (the delays and byte counts are
drawn over those of the previous epoch's uninterrupted run).  Changes
after an interrupted run include changes to the messages it was copying
(on the side they came from: an expunge must not come back).
Then two uninterrupted runs (the first with --repair in a --repair
epoch), and:
 - the first succeeds; the second is a no-op (reports nothing, changes
   neither store nor the database's mappings: crashlib.no_op);
 - both sides hold exactly what the model says (modellib: every message
   created once, none expunged, the flags by the conflict rule), and
   the database maps exactly the messages present (synclib's check);
 - PRAGMA integrity_check is ok.
A failing epoch is reported and the next one starts from a fresh pair.
At the end: the number of interruptions (by kind) and failing epochs;
the test fails if any epoch failed or nothing was interrupted.

    KILL_LOOP_EPOCHS   epochs (default 40)
    KILL_LOOP_SECONDS  no new epoch after that many seconds (default 75,
                       for CI; 0: no limit)
    KILL_LOOP_SEED     the random seed (default 18: every run the same)
    KILL_LOOP_METHODS  the interruptions to draw from, comma-separated
                       (default kill,cut-local,cut-remote, kills twice as
                       often); none: no interruption (a control run: the
                       model and the uninterrupted engine agree)

For a long local run (>= 200 interruptions: about 1.1 per epoch, ~2 s an
epoch, so about 7 minutes on 2 cores;
the meson timeout is 300 s, so run the script by hand):

    KILL_LOOP_EPOCHS=200 KILL_LOOP_SECONDS=0 \\
    INTERIMAP=build/tools/interimap/interimap python3 tests/integration/test_sync_kill_loop.py
"""

import collections
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import crashlib as c  # noqa: E402
import modellib as m  # noqa: E402
import synclib as s  # noqa: E402

EPOCHS = int(os.environ.get("KILL_LOOP_EPOCHS") or 40)
SECONDS = float(os.environ.get("KILL_LOOP_SECONDS") or 75)
SEED = int(os.environ.get("KILL_LOOP_SEED") or 18)
METHODS = (os.environ.get("KILL_LOOP_METHODS") or "kill,kill,cut-local,cut-remote").split(",")


def setUpModule():
    c.CrashCase.setup("iit-sync-kill-loop-")


class KillLoop(c.CrashCase):
    def first_copy_ops(self, rng, model):
        ops = [("create", "both", "INBOX"), ("create", "local", "Box"), ("create", "remote", "Sub\0kid")]
        for side, boxes in (("local", ["INBOX", "Box"]), ("remote", ["INBOX", "Sub\0kid"])):
            for _ in range(rng.randint(20, 200)):
                flags = sorted(set(rng.sample(m.FLAGS, rng.randint(0, 2))))
                ops.append(("new", side, rng.choice(boxes), model.new_message(f"first-{side}"), flags))
        return ops

    def interrupt(self, p, rng, method, args, measure, label):
        """One run interrupted by method; returns (interrupted, problem)."""
        if method == "none":
            r = p.run(*args)
            return False, None if r.rc == 0 else "a run failed\n" + r.describe()
        if method == "kill":
            delay = rng.uniform(0.01, measure["seconds"] * 1.3)
            outcome = c.run_killed(p, delay)
            s.log(f"{label}: {outcome[0]} at {delay:.2f}s")
            if outcome[0] == "exited" and outcome[1] != 0:
                return False, f"a run ({' '.join(args)}) not interrupted failed:\n{outcome[2]}"
            return outcome[0] == "killed", None
        side = method.split("-")[1]
        n = rng.randrange(1, max(2, int(measure[side] * 1.2)))
        count = os.path.join(p.tdir.path, f"{p.name}.cut.count")
        p.write_config(**{f"{side}_command": c.relay_command(p, side, n, count)})
        try:
            r = p.run(*args, timeout=30)
        finally:
            p.write_config(**{f"{side}_command": None})
        s.log(f"{label}: the {side} tunnel cut after {n} bytes: exit {r.rc}")
        if r.rc == "TIMEOUT" or (isinstance(r.rc, int) and r.rc < 0):
            return False, f"the {side} tunnel cut after {n} bytes: hung or killed\n" + r.describe()
        return r.rc != 0, None

    def measured_run(self, p, args, measure):
        """An uninterrupted run through counting relays; updates measure."""
        counts = {side: os.path.join(p.tdir.path, f"{p.name}.full.{side}.count") for side in ("local", "remote")}
        p.write_config(**{f"{side}_command": c.relay_command(p, side, -1, counts[side]) for side in counts})
        try:
            r = s.assert_ok(p.run(*args))
        finally:
            p.write_config(local_command=None, remote_command=None)
        measure["seconds"] = max(0.3, r.seconds)
        for side, path in counts.items():
            with open(path) as f:
                measure[side] = max(2000, int(f.read().split()[0]))
        return r

    def test_kill_loop(self):
        rng = random.Random(SEED)
        s.log(f"KILL_LOOP_SEED={SEED} KILL_LOOP_EPOCHS={EPOCHS} KILL_LOOP_SECONDS={SECONDS or 'unlimited'}")
        t0 = time.monotonic()
        interruptions = collections.Counter()
        failing = []
        p = model = None
        measure = {"seconds": 0.5, "local": 20000, "remote": 20000}
        epochs = 0
        for epoch in range(EPOCHS):
            if SECONDS and time.monotonic() - t0 > SECONDS:
                s.log(f"time's up after {epochs} epochs")
                break
            epochs += 1
            if p is None or rng.random() < 0.15:
                kind = "first"
            else:
                kind = rng.choice(["incremental", "incremental", "repair"])
            args = ["--repair"] if kind == "repair" else []
            if kind == "first":
                p, model = s.Pair(self.tdir, f"epoch{epoch}"), m.Model()
            model.begin_epoch()
            problems, hits = [], []
            try:
                for rnd in range(rng.randint(1, 3)):
                    if kind == "first" and rnd == 0:
                        ops = self.first_copy_ops(rng, model)
                    else:
                        ops = model.plan(rng, new=(0, 12), changes=(0, 10), big=0.1, new_box=0.1,
                                         tag=f"e{epoch}r{rnd}")
                    m.apply(p, ops)
                    model.update(ops)
                    method = rng.choice(METHODS)
                    label = f"epoch {epoch} ({kind}) round {rnd}: {m.describe(ops)}; {method}"
                    hit, problem = self.interrupt(p, rng, method, args, measure, label)
                    if hit:
                        interruptions[method] += 1
                        hits.append(method)
                    if problem:
                        problems.append(problem)
                self.measured_run(p, args, measure)
                problems += [f"second run: {x}" for x in c.no_op(p)]
                problems += m.diff(p, model)
                if not problems:
                    try:
                        p.check(expect=model.expect())
                    except AssertionError as ex:
                        problems.append(str(ex))
                integrity = c.integrity(p)
                if integrity != "ok":
                    problems.append(f"PRAGMA integrity_check: {integrity}")
            except AssertionError as ex:
                problems.append(str(ex))
            if problems:
                failing.append(f"epoch {epoch} ({kind}, interrupted by {', '.join(hits) or 'nothing'}):\n    "
                               + "\n    ".join(x[:2000] for x in problems[:12]))
                s.log(f"epoch {epoch} FAILED:\n    " + "\n    ".join(x[:2000] for x in problems[:12]))
                p = None  # a fresh pair next
        total = sum(interruptions.values())
        s.log(f"{total} interruptions ({', '.join(f'{k} {n}' for k, n in sorted(interruptions.items()))}) "
              f"in {epochs} epochs, {len(failing)} failing epochs, {time.monotonic() - t0:.0f}s")
        if METHODS != ["none"]:
            self.assertGreater(total, 0, "nothing was interrupted")
        self.assertEqual(failing, [], f"{len(failing)} of {epochs} epochs failed:\n" + "\n".join(failing))


if __name__ == "__main__":
    s.main(globals())
