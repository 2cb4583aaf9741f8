#!/usr/bin/env python3
"""interimap ($INTERIMAP) interrupted, then run again: converged, nothing
lost, nothing duplicated (lib/crashlib.py).

 - SIGKILL after random delays (stratified over the duration of an
   uninterrupted run, measured first) during a first copy of 300
   messages in both directions: once per fresh pair at 3 points, and
   several kills in a row on one pair; each time a rerun;
 - SIGKILL when the first copy has stored 1, 30, 121, 150 or 300 of its
   300 messages (maildir files watched while it runs), at once or a few
   ms later (between APPEND and the database commit), then a rerun.
SYNC_SEED=n replays the random delays of a previous run (printed).
The reference (INTERIMAP=/usr/bin/interimap) may duplicate messages after
an interruption: for it alone duplicates are tolerated and logged
(SYNC_STRICT=1: no tolerance).
"""

import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import crashlib as c  # noqa: E402
import synclib as s  # noqa: E402


def setUpModule():
    c.CrashCase.setup("iit-sync-kill-")


class Kill(c.CrashCase):
    def test_sigkill_first_copy(self):
        rng = random.Random(c.SEED)
        span = self.calibrate("first-copy", c.seed_first_copy) * 1.1
        failures, killed = [], 0
        # one kill per fresh pair, at stratified points over the run
        points = 3
        for i in range(points):
            p = self.pair()
            e = c.seed_first_copy(p)
            delay = span * (i + rng.random()) / points
            outcome = c.run_killed(p, delay)
            killed += outcome[0] == "killed"
            s.log(f"first copy: {outcome[0]}@{delay:.2f}s")
            try:
                p.sync()
                p.check(expect=e, allow_duplicates=c.DUP_OK)
            except AssertionError as ex:
                failures.append(f"killed at {delay:.2f}s, then rerun: {ex}")
        # one kill per fresh pair when the copy has progressed to some point
        # (messages stored on the target sides), including just after the
        # first APPENDs of a batch and near the end
        progress = [(1, 0), (30, 0), (30, 0.05), (121, 0), (150, 0.02), (150, 0.15), (300, 0), (300, 0.1)]
        for k, extra in progress:
            p = self.pair()
            e = c.seed_first_copy(p)
            base = c.stored_messages(p)
            outcome = c.run_killed_at(p, base + k, extra)
            killed += outcome[0] == "killed"
            s.log(f"first copy: {outcome[0]} {extra:.2f}s after {k} messages were copied "
                  f"({c.stored_messages(p) - base} of 300 by then)")
            try:
                p.sync()
                p.check(expect=e, allow_duplicates=c.DUP_OK)
            except AssertionError as ex:
                failures.append(f"killed {extra:.2f}s after {k} of 300 messages were copied, then rerun: {ex}")
        points += len(progress)
        # several kills in a row on one pair
        p = self.pair()
        e = c.seed_first_copy(p)
        outcomes = self.kill_loop(p, rng, "first copy, kills in a row", span)
        killed += sum(o.startswith("killed") for o in outcomes)
        try:
            p.sync()
            p.check(expect=e, allow_duplicates=c.DUP_OK)
            p.sync()  # and stable
            p.check(expect=e, allow_duplicates=c.DUP_OK)
        except AssertionError as ex:
            failures.append(f"after {', '.join(outcomes)}, then rerun: {ex}")
        self.assertGreater(killed, 0, "no run was actually interrupted")
        self.assertEqual(failures, [], f"{len(failures)} interruption point(s) out of {points + 1} "
                         "lost or duplicated messages:\n" + "\n".join(failures))


if __name__ == "__main__":
    s.main(globals())
