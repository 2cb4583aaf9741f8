"""Shared helpers for the interimap synchronization tests (test_sync_*.py).

The binary under test is $INTERIMAP (meson sets it to ours); any
interimap 0.5.7-compatible binary works, e.g.

    INTERIMAP=/usr/bin/interimap python3 tests/integration/test_sync_basic.py

    Pair           two TunnelStores (local, remote), a config file and a
                   database path; pair.run(...) runs interimap on them
                   (an h.Result); pair.check() is the convergence check
    snapshot       every message of a store (one h.Imap connection)
    message, msgs  distinct messages (h.make_message) to seed with
    read_db        the SQLite state (mailboxes, local, remote, mapping)
    Gate           capgate.py in a side's tunnel (Pair.gate(side)): the
                   violations it recorded, the commands each run sent

The stores are read through imaplib and the database through sqlite3,
never through interimap's output.
"""

import collections
import hashlib
import os
import re
import sqlite3
import subprocess
import sys
import time
import unittest

import harness as h

REFERENCE = "/usr/bin/interimap"
# fsync off: seeding hundreds of messages stays fast; crash tests kill
# interimap, not Dovecot, so durability of the stores is not what we test.
FAST = "mail_fsync = never\n"


def interimap_binary():
    """$INTERIMAP, else tools/interimap/interimap under $INTERIMAP_BUILD_DIR."""
    path = os.environ.get("INTERIMAP", "")
    if not path and os.environ.get("INTERIMAP_BUILD_DIR"):
        path = os.path.join(os.environ["INTERIMAP_BUILD_DIR"], "tools", "interimap", "interimap")
    return path


INTERIMAP = interimap_binary()


def is_reference(path=None):
    path = path or INTERIMAP
    try:
        return os.path.realpath(path) == os.path.realpath(REFERENCE)
    except OSError:
        return False


def require():
    """Skips (77) unless Dovecot, setpriv (as root) and $INTERIMAP are there."""
    h.require("dovecot-imap", "doveconf")
    if h.is_root():
        h.require("setpriv")
    if not INTERIMAP or not os.access(INTERIMAP, os.X_OK):
        h.skip(f"interimap binary not found (INTERIMAP={INTERIMAP!r}); run through meson test "
               "or set INTERIMAP=/usr/bin/interimap")


def log(msg):
    print(f"[sync] {msg}", flush=True)


# ---------------------------------------------------------------------------
# Running interimap

def run(config, *args, binary=None, timeout=60, env=None):
    """Runs BINARY --config=CONFIG ARGS with env added to ours; returns an
    h.Result (rc 'TIMEOUT' on timeout)."""
    binary = binary or INTERIMAP
    full_env = dict(os.environ)
    full_env.update(env or {})
    return h.run([binary, f"--config={config}"] + list(args), timeout=timeout, env=full_env)


def spawn(config, *args, binary=None, env=None):
    """Starts interimap in its own process group; returns the Popen."""
    binary = binary or INTERIMAP
    argv = [binary, f"--config={config}"] + [str(a) for a in args]
    full_env = dict(os.environ)
    full_env.update(env or {})
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=full_env, start_new_session=True)
    h.at_cleanup(lambda: h._kill_group(p))
    return p


def assert_ok(r):
    if r.rc != 0:
        raise AssertionError("interimap failed\n" + r.describe())
    return r


def assert_fails(r, *patterns):
    """Non-zero exit (not a timeout, not a signal) and each regex
    (case-insensitive) in stderr."""
    if r.rc == 0 or r.rc == "TIMEOUT" or (isinstance(r.rc, int) and r.rc < 0):
        raise AssertionError("expected a clean failure (non-zero exit)\n" + r.describe())
    for p in patterns:
        if not re.search(p, r.err, re.IGNORECASE):
            raise AssertionError(f"stderr does not match /{p}/\n" + r.describe())
    log(f"refused as expected (exit {r.rc}): {' | '.join(r.error_lines()[-2:] or r.err.splitlines()[-2:])}")
    return r


# ---------------------------------------------------------------------------
# Reading stores

def _flags(flags):
    return tuple(sorted(f for f in flags if f.lower() != "\\recent"))


def snapshot(store, names=None):
    """{mailbox: {uid: (flags without \\Recent, sha256 hex)}} of every
    selectable mailbox (or of the given names), on one connection."""
    result = {}
    with h.Imap(store) as m:
        if names is None:
            names = [n for n, _, fl in m.list()
                     if not {"\\noselect", "\\nonexistent"} & {f.lower() for f in fl}]
        for name in names:
            result[name] = {uid: (_flags(flags), hashlib.sha256(body or b"").hexdigest())
                            for uid, (flags, body) in m.messages(name).items()}
    return result


