"""Real servers for the integration tests, started and stopped per test.

Python 3 standard library only.  Everything lives in a fresh directory
per test (TestDir) and listens on 127.0.0.1 only; every process started
here is killed and every directory removed when the script exits, even
on failure or SIGTERM (meson's timeout).  Set INTERIMAP_TEST_KEEP=1 to
keep the directories for a post-mortem.

    TestDir        a temporary directory, removed at exit
    TunnelStore    a Dovecot store reached as a pre-authenticated tunnel
                   (no daemon): `command` for a `type = tunnel` section;
                   capabilities=GMAIL_LIKE or M365_LIKE (or any list)
                   advertises a provider's list instead of Dovecot's
    DovecotDaemon  a Dovecot master with IMAP (plain + STARTTLS), IMAPS,
                   optionally LMTP, a self-signed certificate and a
                   passwd-file user database
    Microsocks     a SOCKS5 proxy, with or without username/password
    SmtpdServer    a real SMTP server (Python's smtpd, smtpd_server.py)
    run_probe      runs $IMAP_PROBE (set by meson) on a configuration file
    run_reference  the same connection through the reference's Perl
                   library (Net::IMAP::InterIMAP 0.5.7), as an oracle

The one vocabulary of every test script (and of synclib, watchlib,
pulllib, crashlib):

    Result         what a program did: argv, rc ('TIMEOUT' on timeout),
                   out, err, seconds; describe(), error_lines()
    run            runs a program and returns its Result
    wait_until     polls a condition; returns the seconds it took
    make_message   an RFC 5322 message (bytes, CRLF)
    Imap           one imaplib connection to a store, for seeding,
                   editing and reading it independently of the project's
                   code (`with h.Imap(store) as m: m.append(...)`);
                   stores also have one-connection shortcuts
                   (`store.append`, `store.mailboxes`, `store.status`,
                   `store.messages`) and `with store.imap() as m` gives
                   the imaplib object itself

A test that needs a missing tool calls require(...), which exits 77
(SKIP for meson) unless CI=true, where a missing tool is a failure.

Typical use (see test_*.py):

    h.require("imap-probe", "dovecot", "openssl")
    t = h.TestDir("iit-mytest-")
    d = h.DovecotDaemon(t, lmtp=True)          # or TunnelStore(t, ...)
    h.start_all(d, h.Microsocks(t))            # servers start in parallel
    cfg = h.write_config(t, {"remote": d.section(type="imaps", compress="YES")})
    r = h.assert_ok(h.run_probe(cfg, "list", section="remote"))
    assert h.parse_list(r.out)["INBOX"]["messages"] == d.status("INBOX")["MESSAGES"]

As root (CI), stores and Dovecot's processes belong to the user
interimap-test (made by .ci/run) or else nobody: Dovecot refuses to
serve mail as root.  Temporary directories are made under /tmp (or
$INTERIMAP_TEST_TMPDIR) with mode 0755 so that user can reach them.
"""

import atexit
import contextlib
import grp
import hashlib
import imaplib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

SKIP = 77
IN_CI = os.environ.get("CI", "").lower() == "true"
KEEP = os.environ.get("INTERIMAP_TEST_KEEP", "") not in ("", "0")
# Where dovecot, doveadm and doveconf live (sbin is not on a user's PATH).
TOOL_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin",
                             "/usr/local/bin", "/usr/bin", "/bin"])
# The user a test store belongs to when the tests run as root.
TEST_USER = os.environ.get("INTERIMAP_TEST_USER", "interimap-test")


class HarnessError(Exception):
    """A server could not be set up; the message says why."""


def log(msg):
    print(f"[harness] {msg}", flush=True)


# ---------------------------------------------------------------------------
# Tools, skipping and cleanup

def which(tool):
    return shutil.which(tool, path=TOOL_PATH)


def skip(reason):
    """Exits 77 (SKIP), or 1 under CI where nothing may be skipped."""
    if IN_CI:
        print(f"FAIL (CI=true, nothing may be skipped): {reason}", flush=True)
        sys.exit(1)
    print(f"SKIP: {reason}", flush=True)
    sys.exit(SKIP)


def require(*tools):
    """Makes sure each tool is available: a program name, or 'imap-probe'
    for $IMAP_PROBE, or 'dovecot-imap' for Dovecot's imap binary."""
    for tool in tools:
        if tool == "imap-probe":
            path = os.environ.get("IMAP_PROBE", "")
            if not path or not os.access(path, os.X_OK):
                skip(f"imap-probe not found (IMAP_PROBE={path!r}); run through meson test")
        elif tool == "dovecot-imap":
            if not os.access(dovecot_imap_binary(), os.X_OK):
                skip("Dovecot's imap binary not found (apt-get install dovecot-imapd)")
        elif tool == "dovecot-lmtp":
            if not os.access(os.path.join(libexec_dir(), "lmtp"), os.X_OK):
                skip("Dovecot's lmtp binary not found (apt-get install dovecot-lmtpd)")
        elif which(tool) is None:
            skip(f"{tool} not found")


_cleanups = []


def at_cleanup(fn):
    """Runs fn() when the script exits (last registered first)."""
    _cleanups.append(fn)
    return fn


def _run_cleanups():
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:  # keep cleaning up
            log(f"cleanup error: {e!r}")


def _on_signal(signum, _frame):
    # Meson sends SIGTERM on timeout.  atexit does not run on a fatal
    # signal, and a SystemExit raised inside a unittest test would only
    # fail that test: clean up and leave at once.
    log(f"received signal {signum}: stopping servers and exiting")
    _run_cleanups()
    sys.stdout.flush()
    os._exit(128 + signum)


atexit.register(_run_cleanups)
for _sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _on_signal)


# ---------------------------------------------------------------------------
# Users and directories

class User:
    """The unprivileged account servers and stores run as."""

    def __init__(self, name, uid, gid, group):
        self.name, self.uid, self.gid, self.group = name, uid, gid, group

    def __repr__(self):
        return f"User({self.name}, {self.uid}:{self.gid})"


