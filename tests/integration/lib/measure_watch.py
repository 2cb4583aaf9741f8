"""Measures the cost of interimap's long-lived mode on 20 mailboxes (not a
test: run by hand; prints a table).

    INTERIMAP=/path/to/interimap python3 tests/integration/lib/measure_watch.py [--idle-seconds N]

For the binary in $INTERIMAP (default: ours under $INTERIMAP_BUILD_DIR)
and /usr/bin/interimap, on two Dovecot TunnelStores with 20 mailboxes of
5 messages each, COMPRESS off (so the bytes are the IMAP bytes):

- bytes per no-op poll: Dovecot logs each session's in=/out= byte counts
  when it ends; two --watch=1 --debug runs of different lengths give the
  per-poll figure (the difference of bytes over the difference of LIST
  commands), both servers together, both directions;
- CPU per no-op poll: utime+stime of the interimap process over a
  --watch=1 run (no --debug), divided by its polls; an hour of --watch=60
  is 60 of them;
- idle CPU over --idle-seconds (default 120) of --watch=60 and of
  --notify (default interval 900 s) after the first pass, extrapolated to
  an hour.  The kernel counts CPU time in 10 ms ticks.
"""

import argparse
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import synclib as s  # noqa: E402
import watchlib as w  # noqa: E402

MAILBOXES = 20


def make_pair(t, name):
    pair = s.Pair(t, name, remote_opts={"compress": "NO"})
    with h.Imap(pair.local) as sl:
        for i in range(MAILBOXES - 1):
            sl.create(f"box{i:02d}")
        for i in range(MAILBOXES - 1):
            for j in range(5):
                sl.append(f"box{i:02d}", s.message(f"{name}-{i}", j))
    pair.sync()
    pair.check()
    return pair


def session_bytes(store, offset):
    """Sum of in= and out= of the sessions logged after offset."""
    text = store.read_log()[offset:]
    return sum(int(a) + int(b) for a, b in re.findall(r"\bin=(\d+) out=(\d+)", text))


def run_for(pair, binary, args, seconds):
    offsets = (len(pair.local.read_log()), len(pair.remote.read_log()))
    watcher = w.Watcher(pair, *args, binary=binary)
    time.sleep(seconds)
    cpu = watcher.cpu_seconds()
    rc, _ = watcher.stop(signal.SIGTERM)
    time.sleep(0.5)
    nbytes = session_bytes(pair.local, offsets[0]) + session_bytes(pair.remote, offsets[1])
    polls = len(re.findall(r"^local: C: \S+ LIST .*RETURN", watcher.stderr, re.M))
    return {"rc": rc, "cpu": cpu, "bytes": nbytes, "polls": polls}


def measure(pair, binary, idle_seconds):
    out = {}
    short = run_for(pair, binary, ["--watch=1", "--debug"], 6)
    long = run_for(pair, binary, ["--watch=1", "--debug"], 26)
    dp = long["polls"] - short["polls"]
    out["bytes_per_poll"] = (long["bytes"] - short["bytes"]) / dp if dp > 0 else float("nan")
    out["polls_measured"] = dp
    # CPU per poll: two runs without --debug, the difference over the
    # difference of durations (about one poll per second plus the pass).
    c1 = run_for(pair, binary, ["--watch=1"], 6)
    c2 = run_for(pair, binary, ["--watch=1"], 36)
    polls = 30 * dp / 20  # the --debug runs' poll rate, over 30 s
    out["cpu_per_poll_ms"] = 1000 * (c2["cpu"] - c1["cpu"]) / polls
    out["cpu_hour_poll60_s"] = 60 * out["cpu_per_poll_ms"] / 1000
    i60 = run_for(pair, binary, ["--watch=60"], idle_seconds)
    i0 = run_for(pair, binary, ["--watch=60"], 4)
    out["idle_cpu_hour_watch60_s"] = (i60["cpu"] - i0["cpu"]) * 3600 / (idle_seconds - 4)
    n = run_for(pair, binary, ["--notify"], idle_seconds)
    n0 = run_for(pair, binary, ["--notify"], 4)
    out["idle_cpu_hour_notify_s"] = (n["cpu"] - n0["cpu"]) * 3600 / (idle_seconds - 4)
    out["startup_cpu_s"] = i0["cpu"]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle-seconds", type=int, default=120)
    ap.add_argument("--only", choices=["ours", "reference"])
    a = ap.parse_args()
    s.require()
    t = h.TestDir("iit-measure-")
    results = {}
    for label, binary in (("ours", s.INTERIMAP), ("reference", s.REFERENCE)):
        if a.only and a.only != label:
            continue
        pair = make_pair(t, label)
        results[label] = measure(pair, binary, a.idle_seconds)
        print(label, results[label], flush=True)
    print(f"\n{MAILBOXES} mailboxes, COMPRESS off")
    keys = ["bytes_per_poll", "polls_measured", "cpu_per_poll_ms", "cpu_hour_poll60_s", "idle_cpu_hour_watch60_s",
            "idle_cpu_hour_notify_s", "startup_cpu_s"]
    print(f"{'':28}" + "".join(f"{k:>14}" for k in results))
    for k in keys:
        print(f"{k:28}" + "".join(f"{results[r][k]:14.3f}" for r in results))


if __name__ == "__main__":
    main()
