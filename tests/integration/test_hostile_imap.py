#!/usr/bin/env python3
"""A hostile or broken IMAP server cannot exhaust memory, wedge the state or
duplicate mail (issue 17): interimap and pullimap against the scripted
fake server lib/fakeimap.py (one scenario per run, over a tunnel), each
run under a memory bound and a wall-clock timeout.

Every run goes through bounded(): `prlimit --as=1 GiB` (not under
AddressSanitizer, which reserves terabytes of address space), the peak
RSS sampled from /proc/PID/status (a bound in every build, looser under
ASan), and a 60 s timeout (a wedge fails instead of hanging).  A run
must end with a clean outcome: exit 0 and the right result (each message
delivered or copied exactly once), or a non-zero exit with a clear
"ERROR:" line naming what went wrong; never a signal, a timeout, a raw
control character from the server in the output, or a state that stops
later mail (a statefile or database UIDNEXT of 4294967295).

interimap runs between a real Dovecot store (local, a TunnelStore) and
the fake server (remote); a scenario usually needs a first, well-behaved
run (scenario "normal") to build the state, then the hostile run, then a
well-behaved run again to show that mail still flows.  pullimap delivers
by LMTP into the shared Dovecot daemon of lib/pulllib.py, where the
deliveries are counted."""

import os
import re
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import fakeimap  # noqa: E402
import pulllib as pl  # noqa: E402
import synclib as s  # noqa: E402

MAX_UID = 4294967295
FAKE = os.path.abspath(fakeimap.__file__)
TIMEOUT = 60
AS_LIMIT = 1 << 30          # prlimit --as, normal builds
RSS_LIMIT = 256 << 20       # peak RSS, normal builds (the reader alone may hold 64 MiB)
RSS_LIMIT_ASAN = 1536 << 20  # peak RSS under AddressSanitizer

T = None
PEAKS = []  # (test, tool, scenario, peak RSS in bytes, seconds)