def is_root():
    return os.geteuid() == 0


_service_user = None


def service_user():
    """The current user, or when root the dedicated test user (created by
    .ci/run) if it exists, else nobody."""
    global _service_user
    if _service_user is None:
        if is_root():
            for name in (TEST_USER, "nobody"):
                try:
                    pw = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            else:
                raise HarnessError(f"running as root but neither {TEST_USER} nor nobody exists")
        else:
            pw = pwd.getpwuid(os.geteuid())
        try:
            group = grp.getgrgid(pw.pw_gid).gr_name
        except KeyError:
            group = str(pw.pw_gid)
        _service_user = User(pw.pw_name, pw.pw_uid, pw.pw_gid, group)
    return _service_user


def chown_tree(path, user):
    os.chown(path, user.uid, user.gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), user.uid, user.gid)


def _traversable_by_all(path):
    path = os.path.abspath(path)
    while True:
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except OSError:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _tmp_base():
    base = os.environ.get("INTERIMAP_TEST_TMPDIR") or tempfile.gettempdir()
    # The unprivileged user must traverse it; Dovecot's unix sockets must fit
    # in sun_path (108 bytes), so prefer a short base.
    if (is_root() and not _traversable_by_all(base)) or len(base) > 40:
        base = "/tmp"
    return base


class TestDir:
    """A fresh directory (mode 0755, traversable by the service user),
    removed at exit unless INTERIMAP_TEST_KEEP is set."""

    def __init__(self, prefix="iit-"):
        self.path = tempfile.mkdtemp(prefix=prefix, dir=_tmp_base())
        os.chmod(self.path, 0o755)
        at_cleanup(self.remove)

    def sub(self, name):
        path = os.path.join(self.path, name)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o755)
        return path

    def file(self, name, data, mode=0o644):
        path = os.path.join(self.path, name)
        with open(path, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.chmod(path, mode)
        return path

    def remove(self):
        if KEEP:
            log(f"keeping {self.path}")
            return
        shutil.rmtree(self.path, ignore_errors=True)

    def __str__(self):
        return self.path


# ---------------------------------------------------------------------------
# Ports and processes

def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (held together while chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(what, predicate, timeout, watcher=None, interval=0.1, error=AssertionError):
    """Calls predicate() every interval seconds until it returns a true
    value; returns the seconds it took.  Raises error naming what after
    timeout seconds, or at once when watcher (an object with
    assert_alive(what) and describe(), e.g. a watchlib.Watcher) died."""
    t0 = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - t0
        if watcher is not None:
            watcher.assert_alive(f"while waiting for: {what}")
        if time.monotonic() - t0 > timeout:
            extra = ("\n" + watcher.describe()) if watcher is not None else ""
            raise error(f"not within {timeout:.1f}s: {what}{extra}")
        time.sleep(interval)


def wait_for_ports(ports, proc=None, timeout=15, what="server"):
    """Waits until every port accepts a connection; fails early if proc exits."""
    pending = list(ports)

    def listening():
        if proc is not None and proc.poll() is not None:
            raise HarnessError(f"{what} exited with status {proc.returncode} before listening")
        while pending and port_open(pending[0]):
            pending.pop(0)
        return not pending

    wait_until(f"{what}: port(s) {pending} accepting connections", listening, timeout, interval=0.02,
               error=HarnessError)


class Process:
    """A child in its own process group, killed (group included) at exit."""

    def __init__(self, argv, what, log_path=None):
        """stdout and stderr go to log_path (appended), else to /dev/null."""
        self.what = what
        self.argv = argv
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True)
        finally:
            if log_path:
                out.close()  # the child has its own copy
        at_cleanup(self.stop)

    def poll(self):
        return self.proc.poll()

    @property
    def returncode(self):
        return self.proc.returncode

    @property
    def pid(self):
        return self.proc.pid

    def stop(self, timeout=5):
        """SIGTERM, then SIGKILL; then kills what is left of its group."""
        if self.proc.poll() is None:
            try:
                self.proc.terminate()
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def start_all(*servers):
    """Starts servers concurrently: spawns them all, then waits for each."""
    for s in servers:
        s.spawn()
    for s in servers:
        s.wait_ready()
    return servers


# ---------------------------------------------------------------------------
# Dovecot

_libexec_dir = None


def libexec_dir():
    global _libexec_dir
    if _libexec_dir is None:
        doveconf = which("doveconf")
        out = ""
        if doveconf:
            r = subprocess.run([doveconf, "-h", "libexec_dir"], capture_output=True, text=True)
            out = r.stdout.strip() if r.returncode == 0 else ""
        _libexec_dir = out or "/usr/lib/dovecot"
    return _libexec_dir


def dovecot_imap_binary():
    return os.path.join(libexec_dir(), "imap")


def _mail_location(fmt, path):
    if fmt not in ("maildir", "mdbox", "sdbox"):
        raise ValueError(f"unknown mail format {fmt}")
    return f"{fmt}:{path}"


def _plugins_conf(compress):
    if compress:
        return ("mail_plugins = $mail_plugins zlib notify\n"
                "protocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n")
    return "mail_plugins = $mail_plugins notify\n"


def imap_quote(s):
    """An IMAP quoted string (for names given to imaplib, which sends as is)."""
    if isinstance(s, bytes):
        s = s.decode("utf-8")
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(tok):
    if tok.startswith('"'):
        return re.sub(r'\\(.)', r'\1', tok[1:-1])
    return tok


_LIST_RE = re.compile(rb'^\((?P<flags>[^)]*)\) (?P<delim>NIL|"(?:\\.|[^"])") (?P<name>.*)$')


def _parse_list(data):
    """imaplib LIST data -> [(name, delimiter or None, [flags])]."""
    out = []
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):  # name sent as a literal
            m = _LIST_RE.match(item[0].rstrip() + b" X")
            name = item[1].decode("utf-8", "replace")
        else:
            m = _LIST_RE.match(item)
            name = _unquote(m.group("name").decode("utf-8", "replace")) if m else None
        if m is None:
            raise HarnessError(f"cannot parse LIST response {item!r}")
        delim = m.group("delim").decode()
        delim = None if delim == "NIL" else _unquote(delim)
        out.append((name, delim, m.group("flags").decode().split()))
    return out


