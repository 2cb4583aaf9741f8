#!/usr/bin/env python3
"""interimap ($INTERIMAP) interrupted, then run again: converged, nothing
lost, nothing duplicated (each side holds exactly the expected multiset
of (flags, body digest), and the database maps exactly those messages).

 - SIGKILL after random delays (stratified over the duration of an
   uninterrupted run, measured first) during a first copy of 300
   messages in both directions: once per fresh pair at 3 points, and
   several kills in a row on one pair; each time a rerun;
 - SIGKILL when the first copy has stored 1, 30, 121, 150 or 300 of its
   300 messages (maildir files watched while it runs), at once or a few
   ms later (between APPEND and the database commit), then a rerun;
 - the same during an incremental run (new messages on both sides,
   flag changes, expunges);
 - a tunnel that dies after N bytes (cutrelay.py), N spread over the
   bytes of a whole run (measured first), 7 points on the remote side
   and 2 on the local one: the run must fail cleanly (non-zero exit, no
   hang), the next one converges.
SYNC_SEED=n replays the random delays of a previous run (printed).

The reference (INTERIMAP=/usr/bin/interimap) duplicates the messages of
a mailbox whose copy was killed (or whose tunnel died) between its
APPENDs and its database commit; for it alone, duplicates are tolerated
(and logged):
the check is then "converged, nothing lost" (SYNC_STRICT=1: no tolerance).
"""

import os
import random
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import synclib as s  # noqa: E402

T = None
SEED = int(os.environ.get("SYNC_SEED") or random.randrange(1 << 30))
RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib", "cutrelay.py")


def setUpModule():
    global T
    T = h.TestDir("iit-sync-crash-")
    s.log(f"SYNC_SEED={SEED}")


def msgs(tag, n, flags=lambda i: ()):
    return [(s.message(tag, i, size=300 + 37 * (i % 50)), list(flags(i))) for i in range(n)]


def seed_first_copy(p, n=300):
    """n messages: local INBOX and L/sub, remote R and INBOX."""
    a, b = n * 2 // 5, n // 10
    return s.merge(
        p.seed("local", {"INBOX": msgs("li", a, lambda i: ["\\Seen"] if i % 3 else ["\\Flagged", "$K"]),
                         "L\0sub": msgs("ls", b)}),
        p.seed("remote", {"R": msgs("rr", a, lambda i: ["\\Answered"] if i % 4 == 0 else [])}),
        p.seed("remote", {"INBOX": msgs("ri", b)}, create=False))


def incremental_changes(p):
    """After a first copy of 200 messages, changes on one side per
    mailbox (new messages, flags, expunges); returns the expected
    contents (that side's)."""
    seed_first_copy(p, 200)
    p.sync()
    with s.Seeder(p.local) as sd:
        u = sd.uids("INBOX")
        sd.flag("INBOX", u[:40], "+FLAGS", ["\\Flagged", "$Crash"])
        sd.flag("INBOX", u[40:60], "-FLAGS", ["\\Seen"])
        sd.expunge("INBOX", u[60:75])
        for i in range(60):
            sd.append("INBOX", s.message("li-new", i), ["\\Seen"] if i % 2 else [])
    with s.Seeder(p.remote) as sd:
        u = sd.uids("R")
        sd.expunge("R", u[::4])
        sd.flag("R", u[1::4], "+FLAGS", ["\\Seen"])
        for i in range(60):
            sd.append("R", s.message("rr-new", i))
    return {"INBOX": s.multiset(s.snapshot(p.local, ["INBOX"])["INBOX"]),
            "R": s.multiset(s.snapshot(p.remote, ["R"])["R"]),
            "L\0sub": s.multiset(s.snapshot(p.local, ["L/sub"])["L/sub"])}


