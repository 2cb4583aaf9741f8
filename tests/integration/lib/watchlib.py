"""Helpers for the long-lived mode tests (test_watch*.py): interimap
--watch / --notify running in the background against two TunnelStores.

The binary is $INTERIMAP (meson: ours); any interimap 0.5.7-compatible one
works, e.g. INTERIMAP=/usr/bin/interimap python3 tests/integration/test_watch.py

    Watcher        interimap --watch running in the background: alive(),
                   stop(signal), stderr, rss_kb(), fd_count(), cpu_seconds()
    (waiting: h.wait_until(what, predicate, timeout, watcher=watcher))
    capabilities   a store's CAPABILITY list, to configure one without X
"""

import contextlib
import os
import re
import signal
import subprocess
import time

import harness as h
import synclib as s


def log(msg):
    print(f"[watch] {msg}", flush=True)


@contextlib.contextmanager
def step(name):
    t0 = time.monotonic()
    log(f"--- {name}")
    yield
    log(f"    ok ({time.monotonic() - t0:.2f}s)")


class Watcher:
    """interimap --config=PAIR ARGS in its own process group, stderr to a
    file (a pipe could fill up with --debug and block it)."""

    def __init__(self, pair, *args, binary=None):
        self.pair = pair
        self.binary = binary or s.INTERIMAP
        self.argv = [self.binary, f"--config={pair.config}"] + [str(a) for a in args]
        self.err_path = os.path.join(pair.tdir.path, f"{pair.name}-watch-{time.monotonic_ns()}.err")
        self.err_file = open(self.err_path, "wb")
        env = dict(os.environ)
        env.update(pair.env())
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.err_file,
                                     stderr=self.err_file, env=env, start_new_session=True)
        self.started = time.monotonic()
        self.rc = None
        h.at_cleanup(self.kill)
        log(f"started {' '.join(self.argv[0:1] + self.argv[2:])} (pid {self.proc.pid})")

    @property
    def pid(self):
        return self.proc.pid

    @property
    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def describe(self):
        return (f"$ {' '.join(self.argv)}\nexit status {self.proc.poll()}\n"
                f"--- output (last 6000 bytes)\n{self.stderr[-6000:]}---")

    def alive(self):
        return self.proc.poll() is None

    def assert_alive(self, what=""):
        if not self.alive():
            raise AssertionError(f"interimap exited unexpectedly {what}\n" + self.describe())

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Sends sig to the process (not its group) and waits; returns the
        exit status and the seconds it took."""
        t0 = time.monotonic()
        if self.alive():
            self.proc.send_signal(sig)
        try:
            self.rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"interimap did not exit within {timeout}s of {sig!r}\n" + self.describe())
        return self.rc, time.monotonic() - t0

    def wait_exit(self, timeout):
        try:
            self.rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.rc

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
        self.err_file.close()

    # /proc figures --------------------------------------------------------
    def rss_kb(self):
        with open(f"/proc/{self.pid}/status") as f:
            return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))

    def sanitized(self):
        """True when the binary runs under AddressSanitizer (its quarantine
        keeps freed memory, so RSS grows by design; LeakSanitizer checks
        for leaks at exit instead)."""
        with open(f"/proc/{self.pid}/maps") as f:
            return "libasan" in f.read()

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def cpu_seconds(self):
        """utime + stime of the process itself (not its tunnel children)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def io(self):
        """{'rchar': n, 'wchar': n} of /proc/PID/io (bytes through read/write)."""
        out = {}
        with open(f"/proc/{self.pid}/io") as f:
            for line in f:
                k, v = line.split(":")
                out[k] = int(v)
        return out

    def children(self):
        """[(pid, cmdline)] of the direct children (the tunnel commands)."""
        return [(pid, cmd) for pid, (ppid, cmd) in _proc_table().items() if ppid == self.pid]