class Imap:
    """One imaplib connection to a store (a TunnelStore, or a DovecotDaemon
    as its default user or as user=..., password=...), for seeding,
    editing and reading it independently of the project's code:

        with h.Imap(store) as m:
            uid = m.append("INBOX", msg, flags=["\\Seen"])
            m.flag("INBOX", [uid], "+FLAGS", ["\\Flagged"])
            m.messages("INBOX")     # {uid: (sorted flags, body)}

    Mailbox names are quoted here; every command must answer OK (else
    HarnessError).  m.m is the imaplib object, for anything else."""

    def __init__(self, store, **login):
        self.store, self.login = store, login
        self.m = None

    def __enter__(self):
        self.m = self.store._connect(**self.login)
        return self

    def __exit__(self, *exc):
        try:
            self.m.logout()
        except Exception:
            pass

    def _ok(self, typ, data, what):
        if typ != "OK":
            raise HarnessError(f"{self.store.name}: {what}: {typ} {data!r}")
        return data

    def create(self, name):
        self._ok(*self.m.create(imap_quote(name)), f"CREATE {name}")

    def delete(self, name):
        self._ok(*self.m.delete(imap_quote(name)), f"DELETE {name}")

    def subscribe(self, name, on=True):
        if on:
            self._ok(*self.m.subscribe(imap_quote(name)), f"SUBSCRIBE {name}")
        else:
            self._ok(*self.m.unsubscribe(imap_quote(name)), f"UNSUBSCRIBE {name}")

    def append(self, mailbox, message, flags=(), date=None, create=False):
        """Appends bytes (or text); returns the new UID (from APPENDUID).
        create: CREATE the mailbox first (unless INBOX), whatever the answer."""
        if isinstance(message, str):
            message = message.encode()
        if create and mailbox.upper() != "INBOX":
            self.m.create(imap_quote(mailbox))
        fl = "(" + " ".join(flags) + ")" if flags else None
        data = self._ok(*self.m.append(imap_quote(mailbox), fl, date, message), f"APPEND {mailbox}")
        mo = re.search(rb"APPENDUID (\d+) (\d+)", data[0] or b"")
        return int(mo.group(2)) if mo else None

    def select(self, mailbox, readonly=False):
        """SELECT (EXAMINE when readonly); returns the number of messages."""
        data = self._ok(*self.m.select(imap_quote(mailbox), readonly=readonly),
                        f"{'EXAMINE' if readonly else 'SELECT'} {mailbox}")
        return int(data[0])

    def uids(self, mailbox):
        self.select(mailbox)
        data = self._ok(*self.m.uid("SEARCH", "ALL"), "UID SEARCH")
        return [int(x) for x in data[0].split()]

    def flag(self, mailbox, uids, op, flags):
        """UID STORE uids op (flags); op is +FLAGS, -FLAGS or FLAGS."""
        self.select(mailbox)
        uidset = ",".join(str(u) for u in uids) if not isinstance(uids, str) else uids
        self._ok(*self.m.uid("STORE", uidset, op + ".SILENT", "(" + " ".join(flags) + ")"),
                 f"UID STORE {uidset} {op}")

    def expunge(self, mailbox, uids):
        self.flag(mailbox, uids, "+FLAGS", ["\\Deleted"])
        uidset = ",".join(str(u) for u in uids)
        self._ok(*self.m.uid("EXPUNGE", uidset), f"UID EXPUNGE {uidset}")

    def list(self, reference="", pattern="*"):
        """[(name, delimiter, [LIST flags])] as the server lists them."""
        return _parse_list(self._ok(*self.m.list(imap_quote(reference), imap_quote(pattern)), "LIST"))

    def lsub(self, reference="", pattern="*"):
        """[(name, delimiter, [LSUB flags])]: the subscribed mailboxes."""
        return _parse_list(self._ok(*self.m.lsub(imap_quote(reference), imap_quote(pattern)), "LSUB"))

    def status(self, mailbox):
        """{'MESSAGES': n, 'UIDNEXT': n, 'UIDVALIDITY': n, 'HIGHESTMODSEQ': n}."""
        data = self._ok(*self.m.status(imap_quote(mailbox), "(MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)"),
                        f"STATUS {mailbox}")
        # imaplib gives b'"name" (MESSAGES 1 ...)' (or a tuple when the name is a literal)
        line = b"".join(x if isinstance(x, bytes) else x[0] + x[1] for x in data if x)
        items = re.search(rb"\(([^()]*)\)\s*$", line).group(1).split()
        return {items[i].decode().upper(): int(items[i + 1]) for i in range(0, len(items), 2)}

    def messages(self, mailbox):
        """{uid: (sorted flags, body bytes)} of every message, read with EXAMINE."""
        if self.select(mailbox, readonly=True) == 0:
            return {}
        return _parse_fetch(self._ok(*self.m.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])"), "UID FETCH"))


