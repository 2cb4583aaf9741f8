#!/usr/bin/env python3
"""interimap ($INTERIMAP) interrupted, then run again: converged, nothing
lost, nothing duplicated (lib/crashlib.py).

 - a tunnel that dies after N bytes (lib/cutrelay.py), N spread over the
   bytes of a whole run (measured first), 7 points on the remote side
   and 2 on the local one: the run must fail cleanly (non-zero exit, no
   hang), the next one converges.
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
    c.CrashCase.setup("iit-sync-cut-")


class Cut(c.CrashCase):
    def test_tunnel_dies_after_n_bytes(self):
        def relay(p, side, n, count):
            store = p.local if side == "local" else p.remote
            return f"{sys.executable} {c.RELAY} {n} {count} '{store.command} 2>>{store.log_path}'"

        # bytes of a whole first copy through each tunnel
        p = self.pair()
        e = c.seed_first_copy(p, 200)
        counts = {side: os.path.join(p.tdir.path, f"{p.name}.{side}.count") for side in ("local", "remote")}
        p.write_config(local_command=relay(p, "local", -1, counts["local"]),
                       remote_command=relay(p, "remote", -1, counts["remote"]))
        p.sync()
        p.check(expect=e)
        total = {}
        for side, path in counts.items():
            with open(path) as f:
                total[side] = int(f.read())
        s.log(f"a first copy of 200 messages moves {total['local']} bytes through the local tunnel, "
              f"{total['remote']} through the remote one")
        rng = random.Random(c.SEED + 2)
        cuts = [("remote", n) for n in [40, 300] + [int(total["remote"] * f) for f in (0.1, 0.35, 0.6, 0.85)]
                + [rng.randrange(100, total["remote"])]]
        cuts += [("local", int(total["local"] * f)) for f in (0.3, 0.7)]
        for side, n in cuts:
            with self.subTest(side=side, cut_after=n):
                p = self.pair()
                e = c.seed_first_copy(p, 200)
                p.write_config(**{f"{side}_command": relay(p, side, n, counts[side])})
                r = p.run(timeout=30)
                what = f"the {side} tunnel died at byte {n}"
                self.assertNotEqual(r.rc, "TIMEOUT", f"hung after {what}\n" + r.describe())
                self.assertNotEqual(r.rc, 0, f"a run whose {what} reported success\n" + r.describe())
                self.assertFalse(isinstance(r.rc, int) and r.rc < 0, "killed by a signal\n" + r.describe())
                s.log(f"{side} cut at byte {n}: exit {r.rc}: {' | '.join(r.error_lines()[-1:])[:160]}")
                p.write_config(**{f"{side}_command": None})
                p.sync()
                p.check(expect=e, allow_duplicates=c.DUP_OK)


if __name__ == "__main__":
    s.main(globals())