def subscribed(store):
    """The set of subscribed mailbox names (LSUB)."""
    with h.Imap(store) as m:
        return {n for n, _, fl in m.lsub() if "\\noselect" not in {f.lower() for f in fl}}


def multiset(msgs):
    """Counter of (flags, sha) of a {uid: (flags, sha)} dict."""
    return collections.Counter(msgs.values())



# ---------------------------------------------------------------------------
# The database

def read_db(path):
    """{'mailboxes': {idx: (name with NUL, subscribed)}, 'local'/'remote':
    {idx: (uidvalidity, uidnext, highestmodseq)}, 'mapping': {idx: [(l, r)]},
    'user_version': n}, read-only."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    con.text_factory = bytes
    try:
        db = {"mailboxes": {}, "local": {}, "remote": {}, "mapping": collections.defaultdict(list)}
        db["user_version"] = con.execute("PRAGMA user_version").fetchone()[0]
        for idx, name, sub in con.execute("SELECT idx, mailbox, subscribed FROM mailboxes"):
            if isinstance(name, bytes):
                name = name.decode("utf-8")
            db["mailboxes"][idx] = (name, sub)
        for side in ("local", "remote"):
            for idx, uv, un, hm in con.execute(f"SELECT idx, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ FROM {side}"):
                db[side][idx] = (uv, un, hm)
        for idx, l, r in con.execute("SELECT idx, lUID, rUID FROM mapping"):
            db["mapping"][idx].append((l, r))
        return db
    finally:
        con.close()


def db_execute(path, *statements):
    """Runs SQL statements on the database (tampering) and commits."""
    con = sqlite3.connect(path)
    try:
        for st in statements:
            if isinstance(st, tuple):
                con.execute(*st)
            else:
                con.execute(st)
        con.commit()
    finally:
        con.close()


# ---------------------------------------------------------------------------
# A pair of stores

_pair_counter = [0]


class Pair:
    """Two TunnelStores and an interimap configuration between them.

    name: a label (directories and the config); local_sep/remote_sep: the
    stores' hierarchy delimiters; default/local_opts/remote_opts: extra
    config options; local_ref/remote_ref: list-reference of each side
    (also used by the convergence check).  local/remote may be given
    (e.g. one local store shared by two pairs)."""

    def __init__(self, tdir, name=None, local=None, remote=None, local_sep="/", remote_sep="/",
                 default=None, local_opts=None, remote_opts=None, local_ref="", remote_ref="",
                 fmt="maildir", remote_command=None, local_command=None, local_caps=None, remote_caps=None):
        _pair_counter[0] += 1
        # unique within the test directory (subtests reuse a name)
        self.name = f"{name or 'pair'}{_pair_counter[0]}"
        self.tdir = tdir
        self.local = local or h.TunnelStore(tdir, f"{self.name}-local", fmt=fmt, separator=local_sep,
                                            extra_conf=FAST, capabilities=local_caps)
        self.remote = remote or h.TunnelStore(tdir, f"{self.name}-remote", fmt=fmt, separator=remote_sep,
                                              extra_conf=FAST, capabilities=remote_caps)
        self.gates = {}
        self.local_ref, self.remote_ref = local_ref, remote_ref
        self.db = os.path.join(tdir.path, f"{self.name}.db")
        self.config = os.path.join(tdir.path, f"{self.name}.ini")
        self.xdg = tdir.sub(f"{self.name}-xdg")
        self.default = dict(default or {})
        self.local_opts = dict(local_opts or {})
        self.remote_opts = dict(remote_opts or {})
        self.remote_command = remote_command
        self.local_command = local_command
        self.write_config()

    def write_config(self, **changes):
        """(Re)writes the config; changes: default=, local_opts=, remote_opts=,
        local_command=, remote_command= (a tunnel command instead of the
        store's own; None: back to it) replace the stored ones."""
        for k, v in changes.items():
            setattr(self, k, v)
        default = {"database": self.db}
        default.update(self.default)
        # Dovecot's own log lines go to the store's log file, not to
        # interimap's stderr (which the tests read for error messages).
        sections = {}
        for side in ("local", "remote"):
            store = getattr(self, side)
            section = store.section(command=f"{store.command} 2>>{store.log_path}")
            if getattr(self, side + "_command"):
                section["command"] = getattr(self, side + "_command")
            if getattr(self, side + "_ref"):
                section["list-reference"] = getattr(self, side + "_ref")
            section.update(getattr(self, side + "_opts"))
            sections[side] = section
        with open(self.config, "w") as f:
            f.write(h.ini_text(sections, default))
        return self.config

    def gate(self, side, forbid=()):
        """Puts capgate.py in side's tunnel (or changes what it forbids);
        returns the Gate."""
        g = self.gates.get(side)
        if g is None:
            g = self.gates[side] = Gate(self, side)
        g.forbid = tuple(forbid)
        self.write_config(**{f"{side}_command": g.command()})
        return g

    def assert_gates_clean(self, when=""):
        """Fails if a gate recorded a violation (since the pair's start)."""
        for g in self.gates.values():
            g.assert_clean(when)

    def env(self):
        return {"XDG_DATA_HOME": os.path.join(self.xdg, "data"),
                "XDG_CONFIG_HOME": os.path.join(self.xdg, "config")}

    def run(self, *args, binary=None, timeout=60):
        return run(self.config, *args, binary=binary, timeout=timeout, env=self.env())

    def sync(self, *args, binary=None, timeout=60):
        """A run that must succeed."""
        return assert_ok(self.run(*args, binary=binary, timeout=timeout))

    def spawn(self, *args, binary=None):
        return spawn(self.config, *args, binary=binary, env=self.env())

    def seed(self, side, spec, create=True):
        """Appends {db name: [(message bytes, flags)]} to a side (creating
        the mailboxes unless INBOX); returns {db name: Counter(flags, sha)}."""
        store = self.local if side == "local" else self.remote
        expect = {}
        with h.Imap(store) as s:
            for dbname, msgs in spec.items():
                name = self.from_db(side, dbname)
                if create and dbname.upper() != "INBOX":
                    s.create(name)
                for msg, flags in msgs:
                    s.append(name, msg, flags)
                expect[dbname] = counter(*msgs)
        return expect

    # names -----------------------------------------------------------------
    def _delim(self, store):
        return store.separator

    def to_db(self, side, name):
        """A store's mailbox name -> the database form (NUL as delimiter),
        or None when outside this pair's list-reference."""
        store, ref = (self.local, self.local_ref) if side == "local" else (self.remote, self.remote_ref)
        if name.upper() == "INBOX" and not ref:
            return "INBOX"
        if ref:
            if not name.startswith(ref):
                return None
            name = name[len(ref):]
        return name.replace(store.separator, "\0")

    def from_db(self, side, dbname):
        store, ref = (self.local, self.local_ref) if side == "local" else (self.remote, self.remote_ref)
        return ref + dbname.replace("\0", store.separator)

    def side_snapshot(self, side, names=None):
        """{db name: {uid: (flags, sha)}} of a side (mailboxes under its reference)."""
        store = self.local if side == "local" else self.remote
        if names is not None:
            snap = snapshot(store, [self.from_db(side, n) for n in names])
        else:
            snap = snapshot(store)
        out = {}
        for name, msgs in snap.items():
            dbname = self.to_db(side, name)
            if dbname is not None:
                out[dbname] = msgs
        return out

    # the convergence check ----------------------------------------------
    def check(self, mailboxes=None, expect=None, subscriptions=True, allow_duplicates=False):
        """The convergence check.  For each mailbox (every selectable one
        on either side, or the given database names): both sides hold the
        same multiset of (flags without \\Recent, body SHA-256), and the
        database maps exactly those messages (each lUID exists locally,
        each rUID remotely, with the same body; every message is mapped
        once).  expect: {db name: Counter of (flags, sha)} that each side
        must hold exactly (nothing lost, nothing duplicated).
        subscriptions: the subscribed sets of both sides agree.
        allow_duplicates: accept extra copies of expected messages (for
        the reference, which duplicates after some interruptions).
        Returns (local snapshot, remote snapshot, db)."""
        lsnap = self.side_snapshot("local", mailboxes)
        rsnap = self.side_snapshot("remote", mailboxes)
        db = read_db(self.db)
        problems = []
        if mailboxes is None and set(lsnap) != set(rsnap):
            problems.append(f"mailbox lists differ: local only {sorted(set(lsnap) - set(rsnap))!r}, "
                            f"remote only {sorted(set(rsnap) - set(lsnap))!r}")
        by_name = {name: idx for idx, (name, _) in db["mailboxes"].items()}
        for name in sorted(set(lsnap) & set(rsnap)):
            lm, rm = lsnap[name], rsnap[name]
            if multiset(lm) != multiset(rm):
                problems.append(f"{name!r}: contents differ: local {_describe(lm)} remote {_describe(rm)}")
            idx = by_name.get(name)
            if idx is None:
                if lm or rm:
                    problems.append(f"{name!r}: not in the database (mailboxes table)")
                continue
            mapping = db["mapping"].get(idx, [])
            lu = collections.Counter(l for l, _ in mapping)
            ru = collections.Counter(r for _, r in mapping)
            if [u for u, n in lu.items() if n > 1] or [u for u, n in ru.items() if n > 1]:
                problems.append(f"{name!r}: a UID mapped twice: {mapping!r}")
            if set(lu) != set(lm):
                problems.append(f"{name!r}: mapped lUIDs {sorted(lu)} != local UIDs {sorted(lm)}")
            if set(ru) != set(rm):
                problems.append(f"{name!r}: mapped rUIDs {sorted(ru)} != remote UIDs {sorted(rm)}")
            for l, r in mapping:
                if l in lm and r in rm and lm[l][1] != rm[r][1]:
                    problems.append(f"{name!r}: mapping ({l}, {r}) joins different bodies")
            if expect is not None and name in expect:
                for side, snap in (("local", lm), ("remote", rm)):
                    got = multiset(snap)
                    if allow_duplicates and set(got) == set(expect[name]):
                        dup = sum(got.values()) - sum(expect[name].values())
                        if dup:
                            log(f"{name!r}: {side} holds {dup} duplicate(s) (tolerated for this binary)")
                        continue
                    if got != expect[name]:
                        problems.append(f"{name!r}: {side} holds {_describe(snap)}, expected "
                                        f"{_describe_counter(expect[name])}")
        if expect is not None:
            for name in expect:
                if name not in lsnap or name not in rsnap:
                    problems.append(f"{name!r}: expected mailbox missing (local {name in lsnap}, "
                                    f"remote {name in rsnap})")
        if subscriptions and mailboxes is None:
            ls = {self.to_db("local", n) for n in subscribed(self.local)} - {None}
            rs = {self.to_db("remote", n) for n in subscribed(self.remote)} - {None}
            if ls != rs:
                problems.append(f"subscriptions differ: local {sorted(ls)!r} remote {sorted(rs)!r}")
        if problems:
            raise AssertionError(f"[{self.name}] not converged:\n  " + "\n  ".join(problems))
        return lsnap, rsnap, db


# ---------------------------------------------------------------------------
# The capability gate (lib/capgate.py)

CAPGATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "capgate.py")