def wait_tunnels_gone(pgid, timeout=20):
    """Waits until the killed run's tunnels (its process group: Dovecot's
    imap processes, which see EOF and end after the command they are
    executing) are gone, as when systemd restarts a unit: the rerun must
    not race a server still executing the killed run's last APPEND (no
    client can tell such an APPEND from one that never happened)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)
    raise AssertionError(f"the killed run's tunnels (process group {pgid}) are still running after {timeout}s")


def run_killed(p, delay):
    """Starts interimap, SIGKILLs it after delay seconds unless it ended.
    Returns ('killed', None) or ('exited', returncode, stderr)."""
    proc = p.spawn()
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)  # interimap only: its tunnels see EOF
        proc.wait()
        proc.stderr.close()
        wait_tunnels_gone(proc.pid)
        return ("killed", None, "")
    err = proc.stderr.read().decode("utf-8", "replace")
    proc.stderr.close()
    return ("exited", proc.returncode, err)


# Duplicates after a SIGKILL are tolerated for the reference only.
DUP_OK = s.is_reference() and not os.environ.get("SYNC_STRICT")


def stored_messages(p):
    """Messages stored on both sides, counted as maildir files (no IMAP:
    this runs while interimap works)."""
    n = 0
    for store in (p.local, p.remote):
        for root, dirs, files in os.walk(store.mail):
            if os.path.basename(root) in ("cur", "new"):
                n += len(files)
    return n


def run_killed_at(p, threshold, extra=0.0, timeout=60):
    """Starts interimap and SIGKILLs it extra seconds after the two stores
    hold threshold messages in all (unless it ended first)."""
    proc = p.spawn()
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if stored_messages(p) >= threshold or time.monotonic() > deadline:
            if extra:
                try:
                    proc.wait(timeout=extra)
                    break  # it ended meanwhile
                except subprocess.TimeoutExpired:
                    pass
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stderr.close()
            wait_tunnels_gone(proc.pid)
            return ("killed", None, "")
        time.sleep(0.002)
    err = proc.stderr.read().decode("utf-8", "replace")
    proc.stderr.close()
    return ("exited", proc.returncode, err)


class Crash(unittest.TestCase):
    durations = {}

    def pair(self, **kw):
        return s.Pair(T, self._testMethodName.replace("test_", ""), **kw)

    def calibrate(self, kind, prepare):
        """Wall time of an uninterrupted run of this kind (prepare(pair)
        sets the stores up), measured once on a scratch pair."""
        if kind not in self.durations:
            p = s.Pair(T, f"calibrate-{kind}")
            prepare(p)
            r = p.sync()
            self.durations[kind] = r.elapsed
            s.log(f"an uninterrupted {kind} run takes {r.elapsed:.2f}s")
        return self.durations[kind]

    def kill_loop(self, p, rng, label, span, max_kills=6):
        """Kills runs at random points (within span seconds) until one
        completes on its own (or max_kills); returns the outcomes."""
        outcomes = []
        for _ in range(max_kills):
            delay = rng.uniform(0.02, span)
            outcome = run_killed(p, delay)
            outcomes.append(f"{outcome[0]}@{delay:.2f}s")
            if outcome[0] == "exited":
                self.assertEqual(outcome[1], 0, f"{label}: an uninterrupted rerun failed:\n{outcome[2]}")
                break
        s.log(f"{label}: {', '.join(outcomes)}")
        return outcomes

    def test_sigkill_first_copy(self):
        rng = random.Random(SEED)
        span = self.calibrate("first-copy", seed_first_copy) * 1.1
        failures, killed = [], 0
        # one kill per fresh pair, at stratified points over the run
        points = 3
        for i in range(points):
            p = self.pair()
            e = seed_first_copy(p)
            delay = span * (i + rng.random()) / points
            outcome = run_killed(p, delay)
            killed += outcome[0] == "killed"
            s.log(f"first copy: {outcome[0]}@{delay:.2f}s")
            try:
                p.sync()
                p.check(expect=e, allow_duplicates=DUP_OK)
            except AssertionError as ex:
                failures.append(f"killed at {delay:.2f}s, then rerun: {ex}")
        # one kill per fresh pair when the copy has progressed to some point
        # (messages stored on the target sides), including just after the
        # first APPENDs of a batch and near the end
        progress = [(1, 0), (30, 0), (30, 0.05), (121, 0), (150, 0.02), (150, 0.15), (300, 0), (300, 0.1)]
        for k, extra in progress:
            p = self.pair()
            e = seed_first_copy(p)
            base = stored_messages(p)
            outcome = run_killed_at(p, base + k, extra)
            killed += outcome[0] == "killed"
            s.log(f"first copy: {outcome[0]} {extra:.2f}s after {k} messages were copied "
                  f"({stored_messages(p) - base} of 300 by then)")
            try:
                p.sync()
                p.check(expect=e, allow_duplicates=DUP_OK)
            except AssertionError as ex:
                failures.append(f"killed {extra:.2f}s after {k} of 300 messages were copied, then rerun: {ex}")
        points += len(progress)
        # several kills in a row on one pair
        p = self.pair()
        e = seed_first_copy(p)
        outcomes = self.kill_loop(p, rng, "first copy, kills in a row", span)
        killed += sum(o.startswith("killed") for o in outcomes)
        try:
            p.sync()
            p.check(expect=e, allow_duplicates=DUP_OK)
            p.sync()  # and stable
            p.check(expect=e, allow_duplicates=DUP_OK)
        except AssertionError as ex:
            failures.append(f"after {', '.join(outcomes)}, then rerun: {ex}")
        self.assertGreater(killed, 0, "no run was actually interrupted")
        self.assertEqual(failures, [], f"{len(failures)} interruption point(s) out of {points + 1} "
                         "lost or duplicated messages:\n" + "\n".join(failures))

    def test_sigkill_incremental(self):
        rng = random.Random(SEED + 1)
        span = self.calibrate("incremental", incremental_changes) * 1.1
        killed = 0
        for trial in range(3):
            p = self.pair()
            want = incremental_changes(p)
            outcomes = self.kill_loop(p, rng, f"incremental, trial {trial}", span)
            killed += sum(o.startswith("killed") for o in outcomes)
            p.sync()
            p.check(expect=want, allow_duplicates=DUP_OK)
        self.assertGreater(killed, 0, "no run was actually interrupted")

    def test_tunnel_dies_after_n_bytes(self):
        def relay(p, side, n, count):
            store = p.local if side == "local" else p.remote
            return f"{sys.executable} {RELAY} {n} {count} '{store.command} 2>>{store.log_path}'"

        # bytes of a whole first copy through each tunnel
        p = self.pair()
        e = seed_first_copy(p, 200)
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
        rng = random.Random(SEED + 2)
        cuts = [("remote", n) for n in [40, 300] + [int(total["remote"] * f) for f in (0.1, 0.35, 0.6, 0.85)]
                + [rng.randrange(100, total["remote"])]]
        cuts += [("local", int(total["local"] * f)) for f in (0.3, 0.7)]
        for side, n in cuts:
            with self.subTest(side=side, cut_after=n):
                p = self.pair()
                e = seed_first_copy(p, 200)
                p.write_config(**{f"{side}_command": relay(p, side, n, counts[side])})
                r = p.run(timeout=30)
                what = f"the {side} tunnel died at byte {n}"
                self.assertNotEqual(r.rc, "TIMEOUT", f"hung after {what}\n" + r.describe())
                self.assertNotEqual(r.rc, 0, f"a run whose {what} reported success\n" + r.describe())
                self.assertFalse(isinstance(r.rc, int) and r.rc < 0, "killed by a signal\n" + r.describe())
                s.log(f"{side} cut at byte {n}: exit {r.rc}: {' | '.join(r.error_lines()[-1:])[:160]}")
                p.write_config(**{f"{side}_command": None})
                p.sync()
                p.check(expect=e, allow_duplicates=DUP_OK)


if __name__ == "__main__":
    s.main(globals())
