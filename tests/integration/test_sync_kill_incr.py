#!/usr/bin/env python3
"""interimap ($INTERIMAP) interrupted, then run again: converged, nothing
lost, nothing duplicated (lib/crashlib.py).

 - SIGKILL after random delays during an incremental run (new messages on
   both sides, flag changes, expunges), several kills in a row on each of
   3 pairs, then a rerun.
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
    c.CrashCase.setup("iit-sync-kill-incr-")


class KillIncremental(c.CrashCase):
    def test_sigkill_incremental(self):
        rng = random.Random(c.SEED + 1)
        span = self.calibrate("incremental", c.incremental_changes) * 1.1
        killed = 0
        for trial in range(3):
            p = self.pair()
            want = c.incremental_changes(p)
            outcomes = self.kill_loop(p, rng, f"incremental, trial {trial}", span)
            killed += sum(o.startswith("killed") for o in outcomes)
            p.sync()
            p.check(expect=want, allow_duplicates=c.DUP_OK)
        self.assertGreater(killed, 0, "no run was actually interrupted")


if __name__ == "__main__":
    s.main(globals())