class Gate:
    """capgate.py between interimap and one side's store: every command
    using an extension the store did not advertise (or one in forbid: a
    forced mode) is a violation, appended to `violations_path`; every
    command is logged to `log_path` (made by Pair.gate(side))."""

    def __init__(self, pair, side):
        self.pair, self.side, self.forbid = pair, side, ()
        self.store = pair.local if side == "local" else pair.remote
        base = os.path.join(pair.tdir.path, f"{pair.name}-{side}-gate")
        self.violations_path, self.log_path = base + ".violations", base + ".log"
        for path in (self.violations_path, self.log_path):
            open(path, "w").close()
            os.chmod(path, 0o666)

    def command(self):
        forbid = f" --forbid={','.join(self.forbid)}" if self.forbid else ""
        return (f"{sys.executable} {CAPGATE} --log={self.log_path}{forbid} {self.violations_path} "
                f"'{self.store.command} 2>>{self.store.log_path}'")

    def violations(self):
        with open(self.violations_path, errors="replace") as f:
            return [line.rstrip("\n") for line in f if line.strip()]

    def assert_clean(self, when=""):
        v = self.violations()
        if v:
            raise AssertionError(f"[{self.pair.name}] the {self.side} gate recorded {len(v)} violation(s)"
                                 f"{' ' + when if when else ''}:\n  " + "\n  ".join(v[:20]))

    def mark(self):
        """A point in the log: commands(mark) gives what was sent since."""
        return os.path.getsize(self.log_path)

    def commands(self, since=0):
        """[(verb, command text without its tag)] logged since a mark;
        verb: the command name, with UID (e.g. 'UID FETCH')."""
        with open(self.log_path, "rb") as f:
            f.seek(since)
            lines = f.read().decode("utf-8", "replace").splitlines()
        out = []
        for line in lines:
            if not line.startswith("C "):
                continue
            words = line.split(" ", 3)  # C pid tag command
            cmd = words[3] if len(words) > 3 else ""
            parts = cmd.split(" ")
            verb = parts[0].upper()
            if verb == "UID" and len(parts) > 1:
                verb = "UID " + parts[1].upper()
            out.append((verb, cmd))
        return out

    def connections(self, since=0):
        """[{'up': bytes, 'down': bytes, 'commands': n}] of the connections that ended since a mark."""
        with open(self.log_path, "rb") as f:
            f.seek(since)
            lines = f.read().decode("utf-8", "replace").splitlines()
        out = []
        for line in lines:
            if line.startswith("# end "):
                out.append({k: int(v) for k, v in (w.split("=") for w in line.split()[3:])})
        return out