class ImapInspector:
    """A store's one-connection shortcuts, each through an Imap.
    Subclasses provide _connect() returning an authenticated imaplib object."""

    def session(self, **login):
        """An Imap on this store: `with store.session() as m: ...`."""
        return Imap(self, **login)

    @contextlib.contextmanager
    def imap(self):
        """The imaplib object itself, for raw commands."""
        with Imap(self) as m:
            yield m.m

    def create(self, mailbox):
        with Imap(self) as m:
            m.create(mailbox)

    def append(self, mailbox, message, flags=(), date=None, create=False):
        """Appends bytes; returns the new UID (from APPENDUID)."""
        with Imap(self) as m:
            return m.append(mailbox, message, flags, date, create=create)

    def append_many(self, mailbox, messages, create=False):
        """Appends each message over one connection; returns their UIDs."""
        with Imap(self) as m:
            if create and mailbox.upper() != "INBOX":
                m.m.create(imap_quote(mailbox))
            return [m.append(mailbox, msg) for msg in messages]

    def mailboxes(self, pattern="*"):
        """[(name, delimiter, [LIST flags])] as the server lists them."""
        with Imap(self) as m:
            return m.list("", pattern)

    def status(self, mailbox):
        """{'MESSAGES': n, 'UIDNEXT': n, 'UIDVALIDITY': n, 'HIGHESTMODSEQ': n}."""
        with Imap(self) as m:
            return m.status(mailbox)

    def messages(self, mailbox):
        """{uid: (sorted flags, body bytes)} of every message, read with EXAMINE."""
        with Imap(self) as m:
            return m.messages(mailbox)

    def sha256s(self, mailbox):
        """{uid: sha256 hex of the body}."""
        return {uid: hashlib.sha256(body).hexdigest() for uid, (_, body) in self.messages(mailbox).items()}


def _parse_fetch(data):
    result = {}
    meta, body = b"", None

    def flush():
        if not meta:
            return
        uid = re.search(rb"UID (\d+)", meta)
        flags = re.search(rb"FLAGS \(([^)]*)\)", meta)
        if uid is None:
            raise HarnessError(f"FETCH without UID: {meta!r}")
        result[int(uid.group(1))] = (sorted(flags.group(1).decode().split()) if flags else [], body)

    for item in data:
        if isinstance(item, tuple):
            if re.match(rb"^\d+ \(", item[0]):  # a new message
                flush()
                meta, body = item[0], item[1]
            else:
                meta += item[0]
        elif item is not None:
            if re.match(rb"^\d+ \(", item):
                flush()
                meta, body = item, None
            else:
                meta += item
    flush()
    return result


# Capability lists for TunnelStore(capabilities=...): what a provider
# advertises once logged in (AUTH= mechanisms left out: a tunnel is
# PREAUTH).  Dovecot advertises exactly the list (imap_capability) but
# still accepts every extension it implements: put lib/capgate.py in the
# tunnel to fail a client that uses one that was not advertised.
#
# Gmail (imap.gmail.com, as published by clients' protocol logs): CONDSTORE
# without QRESYNC, LITERAL- (not LITERAL+), no MULTIAPPEND; X-GM-EXT-1 and
# XLIST are advertised but Dovecot implements neither (a client must not use
# them here).
GMAIL_LIKE = ("IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 UIDPLUS COMPRESS=DEFLATE "
              "ENABLE MOVE CONDSTORE ESEARCH UTF8=ACCEPT LIST-EXTENDED LIST-STATUS LITERAL- SPECIAL-USE "
              "APPENDLIMIT=35651584")
# Microsoft 365 / Outlook.com (outlook.office365.com): no ENABLE, CONDSTORE,
# QRESYNC, LIST-EXTENDED, LIST-STATUS, ESEARCH, COMPRESS, MULTIAPPEND;
# UIDPLUS and MOVE present.
M365_LIKE = "IMAP4 IMAP4rev1 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+"


class TunnelStore(ImapInspector):
    """A throwaway Dovecot store without a daemon, reached as a
    pre-authenticated tunnel (`* PREAUTH`), as the reference's tests do.

    fmt: maildir | mdbox | sdbox; separator: '/' or '.'; literal_minus:
    advertise LITERAL- instead of LITERAL+; compress: load imap_zlib
    (COMPRESS=DEFLATE) in the imap binary form.  capabilities: a
    space-separated list (e.g. GMAIL_LIKE, M365_LIKE) advertised instead of
    Dovecot's own (imap_capability; LITERAL- in it sets literal_minus);
    advertised() reads what the store really advertises.  As root, the
    store belongs to service_user() and the command runs through setpriv."""

    def __init__(self, tdir, name="store", fmt="maildir", separator="/", literal_minus=False,
                 compress=True, extra_conf="", capabilities=None):
        self.name = name
        self.capabilities = capabilities.split() if capabilities else None
        if self.capabilities is not None:
            literal_minus = "LITERAL-" in self.capabilities
            extra_conf = f"imap_capability = {' '.join(self.capabilities)}\n" + extra_conf
        self.root = tdir.sub(name)
        self.conf = os.path.join(self.root, "dovecot.conf")
        self.mail = os.path.join(self.root, "mail")
        self.log_path = os.path.join(self.root, "imap.log")
        self.separator = separator
        self.user = service_user()
        conf = (f"# TunnelStore {name}: written by tests/integration/lib/harness.py\n"
                "ssl = no\n"
                f"base_dir = {self.root}/run\n"
                f"state_dir = {self.root}/state\n"
                f"mail_location = {_mail_location(fmt, self.mail)}\n"
                "namespace inbox {\n"
                "  inbox = yes\n"
                f"  separator = {separator}\n"
                "}\n"
                f"imap_literal_minus = {'yes' if literal_minus else 'no'}\n"
                + _plugins_conf(compress) + extra_conf)
        with open(self.conf, "w") as f:
            f.write(conf)
        os.chmod(self.conf, 0o644)
        if is_root():
            chown_tree(self.root, self.user)

    def _prefix(self):
        env = f"env -i PATH=/usr/bin:/bin HOME={self.root} USER={self.user.name}"
        if is_root():
            return f"setpriv --reuid={self.user.uid} --regid={self.user.gid} --clear-groups {env}"
        return env

    @property
    def command(self):
        """The tunnel command with Dovecot's imap binary (COMPRESS available)."""
        return f"{self._prefix()} {dovecot_imap_binary()} -c {self.conf}"

    @property
    def doveadm_command(self):
        """The `doveadm exec imap` form: doveadm ignores `protocol imap {}`
        (no COMPRESS) and imap_literal_minus (LITERAL+ is advertised)."""
        return f"{self._prefix()} {which('doveadm') or 'doveadm'} -c {self.conf} exec imap"

    def section(self, doveadm=False, **options):
        """Options of a `type = tunnel` config section reaching this store."""
        opts = {"type": "tunnel", "command": self.doveadm_command if doveadm else self.command}
        opts.update(options)
        return opts

    def _connect(self):
        # imaplib runs the command through the shell; keep the store's log apart.
        return imaplib.IMAP4_stream(f"{self.command} 2>>{self.log_path}")

    def advertised(self):
        """(the greeting's [CAPABILITY ...], the CAPABILITY command's) as
        lists, read from a raw session with the store."""
        r = subprocess.run(["/bin/sh", "-c", f"{self.command} 2>>{self.log_path}"],
                           input=b"a CAPABILITY\r\nb LOGOUT\r\n", capture_output=True, timeout=30)
        greeting = re.search(rb"^\* (?:PREAUTH|OK) \[CAPABILITY ([^\]]*)\]", r.stdout, re.M)
        command = re.search(rb"^\* CAPABILITY ([^\r\n]*)", r.stdout, re.M)
        if greeting is None or command is None:
            raise HarnessError(f"{self.name}: no capability list in {r.stdout[:500]!r}")
        return greeting.group(1).decode().split(), command.group(1).decode().split()

    def read_log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


