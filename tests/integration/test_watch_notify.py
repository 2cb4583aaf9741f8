"""interimap --watch=60 --notify (RFC 5465) against two Dovecot TunnelStores.

- While it runs, changes on either side (a new message, a flag, a
  deletion, a new mailbox, another message in a mailbox synchronized a
  moment ago) reach the other side well before the 60 s interval: each
  within 5 s (Dovecot notifies within about half a second).
- SIGTERM: exit 0, both sessions logged out, stores converged.
- --watch=2 --notify in silence: a NOOP to each server every 2 s and no
  polling (no LIST-STATUS beyond the start).
- A server without NOTIFY: a clear error naming it, a non-zero exit, and
  nothing synchronized.

INTERIMAP=/usr/bin/interimap runs it against the reference; the latency
step is skipped for it: its two NOTIFY SETs in a row trip a Dovecot 2.3
bug (notifications stop), so its changes wait for the NOOP.
"""

import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import synclib as s  # noqa: E402
import watchlib as w  # noqa: E402

LATENCY = 5  # seconds: "before the interval would have elapsed", with margin for a loaded CI


def main():
    s.require()
    t0 = time.monotonic()
    t = h.TestDir("iit-watchnotify-")
    reference = s.is_reference()
    pair = w.seed_pair(t, "notify")

    with w.step(f"--watch=60 --notify: each change arrives within {LATENCY}s"):
        watcher = w.Watcher(pair, "--watch=60", "--notify")
        time.sleep(1)
        if reference:
            # It sends NOTIFY SET STATUS then NOTIFY SET, and Dovecot 2.3
            # stops notifying after every other SET replacing an earlier
            # one: changes wait for its NOOP, 60 s later, or longer.
            w.log("reference: latency not measured (Dovecot drops its notifications, see connection.cpp)")
        else:
            timings = w.run_changes(pair, watcher, "notify", timeout=LATENCY)
            w.log("timings: " + ", ".join(f"{took:.2f}s" for _, took in timings))

    with w.step("SIGTERM: exit 0, both sessions logged out, converged"):
        w.stop_and_check_logout(pair, watcher, signal.SIGTERM)
        pair.check()

    with w.step("--watch=2 --notify in silence: NOOPs, no polling"):
        watcher = w.Watcher(pair, "--watch=2", "--notify", "--debug")
        time.sleep(5.5)
        w.stop_and_check_logout(pair, watcher, signal.SIGTERM)
        out = watcher.stderr
        for side in ("local", "remote"):
            noops = len(re.findall(rf"^{side}: C: \S+ NOOP\s*$", out, re.M))
            lists = len(re.findall(rf"^{side}: C: \S+ LIST .*RETURN", out, re.M))
            w.log(f"{side}: {noops} NOOP, {lists} LIST ... RETURN in 5.5s")
            assert noops >= 1, f"{side}: no NOOP after 5.5s of silence with --watch=2 --notify\n" + watcher.describe()
            assert lists <= 2, f"{side}: {lists} LIST commands: polling despite --notify?\n" + watcher.describe()

    with w.step("a server without NOTIFY: clear error, nothing synchronized"):
        probe = h.TunnelStore(t, "caps")
        remote = h.TunnelStore(t, "nonotify-remote", extra_conf=s.FAST + w.capability_conf(probe, "NOTIFY"))
        bare = s.Pair(t, "nonotify", remote=remote)
        bare.sync()  # --watch does not create the database
        msg = s.message("nonotify", 1)
        bare.local.append("INBOX", msg)
        r = bare.run("--watch=60", "--notify", timeout=30)
        s.assert_fails(r, r"did not advertise NOTIFY", r"remote")
        assert not w.has_message(bare.remote, "INBOX", msg), "something was synchronized before the error"
        w.log("error: " + " | ".join(r.error_lines()))

    w.log(f"ok ({time.monotonic() - t0:.1f}s)")


if __name__ == "__main__":
    main()