def _describe(msgs):
    return _describe_counter(multiset(msgs))


def _describe_counter(c):
    total = sum(c.values())
    dup = sum(n - 1 for n in c.values() if n > 1)
    items = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))  # duplicates first
    shown = ", ".join(f"{sha[:8]}{list(fl)}x{n}" for (fl, sha), n in items[:6])
    more = f", ... ({len(items) - 6} more)" if len(items) > 6 else ""
    return f"{total} messages ({dup} duplicates) [{shown}{more}]"


def counter(*pairs):
    """Counter of (flags tuple, sha) from (message bytes, flags) pairs."""
    c = collections.Counter()
    for msg, flags in pairs:
        c[(_flags(flags), hashlib.sha256(msg).hexdigest())] += 1
    return c


def message(tag, i=0, size=None, body=None):
    """A distinct small message."""
    return h.make_message(subject=f"{tag} {i}", body=body or f"Message {tag} number {i}.\r\n", size=size)


def msgs(tag, n, flags=(), size=None):
    """[(message(tag, i), [flags])] for i < n, as Pair.seed takes them;
    flags and size may be functions of i."""
    return [(message(tag, i, size=size(i) if callable(size) else size),
             list(flags(i) if callable(flags) else flags)) for i in range(n)]


def selectable(store):
    """The set of a store's selectable mailbox names (LIST through imaplib)."""
    return {n for n, _, fl in store.mailboxes() if "\\noselect" not in {f.lower() for f in fl}}