def make_certificate(directory, name="server", cn="localhost", sans=("DNS:localhost", "IP:127.0.0.1")):
    """A self-signed EC certificate (openssl req -x509).  Returns
    (cert path, key path, SPKI sha256 hex)."""
    cert = os.path.join(directory, f"{name}.crt")
    key = os.path.join(directory, f"{name}.key")
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={cn}"]
    if sans:
        argv += ["-addext", "subjectAltName=" + ",".join(sans)]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise HarnessError(f"openssl req failed: {r.stderr}")
    return cert, key, spki_sha256(cert)


def spki_sha256(cert):
    """sha256 hex of the certificate's SubjectPublicKeyInfo (DER)."""
    pub = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-pubkey"],
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         capture_output=True, check=True).stdout
    out = subprocess.run(["openssl", "dgst", "-sha256"], input=der, capture_output=True, check=True).stdout
    fpr = out.decode().strip().split()[-1].lower()
    if hashlib.sha256(der).hexdigest() != fpr:
        raise HarnessError("openssl dgst disagrees with hashlib")
    return fpr


class DovecotDaemon(ImapInspector):
    """A Dovecot master on 127.0.0.1 with free ports: imap (plain and
    STARTTLS unless ssl=False), imaps (when ssl), lmtp (when lmtp).

    users: {name: password} for a passwd-file passdb and userdb; the first
    is the default `user`/`password`.  The certificate (self-signed, CN
    localhost, subjectAltName DNS:localhost and IP:127.0.0.1) is `cert`,
    its SPKI sha256 `fingerprint`.  sni_names: more certificates, each
    served for that SNI name (a `local_name` block); `ca_bundle` holds
    every certificate.  Call start() (or start_all(...)); stop() is
    automatic at exit."""

    def __init__(self, tdir, name="dovecot", users=None, fmt="maildir", separator="/", ssl=True,
                 literal_minus=False, compress=True, lmtp=False, sni_names=(), extra_conf=""):
        self.name = name
        self.root = tdir.sub(name)
        self.conf = os.path.join(self.root, "dovecot.conf")
        self.log_path = os.path.join(self.root, "dovecot.log")
        self.users = dict(users or {"alice": "s3cret P@ss"})
        self.user, self.password = next(iter(self.users.items()))
        self.fmt, self.separator, self.ssl = fmt, separator, ssl
        self.literal_minus, self.compress, self.lmtp = literal_minus, compress, lmtp
        self.extra_conf = extra_conf
        self.host = "127.0.0.1"
        self.imap_port = self.imaps_port = self.lmtp_port = None
        self.process = None
        self.cert = self.key = self.fingerprint = None
        self.sni = {}  # name -> (cert, key, fingerprint)
        if ssl:
            self.cert, self.key, self.fingerprint = make_certificate(self.root)
            for i, sni in enumerate(sni_names):
                self.sni[sni] = make_certificate(self.root, f"sni{i}", cn=sni, sans=(f"DNS:{sni}",))
            self.ca_bundle = os.path.join(self.root, "ca-bundle.pem")
            with open(self.ca_bundle, "w") as out:
                for path in [self.cert] + [c for c, _, _ in self.sni.values()]:
                    with open(path) as f:
                        out.write(f.read())
        self.account = service_user()
        self._write_passwd()

    def _write_passwd(self):
        homes = self.sub_path("home")
        os.makedirs(homes, exist_ok=True)
        lines = []
        for user, password in self.users.items():
            if ":" in password or "\n" in password:
                raise ValueError("passwd-file passwords cannot hold ':' or newlines")
            home = os.path.join(homes, user)
            os.makedirs(home, exist_ok=True)
            lines.append(f"{user}:{{PLAIN}}{password}:{self.account.uid}:{self.account.gid}::{home}::\n")
        self.passwd = os.path.join(self.root, "passwd")
        with open(self.passwd, "w") as f:
            f.writelines(lines)
        os.chmod(self.passwd, 0o600)
        if is_root():
            # auth runs as default_internal_user and reads the file itself
            os.chown(self.passwd, self.account.uid, self.account.gid)
            chown_tree(homes, self.account)

    def sub_path(self, *parts):
        return os.path.join(self.root, *parts)

    def home(self, user=None):
        return self.sub_path("home", user or self.user)

    def _config(self):
        acct = self.account
        lines = [
            f"# DovecotDaemon {self.name}: written by tests/integration/lib/harness.py",
            "protocols = imap" + (" lmtp" if self.lmtp else ""),
            "listen = 127.0.0.1",
            f"base_dir = {self.root}/run",
            f"state_dir = {self.root}/state",
            f"log_path = {self.log_path}",
            "auth_verbose = yes",
            "auth_failure_delay = 0",  # else each failed login costs 2 s
            "disable_plaintext_auth = no",
            "auth_mechanisms = plain login",
            f"default_internal_user = {acct.name}",
            f"default_login_user = {acct.name}",
            # system accounts (e.g. one made by useradd -r) have low ids
            "first_valid_uid = 1",
            "first_valid_gid = 1",
            f"mail_location = {_mail_location(self.fmt, '~/mail')}",
            f"imap_literal_minus = {'yes' if self.literal_minus else 'no'}",
            "namespace inbox {", "  inbox = yes", f"  separator = {self.separator}", "}",
            "passdb {", "  driver = passwd-file", f"  args = scheme=PLAIN username_format=%u {self.passwd}", "}",
            "userdb {", "  driver = passwd-file", f"  args = username_format=%u {self.passwd}", "}",
        ]
        # No auth penalty: after a failed login, the next login from the same
        # IP would wait 2, 4, ... 15 s.  auth disables it when it cannot
        # connect to this socket.
        lines += ["service anvil {", "  unix_listener anvil-auth-penalty {", "    mode = 0", "  }", "}"]
        if is_root():
            lines += [f"mail_uid = {acct.uid}", f"mail_gid = {acct.gid}"]
        else:
            # No chroot nor privilege changes for an unprivileged master.
            lines += [f"default_internal_group = {acct.group}","service imap-login {", "  chroot =", "}",
                      "service anvil {", "  chroot =", "}"]
        if self.ssl:
            lines += ["ssl = yes", f"ssl_cert = <{self.cert}", f"ssl_key = <{self.key}"]
            for sni, (cert, key, _) in self.sni.items():
                lines += [f"local_name {sni} {{", f"  ssl_cert = <{cert}", f"  ssl_key = <{key}", "}"]
        else:
            lines += ["ssl = no"]
        lines += ["service imap-login {",
                  "  inet_listener imap {", "    address = 127.0.0.1", f"    port = {self.imap_port}", "  }"]
        if self.ssl:
            lines += ["  inet_listener imaps {", "    address = 127.0.0.1", f"    port = {self.imaps_port}",
                      "    ssl = yes", "  }"]
        lines += ["}"]
        if self.lmtp:
            lines += ["service lmtp {",
                      "  inet_listener lmtp {", "    address = 127.0.0.1", f"    port = {self.lmtp_port}", "  }",
                      "}"]
        return "\n".join(lines) + "\n" + _plugins_conf(self.compress) + self.extra_conf

    def _pick_ports(self):
        ports = free_ports(3)
        self.imap_port = ports[0]
        self.imaps_port = ports[1] if self.ssl else None
        self.lmtp_port = ports[2] if self.lmtp else None

    def ports(self):
        return [p for p in (self.imap_port, self.imaps_port, self.lmtp_port) if p]

    def spawn(self):
        self._attempts = 0
        self._spawn()

    def _spawn(self):
        self._attempts += 1
        self._pick_ports()
        with open(self.conf, "w") as f:
            f.write(self._config())
        os.chmod(self.conf, 0o644)
        dovecot = which("dovecot")
        if dovecot is None:
            raise HarnessError("dovecot not found")
        self._start_time = time.monotonic()
        self.process = Process([dovecot, "-c", self.conf, "-F"], f"dovecot {self.name}",
                               log_path=self.sub_path("stderr.log"))

    def wait_ready(self, timeout=20):
        while True:
            try:
                wait_for_ports(self.ports(), self.process, timeout=timeout, what=f"dovecot {self.name}")
                self._greeting_check()
                break
            except HarnessError as e:
                logtext = self.read_log()
                self.process.stop()
                if "Address already in use" in logtext and self._attempts < 4:
                    log(f"dovecot {self.name}: port taken, retrying with other ports")
                    self._spawn()
                    continue
                self.dump_diagnostics()
                raise HarnessError(f"dovecot {self.name} did not start: {e}") from None
        log(f"dovecot {self.name} ready in {time.monotonic() - self._start_time:.2f}s: "
            f"imap={self.imap_port} imaps={self.imaps_port} lmtp={self.lmtp_port}")

    def start(self):
        self.spawn()
        self.wait_ready()
        return self

    def _greeting_check(self):
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((self.host, self.imap_port), timeout=5) as s:
                    greeting = s.recv(1024)
                if greeting.startswith(b"* OK"):
                    return
                raise HarnessError(f"unexpected greeting {greeting!r}")
            except OSError as e:
                if time.monotonic() > deadline:
                    raise HarnessError(f"no greeting on port {self.imap_port}: {e}")
                time.sleep(0.05)

    def read_log(self):
        text = ""
        for path in (self.log_path, self.sub_path("stderr.log")):
            try:
                with open(path, errors="replace") as f:
                    text += f.read()
            except FileNotFoundError:
                pass
        return text

    def dump_diagnostics(self):
        r = subprocess.run([which("doveconf") or "doveconf", "-c", self.conf, "-n"], capture_output=True, text=True)
        print(f"----- doveconf -c {self.conf} -n (exit {r.returncode})\n{r.stdout}{r.stderr}"
              f"----- {self.name} log\n{self.read_log()}-----", flush=True)

    def stop(self):
        if self.process is not None:
            self.process.stop()

    def _connect(self, user=None, password=None):
        ctx = ssl.create_default_context(cafile=self.cert) if self.ssl else None
        if self.ssl:
            m = imaplib.IMAP4_SSL(self.host, self.imaps_port, ssl_context=ctx, timeout=60)
        else:
            m = imaplib.IMAP4(self.host, self.imap_port, timeout=60)
        u = user or self.user
        m.login(u, password if password is not None else self.users[u])
        return m

    def section(self, type="imaps", **options):
        """Options of a config section reaching this daemon as the default
        user: type imaps (with SSL_CAfile) or imap (STARTTLS, with SSL_CAfile).
        Without ssl: STARTTLS = NO and auth-cleartext = YES (pass
        **{"auth-cleartext": None} to see the refusal)."""
        opts = {"type": type, "host": self.host,
                "port": str(self.imaps_port if type == "imaps" else self.imap_port),
                "username": self.user, "password": self.password}
        if self.ssl:
            opts["SSL_CAfile"] = self.cert
        else:
            opts["STARTTLS"] = "NO"
            opts["auth-cleartext"] = "YES"
        opts.update(options)
        return {k: v for k, v in opts.items() if v is not None}