def _proc_table():
    """{pid: (ppid, cmdline)} of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
            continue
        table[int(entry)] = (ppid, cmd)
    return table


def descendants(pid):
    """[(pid, cmdline)] of every process below pid (tunnel commands and
    what they run)."""
    table = _proc_table()
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, cmd) in table.items():
            if ppid == parent:
                out.append((child, cmd))
                todo.append(child)
    return out


def capabilities(store):
    """The capability list of a store as its greeting gives it."""
    with store.imap() as m:
        return list(m.capabilities)


def capability_conf(store_like, *without):
    """An imap_capability line advertising what store_like advertises
    except the given capabilities (Dovecot still understands them)."""
    drop = {w.upper() for w in without}
    caps = [c for c in capabilities(store_like) if c.upper() not in drop]
    return "imap_capability = " + " ".join(caps) + "\n"


def shas(store, mailbox):
    """{sha256: flags tuple} of a mailbox, {} if it does not exist."""
    names = {n for n, _, _ in store.mailboxes()}
    if mailbox not in names:
        return None
    return {sha: fl for fl, sha in s.snapshot(store, [mailbox])[mailbox].values()}


def has_message(store, mailbox, msg, flags=None):
    """The message (bytes) is in the mailbox (with exactly these flags, if given)."""
    got = shas(store, mailbox)
    if not got:
        return False
    sha = h.sha256_hex(msg)
    if sha not in got:
        return False
    return flags is None or got[sha] == tuple(sorted(flags))


def lacks_message(store, mailbox, msg):
    got = shas(store, mailbox)
    return got is not None and h.sha256_hex(msg) not in got


def uid_of(store, mailbox, msg):
    sha = h.sha256_hex(msg)
    for uid, (_, got) in s.snapshot(store, [mailbox])[mailbox].items():
        if got == sha:
            return uid
    raise AssertionError(f"{store.name}: message {sha[:8]} not in {mailbox}")


def seed_pair(tdir, name, **pair_options):
    """A synchronized Pair with INBOX and 'work' holding a few messages on
    both sides (one plain run of interimap)."""
    pair = s.Pair(tdir, name, **pair_options)
    pair.seed_tag = name
    with h.Imap(pair.local) as sl, h.Imap(pair.remote) as sr:
        sl.create("work")
        sr.create("work")
        for i in range(3):
            sl.append("INBOX", s.message(f"{name}-li", i))
            sr.append("work", s.message(f"{name}-rw", i))
    pair.sync()
    pair.check()
    return pair


def change_steps(pair, tag):
    """The changes the watch tests make while interimap runs: (label, do,
    done) triples; done() reads the other store."""
    L, R = pair.local, pair.remote
    r1 = s.message(f"{tag}-r1")
    l1 = s.message(f"{tag}-l1")
    l2 = s.message(f"{tag}-l2")
    n1 = s.message(f"{tag}-n1")
    w0 = s.message(f"{pair.seed_tag}-rw", 0)

    def flag_r1():
        with h.Imap(L) as sl:
            sl.flag("INBOX", [uid_of(L, "INBOX", r1)], "+FLAGS", ["\\Flagged"])

    def expunge_w0():
        with h.Imap(R) as sr:
            sr.expunge("work", [uid_of(R, "work", w0)])

    def new_mailbox():
        with h.Imap(R) as sr:
            sr.create("new/sub")
            sr.subscribe("new/sub")
            sr.append("new/sub", n1)

    return [
        ("new message remote -> local", lambda: R.append("INBOX", r1),
         lambda: has_message(L, "INBOX", r1)),
        ("flag local -> remote", flag_r1,
         lambda: has_message(R, "INBOX", r1, ["\\Flagged"])),
        ("new message local -> remote", lambda: L.append("work", l1),
         lambda: has_message(R, "work", l1)),
        ("deletion remote -> local", expunge_w0,
         lambda: lacks_message(L, "work", w0)),
        ("new mailbox remote -> local", new_mailbox,
         lambda: has_message(L, "new/sub", n1)),
        ("second new message local -> remote (same mailbox)", lambda: L.append("INBOX", l2),
         lambda: has_message(R, "INBOX", l2)),
    ]


def run_changes(pair, watcher, tag, timeout):
    """Makes each change and waits until the other side shows it; returns
    [(label, seconds)]."""
    out = []
    for label, do, done in change_steps(pair, tag):
        watcher.assert_alive(f"before: {label}")
        do()
        took = h.wait_until(label, done, timeout, watcher=watcher)
        log(f"{label}: {took:.2f}s")
        out.append((label, took))
    return out


def logouts(pair):
    """(local, remote): how many Dovecot sessions of each store ended with
    a LOGOUT so far, from the stores' logs (synclib sends the tunnels'
    stderr there): 'Disconnected: Logged out' (a dropped connection says
    'Disconnected: Connection closed')."""
    return tuple(len(re.findall(r"Disconnected: Logged out", st.read_log())) for st in (pair.local, pair.remote))


def stop_and_check_logout(pair, watcher, sig=signal.SIGTERM, expect_rc=0, max_seconds=5):
    """Sends sig; the watcher must exit with expect_rc (None: any) within
    max_seconds, having logged out of both servers."""
    before = logouts(pair)
    rc, took = watcher.stop(sig)
    if expect_rc is not None:
        assert rc == expect_rc, f"exit status {rc} after {sig!r}, expected {expect_rc}\n" + watcher.describe()
    assert took < max_seconds, f"took {took:.1f}s to stop after {sig!r}\n" + watcher.describe()
    after = logouts(pair)
    if s.is_reference(watcher.binary):
        log(f"reference: LOGOUTs {before} -> {after} (it closes without LOGOUT on signals; not asserted)")
        return rc, took
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1), \
        f"expected one LOGOUT per server after {sig!r}, the stores' logs show {before} -> {after}\n" + \
        watcher.describe()
    return rc, took
