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
    relay_command    a side's tunnel through cutrelay.py (a cut, a freeze,
                     a transcript)
    transcript, server_stream  a relay's transcript, the server's bytes in it
    run_frozen       a run whose tunnel freezes at a byte (or a line) of
                     the server's answers, SIGKILLed there: a crash at an
                     exact point
    no_op, integrity  a run changed nothing; PRAGMA integrity_check
"""

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
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


# ---------------------------------------------------------------------------
# Crash points in bytes (cutrelay.py --down --freeze)

def relay_command(p, side, n, countfile, *opts):
    """A tunnel command for side through cutrelay.py (opts: --freeze,
    --down, --transcript=FILE) that cuts (or freezes) after n bytes."""
    store = p.local if side == "local" else p.remote
    return f"{sys.executable} {RELAY} {' '.join(opts)} {n} {countfile} '{store.command} 2>>{store.log_path}'"


def transcript(path):
    """[(dir, offset, bytes)] of a cutrelay.py --transcript file."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    i = 0
    while i < len(data):
        j = data.index(b"\n", i)
        d, off, n = data[i:j].split()
        out.append((d.decode(), int(off), data[j + 1:j + 1 + int(n)]))
        i = j + 1 + int(n) + 1
    return out


def server_stream(path):
    """The bytes the server sent the client, as relayed."""
    return b"".join(data for d, _, data in transcript(path) if d == "<")


def run_frozen(p, side, label, n=-1, line=None, past=False, settle=0.3, timeout=60):
    """Runs interimap with side's tunnel frozen (cutrelay.py --down
    --freeze) after n bytes from the server, or at the first line from it
    matching line (a bytes regex; past: after that line); once the relay
    froze, waits settle seconds (the client acts on what it got, then
    waits for an answer) and SIGKILLs interimap.  Returns the server's
    bytes the client got (the transcript).  Fails if the run ended before
    the freeze."""
    base = os.path.join(p.tdir.path, f"{p.name}.{label}")
    count, trans = base + ".count", base + ".transcript"
    for f in (count, trans):
        if os.path.exists(f):
            os.unlink(f)
    opts = ["--down", "--freeze", f"--transcript={trans}"]
    if line is not None:
        opts.append(f"--line='{line.decode()}'")
        if past:
            opts.append("--past")
    point = f"byte {n}" if line is None else f"{'after' if past else 'before'} /{line.decode()}/"
    p.write_config(**{f"{side}_command": relay_command(p, side, n, count, *opts)})
    proc = p.spawn()
    try:
        def frozen():
            if proc.poll() is not None:
                raise AssertionError(f"{label}: the run ended (exit {proc.returncode}) before the "
                                     f"{side} tunnel froze at {point}:\n"
                                     + proc.stderr.read().decode("utf-8", "replace"))
            try:
                with open(count) as f:
                    return "frozen" in f.read()
            except FileNotFoundError:
                return False

        h.wait_until(f"{label}: the {side} tunnel frozen at {point}", frozen, timeout, interval=0.005)
        time.sleep(settle)
        if proc.poll() is not None:
            raise AssertionError(f"{label}: the run ended (exit {proc.returncode}) while its {side} "
                                 "tunnel was frozen:\n" + proc.stderr.read().decode("utf-8", "replace"))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        wait_tunnels_gone(proc.pid)
    finally:
        proc.stderr.close()
        p.write_config(**{f"{side}_command": None})
    return server_stream(trans)


# ---------------------------------------------------------------------------
# After a run

# What a run that changes nothing may print: ours prints nothing, the
# reference its traffic counts.
QUIET = re.compile(r"^\S+: IMAP traffic \(bytes\): ")


def change_lines(r):
    """The lines of a run's stderr that report something (not the
    reference's traffic counts)."""
    return [line for line in r.err.splitlines() if line.strip() and not QUIET.match(line)]


def state(p):
    """(local snapshot, remote snapshot, database) of a pair: UIDs, flags,
    digests; the database's mailboxes and mappings (not its UIDNEXT and
    HIGHESTMODSEQ: a run may catch up with the MODSEQs of its
    predecessor's own STOREs)."""
    db = s.read_db(p.db)
    return s.snapshot(p.local), s.snapshot(p.remote), (db["mailboxes"], {k: sorted(v) for k, v in db["mapping"].items()})


def no_op(p, *args):
    """Runs interimap (args) and returns a list of what it changed: its
    report lines, and the stores or the database differing from before
    (empty: a no-op)."""
    before = state(p)
    r = s.assert_ok(p.run(*args))
    after = state(p)
    problems = [f"reported: {line}" for line in change_lines(r)]
    for what, b, a in zip(("the local store", "the remote store", "the database"), before, after):
        if b != a:
            problems.append(f"{what} changed")
    return problems


def integrity(p):
    """PRAGMA integrity_check of the pair's database ('ok')."""
    con = sqlite3.connect(f"file:{p.db}?mode=ro", uri=True)
    try:
        return "; ".join(row[0] for row in con.execute("PRAGMA integrity_check"))
    finally:
        con.close()
