"""Shared pieces of the interruption tests (test_sync_kill.py,
test_sync_kill_incr.py, test_sync_cut.py): interimap ($INTERIMAP)
interrupted, then run again: converged, nothing lost, nothing duplicated
(each side holds exactly the expected multiset of (flags, body digest),
and the database maps exactly those messages).

    SEED             SYNC_SEED=n replays the random delays of a previous run
                     (each script prints the one it used)
    DUP_OK           duplicates tolerated: the reference only, unless
                     SYNC_STRICT=1 (it duplicates the messages of a mailbox
                     whose copy was killed, or whose tunnel died, between
                     its APPENDs and its database commit)
    RELAY            cutrelay.py: a tunnel that dies after N bytes
    seed_first_copy  300 (or n) messages in both directions
    incremental_changes  changes on both sides after a first copy
    run_killed       SIGKILL after a delay; run_killed_at: after the stores
                     hold a number of messages
    CrashCase        the TestCase base: pair(), calibrate(), kill_loop()
"""

import os
import random
import signal
import subprocess
import time
import unittest

import harness as h
import synclib as s

SEED = int(os.environ.get("SYNC_SEED") or random.randrange(1 << 30))
RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cutrelay.py")


def msgs(tag, n, flags=lambda i: ()):
    return s.msgs(tag, n, flags, size=lambda i: 300 + 37 * (i % 50))


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
    with h.Imap(p.local) as sd:
        u = sd.uids("INBOX")
        sd.flag("INBOX", u[:40], "+FLAGS", ["\\Flagged", "$Crash"])
        sd.flag("INBOX", u[40:60], "-FLAGS", ["\\Seen"])
        sd.expunge("INBOX", u[60:75])
        for i in range(60):
            sd.append("INBOX", s.message("li-new", i), ["\\Seen"] if i % 2 else [])
    with h.Imap(p.remote) as sd:
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
    def gone():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False

    h.wait_until(f"the killed run's tunnels (process group {pgid}) gone", gone, timeout, interval=0.01)


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


class CrashCase(unittest.TestCase):
    """The script's setUpModule calls CrashCase.setup(prefix): a TestDir."""

    tdir = None
    durations = {}  # kind -> seconds of an uninterrupted run (calibrate)

    @classmethod
    def setup(cls, prefix):
        CrashCase.tdir = h.TestDir(prefix)
        s.log(f"SYNC_SEED={SEED}")

    def pair(self, **kw):
        return s.Pair(self.tdir, self._testMethodName.replace("test_", ""), **kw)

    def calibrate(self, kind, prepare):
        """Wall time of an uninterrupted run of this kind (prepare(pair)
        sets the stores up), measured once on a scratch pair."""
        if kind not in self.durations:
            p = s.Pair(self.tdir, f"calibrate-{kind}")
            prepare(p)
            r = p.sync()
            self.durations[kind] = r.seconds
            s.log(f"an uninterrupted {kind} run takes {r.seconds:.2f}s")
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