def db_names(pair):
    """The set of mailbox names in a pair's database (NUL as delimiter)."""
    return {n for n, _ in read_db(pair.db)["mailboxes"].values()}


def merge(*expects):
    """Sums {db name: Counter} dicts."""
    out = {}
    for e in expects:
        for k, v in e.items():
            out[k] = out.get(k, collections.Counter()) + v
    return out


# ---------------------------------------------------------------------------
# Seeded pairs whose state must not change (test_sync_errors.py,
# test_sync_commands.py)

class SeededCase(unittest.TestCase):
    """A TestCase whose synced() gives a Pair, named after the test, after
    a first copy of INBOX, Box (\\Seen), Par and Par/kid (local) and Other
    (remote).  The script's setUpModule sets SeededCase.tdir."""

    tdir = None

    def synced(self, **kw):
        p = Pair(self.tdir, self._testMethodName.replace("test_", ""), **kw)
        e = merge(p.seed("local", {"INBOX": msgs("in", 3), "Box": msgs("box", 3, ["\\Seen"]),
                                   "Par": msgs("par", 1), "Par\0kid": msgs("kid", 2)}),
                  p.seed("remote", {"Other": msgs("other", 2)}))
        p.sync()
        p.check(expect=e)
        return p, e

    def state(self, p):
        """(local snapshot, remote snapshot, database)."""
        return snapshot(p.local), snapshot(p.remote), read_db(p.db)

    def assert_unchanged(self, p, before):
        after = self.state(p)
        self.assertEqual(before[0], after[0], "local store changed")
        self.assertEqual(before[1], after[1], "remote store changed")
        self.assertEqual(before[2], after[2], "database changed")


def main(globals_):
    """Runs the calling module's tests (verbose, each timed) after
    require(); command-line arguments (by hand, or through `meson test
    --test-args`) keep only the tests whose id contains one of them:
    Class.test_method runs one.  meson runs a script whole."""
    require()
    log(f"INTERIMAP={INTERIMAP}" + (" (the reference)" if is_reference() else ""))
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[globals_["__name__"]])
    if len(sys.argv) > 1:
        suite = unittest.TestSuite(t for t in _iter(suite) if any(a in t.id() for a in sys.argv[1:]))
        if suite.countTestCases() == 0:
            print(f"no test matches {sys.argv[1:]}", flush=True)
            sys.exit(1)

    class Timed(unittest.TextTestResult):
        def startTest(self, test):
            self._t0 = time.monotonic()
            super().startTest(test)

        def stopTest(self, test):
            super().stopTest(test)
            log(f"{test.id().split('.')[-1]}: {time.monotonic() - self._t0:.1f}s")

    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout, resultclass=Timed).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)


def _iter(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _iter(t)
        else:
            yield t