class Microsocks:
    """microsocks -i 127.0.0.1 -p PORT [-u USER -P PASS]."""

    def __init__(self, tdir, user=None, password=None, name="microsocks"):
        self.user, self.password, self.name = user, password, name
        self.root = tdir.sub(name)
        self.port = None
        self.process = None

    def spawn(self):
        self.port = free_ports(1)[0]
        argv = [which("microsocks") or "microsocks", "-i", "127.0.0.1", "-p", str(self.port)]
        if self.user is not None:
            argv += ["-u", self.user, "-P", self.password]
        self.process = Process(argv, self.name, log_path=os.path.join(self.root, "stderr.log"))

    def wait_ready(self):
        for attempt in range(4):
            try:
                wait_for_ports([self.port], self.process, what=self.name)
                return
            except HarnessError as e:
                exited = self.process.poll() is not None  # e.g. the port was taken
                self.process.stop()
                if attempt == 3 or not exited:
                    with open(os.path.join(self.root, "stderr.log"), errors="replace") as f:
                        raise HarnessError(f"{e}\n{f.read()}") from None
                log(f"{self.name}: {e}; retrying on another port (taken meanwhile?)")
                self.spawn()

    def start(self):
        self.spawn()
        self.wait_ready()
        return self

    def url(self, scheme="socks5", user=None, password=None):
        """socks5://[user:password@]127.0.0.1:PORT; user/password default to the proxy's own."""
        user = self.user if user is None else user
        password = self.password if password is None else password
        cred = f"{user}:{password}@" if user is not None else ""
        return f"{scheme}://{cred}127.0.0.1:{self.port}"

    def stop(self):
        if self.process is not None:
            self.process.stop()


