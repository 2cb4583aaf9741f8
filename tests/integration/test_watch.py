"""interimap --watch=2 (polling) against two Dovecot TunnelStores.

While it runs, changes made on either side (a new message, a flag, a
deletion, a new mailbox, another message in a mailbox synchronized a
moment ago) must reach the other side within a few intervals; the remote
server does not advertise UNSELECT (so the loop must refresh its view
another way) while the local one does.  Then SIGTERM: exit 0 at once,
both sessions logged out, and the stores converged (same messages and
flags on both sides, the database mapping exactly them).

INTERIMAP=/usr/bin/interimap runs it against the reference.
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import synclib as s  # noqa: E402
import watchlib as w  # noqa: E402

INTERVAL = 2


def main():
    s.require()
    t0 = time.monotonic()
    t = h.TestDir("iit-watch-")
    probe = h.TunnelStore(t, "caps")
    remote = h.TunnelStore(t, "poll-remote", extra_conf=s.FAST + w.capability_conf(probe, "UNSELECT"))
    pair = w.seed_pair(t, "poll", remote=remote)

    with w.step(f"--watch={INTERVAL}: changes on either side propagate within a few intervals"):
        watcher = w.Watcher(pair, f"--watch={INTERVAL}")
        time.sleep(0.5)
        timings = w.run_changes(pair, watcher, "poll", timeout=4 * INTERVAL + 2)
        # Not all at once: polling waits for the interval.
        assert max(took for _, took in timings) > 0.5, timings

    with w.step("SIGTERM: exit 0 promptly, both sessions logged out"):
        w.stop_and_check_logout(pair, watcher, signal.SIGTERM)

    with w.step("converged; a plain run afterwards changes nothing"):
        before = pair.check()
        pair.sync()
        after = pair.check()
        assert before[0] == after[0] and before[1] == after[1], "a plain run after --watch changed the stores"

    w.log(f"ok ({time.monotonic() - t0:.1f}s)")


if __name__ == "__main__":
    main()
