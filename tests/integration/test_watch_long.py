"""A long interimap --watch does not grow: memory (VmRSS) and open
descriptors stay flat over many polls, with changes now and then so
that selection, copying, flag and expunge paths run too.

Phase 1: --watch=1 (polling), about 55 polls; phase 2: --watch=1
--notify (a NOOP every second, passes on notifications), about 25 s.
Each phase: a warm-up with changes, no-op polls (RSS and descriptors
flat), then a change every 2 s (descriptors flat, RSS bounded).

INTERIMAP=/usr/bin/interimap runs it against the reference.
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

# No-op polls: RSS may move by an allocator page or two; a leak of 1 KiB
# per poll would exceed this.  A few changes: SQLite's page cache and the
# database grow a little with every mapping.
QUIET_SLACK_KB = 8
SETTLE_SLACK_KB = 64
BUSY_SLACK_KB = 160


def churn(pair, tag, i):
    """A change every few seconds, alternating sides and kinds."""
    store = pair.remote if i % 2 else pair.local
    kind = (i // 2) % 3
    with h.Imap(store) as sd:
        if kind == 0:
            sd.append("work", s.message(f"{tag}-churn", i))
        elif kind == 1:
            uids = sd.uids("work")
            if uids:
                sd.flag("work", uids[-1:], "+FLAGS", ["\\Seen"])
        else:
            uids = sd.uids("work")
            if len(uids) > 3:
                sd.expunge("work", uids[:1])


def phase(pair, args, quiet_seconds, churn_seconds, tag):
    """Warm-up with one change of each kind (SQLite keeps its journal
    open after the first write, caches grow to their working size), then
    quiet_seconds of no-op polls (RSS and descriptors must not move), then
    churn_seconds with a change every 2 s (descriptors must not move, RSS
    stays within a bound)."""
    watcher = w.Watcher(pair, *args)
    time.sleep(1.5)
    for i in range(3):
        churn(pair, tag, i * 2)
        time.sleep(1)
    time.sleep(2)
    watcher.assert_alive("after the warm-up")

    def sample(samples, t0):
        watcher.assert_alive()
        samples.append((round(time.monotonic() - t0, 1), watcher.rss_kb(), watcher.fd_count()))

    quiet, t0 = [], time.monotonic()
    sample(quiet, t0)
    while time.monotonic() - t0 < quiet_seconds:
        time.sleep(1)
        sample(quiet, t0)
    busy, t1 = [quiet[-1]], time.monotonic()
    i = 10
    while time.monotonic() - t1 < churn_seconds:
        churn(pair, tag, i)
        i += 1
        time.sleep(2)
        sample(busy, t1)
    time.sleep(2)
    sample(busy, t1)
    sanitized = watcher.sanitized()
    rc, _ = watcher.stop(signal.SIGTERM)
    (_, rss0, fds0), (_, rss1, _), (_, rss2, fds2) = quiet[0], quiet[-1], busy[-1]
    w.log(f"{' '.join(args)}: no-op polls for {quiet_seconds}s: RSS {rss0} -> {rss1} kB; "
          f"then changes for {churn_seconds}s: RSS -> {rss2} kB; descriptors {fds0} -> {fds2}")
    assert rc == 0, f"exit status {rc}\n" + watcher.describe()
    assert all(f == fds0 for _, _, f in quiet + busy), f"descriptor count moved: {quiet + busy!r}"
    if sanitized:
        w.log("AddressSanitizer build: RSS not judged (its quarantine grows by design); "
              "LeakSanitizer judged the exit instead")
        return watcher
    # The heap touches a few fresh pages before it settles (seen: +24 kB
    # over the first 15 polls, then flat): judge the last two thirds.
    settled = quiet[len(quiet) // 3][1]
    assert rss1 - settled <= QUIET_SLACK_KB, \
        f"RSS grew {rss1 - settled} kB over the last {len(quiet) * 2 // 3} no-op polls: {quiet!r}"
    assert rss1 - rss0 <= SETTLE_SLACK_KB, f"RSS grew {rss1 - rss0} kB over no-op polls: {quiet!r}"
    assert rss2 - rss1 <= BUSY_SLACK_KB, f"RSS grew {rss2 - rss1} kB over a few changes: {busy!r}"
    return watcher


def main():
    s.require()
    t0 = time.monotonic()
    t = h.TestDir("iit-watchlong-")
    pair = w.seed_pair(t, "long")
    with h.Imap(pair.local) as sl:
        for i in range(10):
            sl.create(f"box{i}")
    pair.sync()

    with w.step("--watch=1: about 55 polls"):
        watcher = phase(pair, ["--watch=1", "--debug"], quiet_seconds=30, churn_seconds=10, tag="poll")
        polls = len(re.findall(r"^local: C: \S+ LIST .*RETURN", watcher.stderr, re.M))
        w.log(f"{polls} polls")
        assert polls >= 35, f"only {polls} LIST-STATUS polls in about 50s with --watch=1"
    with w.step("--watch=1 --notify: NOOP every second, notified passes"):
        phase(pair, ["--watch=1", "--notify"], quiet_seconds=10, churn_seconds=6, tag="notify")
    with w.step("converged"):
        pair.sync()
        pair.check()
    w.log(f"ok ({time.monotonic() - t0:.1f}s)")


if __name__ == "__main__":
    main()