# ---------------------------------------------------------------------------
# An SMTP server

SMTPD_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smtpd_server.py")


def have_smtpd():
    """Whether this Python has smtpd (removed in 3.12), which SmtpdServer runs."""
    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import smtpd  # noqa: F401
        return True
    except ImportError:
        return False


class SmtpdServer:
    """A real SMTP server (smtpd_server.py: Python's smtpd, 3.11) on a free
    port of host (127.0.0.1 or ::1); options as smtpd_server.py takes them
    (pipelining, eightbitmime, refuse_from, refuse_rcpt, refuse_body,
    one_per_session).  `spool` holds what it received; stop() is
    automatic at exit."""

    _count = 0

    def __init__(self, t, host="127.0.0.1", **opts):
        SmtpdServer._count += 1
        self.host = host
        self.spool = t.sub(f"smtpd-{SmtpdServer._count}")
        self.opts = dict(opts, spool=self.spool, host=host)
        self.script = SMTPD_SCRIPT
        for attempt in range(4):
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                self.port = s.getsockname()[1]
            self.opts["port"] = self.port
            ready = os.path.join(self.spool, "ready")
            self.process = Process([sys.executable, self.script, json.dumps(self.opts)], "smtpd",
                                     log_path=os.path.join(self.spool, "stderr.log"))
            # Not a probe connection: smtpd would count it as a session.
            try:
                wait_until("smtpd ready", lambda: os.path.exists(ready) or self.process.poll() is not None, 15,
                           interval=0.02, error=HarnessError)
            except HarnessError:
                pass
            if os.path.exists(ready):
                return
            self.process.stop()  # the port was taken meanwhile: try another
        raise HarnessError(f"smtpd did not start: {self.read('stderr.log')}")

    def method(self):
        return f"smtp:[{self.host}]:{self.port}"

    def read(self, name):
        try:
            with open(os.path.join(self.spool, name), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def lines(self, name):
        return self.read(name).splitlines()

    def messages(self):
        """[(envelope dict, data bytes)] in arrival order."""
        out = []
        for name in sorted(os.listdir(self.spool)):
            if name.endswith(".eml"):
                with open(os.path.join(self.spool, name), "rb") as f:
                    data = f.read()
                with open(os.path.join(self.spool, name[:-4] + ".json")) as f:
                    env = json.load(f)
                out.append((env, data))
        return out

    def stop(self):
        self.process.stop()


# ---------------------------------------------------------------------------
# Configuration files and imap-probe

def ini_text(sections, default=None):
    """INI text from {section: {option: value}} (and default-section options)."""
    out = []
    for k, v in (default or {}).items():
        out.append(f"{k} = {v}")
    for name, opts in sections.items():
        out.append(f"\n[{name}]")
        for k, v in opts.items():
            out.append(f"{k} = {v}")
    return "\n".join(out) + "\n"


_config_counter = [0]


def write_config(tdir, sections, default=None, name=None):
    """Writes an interimap-format config file in tdir; returns its path."""
    _config_counter[0] += 1
    path = os.path.join(tdir.path, name or f"config-{_config_counter[0]}.ini")
    with open(path, "w") as f:
        f.write(ini_text(sections, default))
    os.chmod(path, 0o600)
    return path


class Result:
    """What a program did: argv, rc (an int, negative for a signal, or
    'TIMEOUT'), out and err (text, decoded leniently), seconds."""

    def __init__(self, argv, rc, out, err, seconds=0.0):
        self.argv, self.rc, self.out, self.err, self.seconds = argv, rc, out, err, seconds

    @property
    def lines(self):
        return self.out.splitlines()

    def error_lines(self):
        """stderr lines saying ERROR (how interimap and pullimap report errors)."""
        return [line for line in self.err.splitlines() if "ERROR" in line]

    def describe(self):
        return (f"$ {' '.join(self.argv)}\nexit status {self.rc} after {self.seconds:.2f}s\n"
                f"--- stdout\n{self.out[-6000:]}--- stderr\n{self.err[-6000:]}---")

    def __repr__(self):
        return self.describe()


def _kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run(argv, timeout=60, env=None, shown=None, cls=Result):
    """Runs argv (stdin /dev/null, in its own process group, env: the whole
    environment or None for ours) and returns a cls (Result) with argv
    shown as `shown` if given.  On timeout the group is killed and rc is
    'TIMEOUT'."""
    argv = [str(a) for a in argv]
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        _kill_group(p)
        out, err = p.communicate()
        rc = "TIMEOUT"
    except BaseException:  # e.g. ^C: leave nothing behind
        _kill_group(p)
        raise
    return cls(shown or argv, rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
               time.monotonic() - t0)


def run_probe(config, action, *args, section=None, debug=None, timeout=120, env=None):
    """Runs $IMAP_PROBE --config CONFIG [--section S] [--debug N] ACTION ARGS.
    Returns its Result."""
    argv = [os.environ["IMAP_PROBE"], "--config", config]
    if section is not None:
        argv += ["--section", section]
    if debug is not None:
        argv += ["--debug", str(debug)]
    return run(argv + [action] + list(args), timeout=timeout, env=env)


def parse_capabilities(out):
    """imap-probe `capabilities` output -> (set of capabilities upper-cased, tls, compress)."""
    caps, tls, compress = None, None, None
    for line in out.splitlines():
        if line.startswith("CAPABILITY "):
            caps = {c.upper() for c in line.split()[1:]}
        elif line.startswith("TLS "):
            tls = line.split()[1] == "yes"
        elif line.startswith("COMPRESS "):
            compress = line.split()[1] == "yes"
    if caps is None or tls is None or compress is None:
        raise AssertionError(f"unexpected capabilities output:\n{out}")
    return caps, tls, compress


def parse_list(out):
    """imap-probe `list` output -> {name: {'delim', 'messages', 'uidnext',
    'uidvalidity', 'highestmodseq', 'flags'}} (numbers as int or None)."""
    result = {}
    for line in out.splitlines():
        if not line.startswith("MAILBOX\t"):
            continue
        fields = line.split("\t")
        if len(fields) < 8:
            raise AssertionError(f"malformed MAILBOX line {line!r}")
        _, name, delim, messages, uidnext, uidvalidity, hms, flags = fields[:8]

        def num(s):
            return int(s) if s.isdigit() else None
        result[name] = {"delim": delim, "messages": num(messages), "uidnext": num(uidnext),
                        "uidvalidity": num(uidvalidity), "highestmodseq": num(hms),
                        "flags": flags.split()}
    return result


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def make_message(subject="test", body="Hello.\r\n", size=None, headers=(), head=None):
    """An RFC 5322 message (bytes, CRLF): From, To, Subject, Date and a
    Message-ID derived from subject and size, then the extra headers
    (lines without CRLF), an empty line and body.  head: header lines
    that replace the first five.  With size, the body is padded with text
    lines to about that many bytes."""
    if head is None:
        head = [b"From: Alice <alice@example.org>", b"To: Bob <bob@example.org>",
                b"Subject: " + subject.encode(), b"Date: Mon, 7 Feb 1994 21:52:25 -0800",
                b"Message-ID: <" + hashlib.sha1(subject.encode() + str(size).encode()).hexdigest().encode()
                + b"@example.org>"]
    head = [h.encode() if isinstance(h, str) else h for h in list(head) + list(headers)]
    msg = b"\r\n".join(head) + b"\r\n\r\n" + (body.encode() if isinstance(body, str) else body)
    if size is not None and len(msg) < size:
        line = b"0123456789abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\r\n"
        n = (size - len(msg)) // len(line) + 1
        msg += b"".join(b"%06d " % i + line[7:] for i in range(n))
    return msg


# ---------------------------------------------------------------------------
# The reference implementation as an oracle

_REFERENCE_PL = r'''
use strict; use warnings;
use Net::IMAP::InterIMAP qw/read_config/;
my ($file, $section, $debug) = @ARGV;
my $conf = read_config($file, [$section])->{$section};
my $imap = Net::IMAP::InterIMAP::->new(%$conf, name => $section, debug => $debug,
                                       'logger-prefix' => '%n: ');
print "CAPABILITY ", join(' ', $imap->capabilities()), "\n";
print "COMPRESS ", (defined $imap->{_Z_DEFLATE} ? "yes" : "no"), "\n";
$imap->logout();
'''


def have_reference():
    """True when the reference's Perl library (package libinterimap) is installed."""
    r = subprocess.run(["perl", "-MNet::IMAP::InterIMAP", "-e", "1"], capture_output=True)
    return r.returncode == 0


def run_reference(config, section, debug=0, timeout=60):
    """Connects with the reference's Net::IMAP::InterIMAP (interimap 0.5.7)
    using the same config file and section: exit 0 and "CAPABILITY ..." /
    "COMPRESS yes|no" on success; exit 1 (fail) or 255 (panic) with
    "SECTION: ERROR: ..." on stderr otherwise."""
    return run(["perl", "-e", _REFERENCE_PL, config, section, debug], timeout=timeout,
               shown=["perl", "<reference>", config, section, str(debug)])


# ---------------------------------------------------------------------------
# Assertions on probe results

def error_text(result):
    """stderr from the last "imap-probe: " on (the error message), or ''."""
    i = result.err.rfind("imap-probe: ")
    return result.err[i:].strip() if i >= 0 else ""


def assert_ok(result):
    if result.rc != 0:
        raise AssertionError("expected success\n" + result.describe())
    return result


def assert_fails(result, *patterns):
    """Exit status 1, an "imap-probe: ..." error line, and each regex
    (case-insensitive) found in the error message."""
    msg = error_text(result)
    if result.rc != 1 or not msg:
        raise AssertionError("expected exit status 1 and an 'imap-probe: ' error\n" + result.describe())
    for p in patterns:
        if not re.search(p, msg, re.IGNORECASE | re.DOTALL):
            raise AssertionError(f"error message does not match /{p}/: {msg!r}\n" + result.describe())
    return msg