def is_asan(binary):
    """Whether binary (or a library it loads) is built with AddressSanitizer."""
    try:
        r = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30)
        if "libasan" in r.stdout:
            return True
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open(binary, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def require():
    s.require()
    pl.require_pullimap()
    if not h.which("prlimit"):
        h.skip("prlimit (util-linux) not found")


ASAN = None


def setUpModule():
    global T, ASAN
    T = h.TestDir("iit-hostile-")
    ASAN = is_asan(s.INTERIMAP) or is_asan(pl.PULLIMAP)
    log(f"INTERIMAP={s.INTERIMAP} PULLIMAP={pl.PULLIMAP} "
        f"{'AddressSanitizer: RSS bound only' if ASAN else 'prlimit --as=%d' % AS_LIMIT}")


def tearDownModule():
    log("peak RSS per run:")
    for test, tool, scenario, peak, secs in PEAKS:
        log(f"  {test:32} {tool:9} {scenario:18} {peak / (1 << 20):7.1f} MiB {secs:5.2f}s")


def log(msg):
    print(f"[hostile] {msg}", flush=True)


# ---------------------------------------------------------------------------
# Bounded runs

class Bounded(h.Result):
    """An h.Result with the peak RSS (bytes) and the scenario."""
    peak = 0
    scenario = ""

    def describe(self):
        return f"[scenario {self.scenario}, peak RSS {self.peak / (1 << 20):.1f} MiB]\n" + super().describe()


def _rss(pid):
    """max(VmHWM, VmRSS) of pid in bytes, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    vals = [int(m.group(1)) * 1024 for m in re.finditer(r"^Vm(?:HWM|RSS):\s+(\d+) kB", text, re.M)]
    return max(vals) if vals else None


def bounded(argv, env, scenario, test, timeout=TIMEOUT):
    """Runs argv under the memory bound and the timeout, sampling the peak
    RSS; returns a Bounded (rc 'TIMEOUT' on timeout, the group killed)."""
    argv = [str(a) for a in argv]
    full = argv if ASAN else ["prlimit", f"--as={AS_LIMIT}", "--"] + argv
    out_path = os.path.join(T.path, "run.out")
    err_path = os.path.join(T.path, "run.err")
    t0 = time.monotonic()
    with open(out_path, "w+b") as out, open(err_path, "w+b") as err:
        p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                             start_new_session=True)
        peak, rc = 0, None
        try:
            while True:
                v = _rss(p.pid)
                if v is not None:
                    peak = max(peak, v)
                rc = p.poll()
                if rc is not None:
                    break
                if time.monotonic() - t0 > timeout:
                    rc = "TIMEOUT"
                    break
                time.sleep(0.01)
        finally:
            h._kill_group(p)  # the tunnel's server too
            p.wait()
        out.seek(0)
        err.seek(0)
        r = Bounded(argv, rc, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"),
                    time.monotonic() - t0)
    r.peak, r.scenario = peak, scenario
    PEAKS.append((test, os.path.basename(argv[0]), scenario, peak, r.seconds))
    return r


def fake_command(state, scenario, logf):
    return f"{sys.executable} {FAKE} {state} {scenario} {logf} 2>>{logf}"


class Case(unittest.TestCase):
    def assert_bounded(self, r):
        """No timeout, no signal, the peak RSS within the bound."""
        self.assertNotEqual(r.rc, "TIMEOUT", "wedged: " + r.describe())
        self.assertGreaterEqual(r.rc, 0, "killed by a signal: " + r.describe())
        limit = RSS_LIMIT_ASAN if ASAN else RSS_LIMIT
        self.assertLess(r.peak, limit, f"peak RSS above {limit >> 20} MiB: " + r.describe())
        self.assert_escaped(r)

    def assert_escaped(self, r):
        """Nothing the server sent reaches the output raw: no ESC, no CR."""
        for name, text in (("stdout", r.out), ("stderr", r.err)):
            self.assertNotIn("\x1b", text, f"raw ESC on {name}: " + r.describe())
            self.assertNotIn("\r", text, f"raw CR on {name}: " + r.describe())

    def assert_ok(self, r):
        self.assert_bounded(r)
        self.assertEqual(r.rc, 0, r.describe())
        return r

    def assert_error(self, r, *patterns):
        """A clean failure: non-zero exit, an ERROR line matching each regex."""
        self.assert_bounded(r)
        self.assertNotEqual(r.rc, 0, "expected a clean error: " + r.describe())
        lines = r.error_lines()
        self.assertTrue(lines, "no ERROR line: " + r.describe())
        self.assertLess(max(len(l) for l in lines), 2000, "an ERROR line of a server's size: " + r.describe())
        for p in patterns:
            self.assertTrue(any(re.search(p, l, re.I) for l in lines), f"no ERROR line matching /{p}/: " + r.describe())
        log(f"{r.scenario}: exit {r.rc}: {lines[-1][:300]}")
        return r


# ---------------------------------------------------------------------------
# interimap: a Dovecot store (local) and the fake server (remote)

class Sync:
    """A Pair whose remote is the fake server; `fake` its FakeState."""

    def __init__(self, name, remote=0, local=0):
        self.name = name
        self.state = os.path.join(T.path, f"{name}-state.json")
        self.log = os.path.join(T.path, f"{name}-fake.log")
        self.fake = fakeimap.FakeState(self.state)
        for i in range(remote):
            self.fake.append(s.message(f"{name}-r", i))
        self.pair = s.Pair(T, name, remote_command=fake_command(self.state, "normal", self.log))
        if local:
            self.pair.seed("local", {"INBOX": s.msgs(f"{name}-l", local)})

    def run(self, scenario, test):
        self.pair.write_config(remote_command=fake_command(self.state, scenario, self.log))
        env = dict(os.environ, **self.pair.env())
        return bounded([s.INTERIMAP, f"--config={self.pair.config}"], env, scenario, test)

    def local(self):
        return {u: (tuple(f), h.sha256_hex(b)) for u, (f, b) in self.pair.local.messages("INBOX").items()}

    def remote(self):
        return {u: (tuple(f), h.sha256_hex(b)) for u, (f, b) in self.fake.messages().items()}

    def db(self):
        return s.read_db(self.pair.db)

    def uidnexts(self):
        db = self.db()
        return [v[1] for side in ("local", "remote") for v in db[side].values()]

    def hooks(self):
        with open(self.log, errors="replace") as f:
            return [l for l in f.read().splitlines() if " HOOK: " in l]

    def assert_converged(self, case, count):
        """Both sides hold the same `count` distinct bodies, each once, all mapped."""
        lm, rm = self.local(), self.remote()
        lb = sorted(sha for _, sha in lm.values())
        rb = sorted(sha for _, sha in rm.values())
        case.assertEqual(len(lm), count, f"local: {lm}")
        case.assertEqual(len(rm), count, f"remote: {rm}")
        case.assertEqual(len(set(lb)), count, f"local duplicates: {lm}")
        case.assertEqual(lb, rb, "the two sides hold different messages")
        mapping = self.db()["mapping"]
        pairs = [p for v in mapping.values() for p in v]
        case.assertEqual(sorted(l for l, _ in pairs), sorted(lm), "mapped local UIDs")
        case.assertEqual(sorted(r for _, r in pairs), sorted(rm), "mapped remote UIDs")


class InterimapHostile(Case):
    def synced(self, remote=3, local=1):
        x = Sync(self._testMethodName.replace("test_", "im-"), remote=remote, local=local)
        self.assert_ok(x.run("normal", self.id()))
        x.assert_converged(self, remote + local)
        return x

    def dirtied(self, remote=3, local=1):
        """synced(), then a new message on the fake side: interimap SELECTs
        only a mailbox whose LIST-STATUS changed, and the hooks of the
        SELECT scenarios need a SELECT."""
        x = self.synced(remote, local)
        x.fake.append(s.message("dirty", 1))
        return x

    def assert_noop(self, x, count):
        before = (x.local(), x.remote())
        r = self.assert_ok(x.run("normal", self.id()))
        self.assertEqual((x.local(), x.remote()), before, "the next run was not a no-op: " + r.describe())
        x.assert_converged(self, count)

    def assert_uidnext_sane(self, x):
        self.assertNotIn(MAX_UID, x.uidnexts(), f"UIDNEXT 4294967295 in the database: {x.db()}")

    # item 1
    def test_modified_always(self):
        """NO [MODIFIED 1:4294967295] to every conditional STORE: bounded,
        a clean outcome; once the server behaves the flag goes through."""
        x = self.synced()
        with h.Imap(x.pair.local) as m:
            m.flag("INBOX", [1], "+FLAGS", ["\\Flagged"])
        r = x.run("modified", self.id())
        self.assert_bounded(r)
        if r.rc != 0:
            self.assert_error(r)
        self.assertTrue(x.hooks(), "the STORE was never refused")
        self.assert_ok(x.run("normal", self.id()))
        flagged = [u for u, (f, _) in x.remote().items() if "\\Flagged" in f]
        self.assertEqual(len(flagged), 1, x.remote())
        self.assert_noop(x, 4)

    def test_modified_once(self):
        """One refusal: the refused UID is retried (or left for the next
        run); nothing else changes."""
        x = self.synced()
        with h.Imap(x.pair.local) as m:
            m.flag("INBOX", [1], "+FLAGS", ["\\Flagged"])
        r = x.run("modified-once", self.id())
        self.assert_bounded(r)
        if r.rc != 0:
            self.assert_error(r)
        self.assertTrue(x.hooks(), "the STORE was never refused")
        self.assert_ok(x.run("normal", self.id()))
        self.assertEqual(sum("\\Flagged" in f for f, _ in x.remote().values()), 1, x.remote())
        self.assert_noop(x, 4)

    # item 2
    def test_vanished_all(self):
        """* VANISHED 1:4294967295 after SELECT, every message really
        expunged: bounded, and the local side loses exactly those."""
        x = self.dirtied()
        r = self.assert_ok(x.run("vanished-all", self.id()))
        self.assertEqual(x.remote(), {})
        self.assertEqual(x.local(), {}, r.describe())
        self.assert_uidnext_sane(x)
        x.fake.append(s.message("after", 1))
        self.assert_ok(x.run("normal", self.id()))
        x.assert_converged(self, 1)

    # items 2 and 4
    def test_vanished_beyond(self):
        """* VANISHED UIDNEXT+100:4294967295 (UIDs that never existed):
        nothing is lost, UIDNEXT is not raised, later mail is copied."""
        x = self.dirtied()
        r = self.assert_ok(x.run("vanished-beyond", self.id()))
        self.assertTrue(x.hooks())
        x.assert_converged(self, 5)
        self.assert_uidnext_sane(x)
        x.fake.append(s.message("after", 1))
        self.assert_ok(x.run("normal", self.id()))
        x.assert_converged(self, 6)

    # item 3b
    def test_extra_fetch(self):
        """A FETCH for a UID not asked for, and one repeated, during the
        copy: each message copied once, no UNIQUE constraint failure, the
        next run a no-op (4 messages each side, not 5)."""
        x = self.synced(remote=3, local=0)
        x.fake.append(s.message("new", 1))
        r = x.run("extra-fetch", self.id())
        self.assert_ok(r)
        self.assertNotIn("UNIQUE", r.err)
        self.assertTrue(any("not asked for" in l for l in x.hooks()), x.hooks())
        x.assert_converged(self, 4)
        self.assert_noop(x, 4)

    def test_extra_fetch_first_copy(self):
        """The same during a first copy (the repeated message only: every
        UID is asked for)."""
        x = Sync("im-extra-first", remote=4, local=0)
        r = self.assert_ok(x.run("extra-fetch", self.id()))
        self.assertNotIn("UNIQUE", r.err)
        x.assert_converged(self, 4)
        self.assert_noop(x, 4)

    def test_header_flood_adoption(self):
        """Adoption (issue 15) reads headers only: a server that repeats
        each header answer 2000 times and adds 2000 UIDs not asked for
        makes no duplicate and no bogus pair; the 3 messages both sides
        hold are adopted, the local one of its own copied once."""
        x = Sync("im-header-flood", remote=3, local=0)
        with h.Imap(x.pair.local) as m:
            for _, (_, body) in sorted(x.fake.messages().items()):
                m.append("INBOX", body, (), '"07-Feb-1994 21:52:25 -0800"')  # the fake store's date
            m.append("INBOX", s.message("local own", 1), (), '"08-Feb-1994 21:52:25 -0800"')
        r = x.run("header-flood", self.id())
        self.assert_bounded(r)
        self.assert_ok(r)
        self.assertTrue(any("2000 times" in l for l in x.hooks()), x.hooks())
        self.assertRegex(r.err, r"remote\(INBOX\): Adopted 3 of 3 message")
        x.assert_converged(self, 4)
        self.assert_noop(x, 4)

    # item 4
    def uid_bogus(self, scenario, pattern):
        x = self.synced()
        x.fake.append(s.message("new", 1))
        r = x.run(scenario, self.id())
        self.assertTrue(x.hooks(), "the hook did not fire")
        self.assert_error(r, pattern)
        self.assert_uidnext_sane(x)
        # The server behaves again: the new message is copied, once.
        self.assert_ok(x.run("normal", self.id()))
        x.assert_converged(self, 5)
        x.fake.append(s.message("later", 2))
        self.assert_ok(x.run("normal", self.id()))
        x.assert_converged(self, 6)

    def test_uid_max(self):
        """A FETCH with UID 4294967295: a protocol error, UIDNEXT not
        raised to it, later mail copied."""
        self.uid_bogus("uid-max", r"4294967295")

    def test_uid_above_uidnext(self):
        """A message UID at or above the announced UIDNEXT without growth:
        a protocol error."""
        self.uid_bogus("uid-above-uidnext", r"UIDNEXT")

    # item 5
    def test_endless_line(self):
        x = self.dirtied()
        self.assert_error(x.run("endless-line", self.id()), r"remote.*longer than")
        self.assert_ok(x.run("normal", self.id()))
        x.assert_converged(self, 5)

    def test_endless_literals(self):
        x = self.dirtied()
        self.assert_error(x.run("endless-literals", self.id()), r"remote.*longer than")
        self.assert_ok(x.run("normal", self.id()))
        x.assert_converged(self, 5)

    # item 9
    def test_control_characters(self):
        """An ALERT and a LIST name carrying ESC/CR/LF: printed escaped."""
        x = self.dirtied()
        r = x.run("control-chars", self.id())
        self.assert_bounded(r)
        # The local Dovecot refuses the name (exit 1): either way printed escaped.
        self.assertIn("ALERT: \\x1b[31mforged\\x0dlooks like another line\\x1b[0m", r.err, r.describe())
        self.assertIn("evil\\x1b[31mname\\x0d\\x0aforged: line\\x1b[0m", r.err, r.describe())
        for line in r.err.splitlines():
            self.assertFalse(line.startswith(("forged", "looks like")), f"a forged line: {line!r}")

    def test_control_characters_refusal(self):
        x = self.dirtied()
        r = self.assert_error(x.run("control-chars-no", self.id()), r"\\x1b")
        for line in r.err.splitlines():
            self.assertFalse(line.startswith("forged"), f"a forged line: {line!r}")


# ---------------------------------------------------------------------------
# pullimap: the fake server as the source, Dovecot's LMTP as the destination

class Pull:
    def __init__(self, name, count=0):
        self.e = pl.Env(f"iit-hostile-{name}-")
        self.state = os.path.join(self.e.t.path, "fake-state.json")
        self.log = os.path.join(self.e.t.path, "fake.log")
        self.fake = fakeimap.FakeState(self.state)
        self.next_id = 1
        self.add(count)

    def add(self, n=1):
        for _ in range(n):
            self.fake.append(pl.message(self.next_id))
            self.next_id += 1

    def config(self, scenario):
        return self.e.config(command=fake_command(self.state, scenario, self.log))

    def run(self, scenario, test, *args):
        return bounded(self.e.argv(self.config(scenario), *args), self.e.env(), scenario, test)

    def hooks(self):
        with open(self.log, errors="replace") as f:
            return [l for l in f.read().splitlines() if " HOOK: " in l]

    def delivered(self):
        return self.e.delivered_ids()


class PullimapHostile(Case):
    def pull(self, name, count):
        p = Pull(name, count)
        self.assert_ok(p.run("normal", self.id()))
        self.assertEqual(p.delivered(), list(range(1, count + 1)))
        return p

    def assert_state_sane(self, p):
        st = p.e.state()
        self.assertIsNotNone(st)
        self.assertNotIn(MAX_UID, st[1:2], f"statefile UIDNEXT 0xffffffff: {st}")
        self.assertLessEqual(st[1], p.fake.status()["UIDNEXT"], f"statefile past the server's UIDNEXT: {st}")

    # item 3a
    def test_extra_fetch(self):
        """The FETCH of new mail also returns UID 1 (not asked for) and its
        first message twice: each delivered exactly once."""
        p = self.pull("extra", 2)
        p.add(2)
        self.assert_ok(p.run("extra-fetch", self.id()))
        self.assertTrue(any("not asked for" in l for l in p.hooks()), p.hooks())
        self.assertEqual(p.delivered(), [1, 2, 3, 4])
        self.assert_state_sane(p)

    def test_stray_fetch_repeated_runs(self):
        """An unsolicited * 3 FETCH (UID 3 ... BODY[]) on every command of
        every run: UID 3 is delivered once."""
        p = self.pull("stray", 3)
        for i in range(3):
            if i == 2:
                p.add()
            self.assert_ok(p.run("stray-fetch", self.id()))
        self.assertTrue(p.hooks())
        self.assertEqual(p.delivered(), [1, 2, 3, 4])
        self.assert_state_sane(p)

    def test_stray_fetch_idle(self):
        """The same with --idle, the server repeating the stray FETCH every
        0.2 s while idling: new mail delivered, UID 3 once."""
        p = self.pull("stray-idle", 3)
        argv = p.e.argv(p.config("stray-fetch"), "--idle=30")
        full = argv if ASAN else ["prlimit", f"--as={AS_LIMIT}", "--"] + argv
        with open(os.path.join(p.e.t.path, "idle.err"), "wb") as err:
            proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                    env=p.e.env(), start_new_session=True)
        h.at_cleanup(lambda: h._kill_group(proc))
        peak = [0]

        def sample():
            v = _rss(proc.pid)
            if v:
                peak[0] = max(peak[0], v)
            if proc.poll() is not None:
                raise AssertionError(f"pullimap --idle exited ({proc.returncode})")

        def delivered(n):
            def pred():
                sample()
                return n in p.delivered()
            return pred

        t0 = time.monotonic()
        try:
            h.wait_until("pullimap --idle started", lambda: (sample(), len(p.hooks()) >= 3)[1], 20)
            p.add()
            h.wait_until("message 4 delivered", delivered(4), 20)
            end = time.monotonic() + 1.5  # more stray FETCHes while idle
            while time.monotonic() < end:
                sample()
                time.sleep(0.05)
            self.assertEqual(p.delivered(), [1, 2, 3, 4])
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                h._kill_group(proc)
                raise AssertionError("pullimap --idle did not stop on SIGTERM")
            h._kill_group(proc)
        PEAKS.append((self.id(), "pullimap", "stray-fetch --idle", peak[0], time.monotonic() - t0))
        limit = RSS_LIMIT_ASAN if ASAN else RSS_LIMIT
        self.assertLess(peak[0], limit)
        self.assert_state_sane(p)

    # item 4
    def uid_bogus(self, scenario, pattern):
        p = self.pull(scenario, 2)
        p.add()
        r = p.run(scenario, self.id())
        self.assertTrue(p.hooks(), "the hook did not fire")
        self.assert_error(r, pattern)
        self.assert_state_sane(p)
        # The server behaves again: message 3 (if not delivered before the
        # error) and later mail arrive, each once.
        self.assert_ok(p.run("normal", self.id()))
        p.add()
        self.assert_ok(p.run("normal", self.id()))
        self.assertEqual(p.delivered(), [1, 2, 3, 4])
        self.assert_state_sane(p)

    def test_uid_max(self):
        self.uid_bogus("uid-max", r"4294967295")

    def test_uid_above_uidnext(self):
        self.uid_bogus("uid-above-uidnext", r"UIDNEXT")

    def test_vanished_beyond(self):
        """An unsolicited * VANISHED UIDNEXT+100:4294967295: the statefile
        keeps a sane UIDNEXT and later mail arrives."""
        p = self.pull("vanished", 2)
        r = p.run("vanished-beyond", self.id())
        self.assert_bounded(r)
        if r.rc != 0:
            self.assert_error(r)
        self.assert_state_sane(p)
        p.add()
        self.assert_ok(p.run("normal", self.id()))
        self.assertEqual(p.delivered(), [1, 2, 3])

    # item 5
    def test_endless_line(self):
        p = self.pull("endless-line", 1)
        self.assert_error(p.run("endless-line", self.id()), r"acct.*longer than")
        self.assertEqual(p.delivered(), [1])

    def test_endless_literals(self):
        p = self.pull("endless-literals", 1)
        self.assert_error(p.run("endless-literals", self.id()), r"acct.*longer than")
        self.assertEqual(p.delivered(), [1])

    # item 9
    def test_control_characters(self):
        p = self.pull("control", 1)
        p.add()
        r = self.assert_ok(p.run("control-chars", self.id()))
        self.assertIn("ALERT: \\x1b[31mforged\\x0dlooks like another line\\x1b[0m", r.err, r.describe())
        for line in r.err.splitlines():
            self.assertFalse(line.startswith(("forged", "looks like")), f"a forged line: {line!r}")
        self.assertEqual(p.delivered(), [1, 2])

    def test_control_characters_refusal(self):
        p = self.pull("control-no", 1)
        r = self.assert_error(p.run("control-chars-no", self.id()), r"\\x1b")
        for line in r.err.splitlines():
            self.assertFalse(line.startswith("forged"), f"a forged line: {line!r}")


if __name__ == "__main__":
    require()
    unittest.main(verbosity=2)
