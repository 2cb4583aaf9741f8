"""Shared pieces of the test_pullimap*.py scripts: a source store (a Dovecot
tunnel), a Dovecot daemon whose LMTP service delivers into a second store,
a small real SMTP server (h.SmtpdServer), and ways to run $PULLIMAP (set
by meson) or the reference /usr/bin/pullimap on a config section (an
h.Result) and to read the statefile and the destination stores back."""

import os
import re
import signal
import struct
import subprocess
import time

import harness as h

PULLIMAP = os.environ.get("PULLIMAP", "")
REFERENCE = "/usr/bin/pullimap"
SECTION = "acct"


def require_pullimap():
    if not PULLIMAP or not os.access(PULLIMAP, os.X_OK):
        h.skip(f"pullimap not found (PULLIMAP={PULLIMAP!r}); run through meson test")
    h.require("dovecot", "doveconf", "dovecot-lmtp")


def have_reference():
    return os.access(REFERENCE, os.X_OK) and h.have_reference()


def message(n, body=b"Hello.\r\n", sender=None, frm=b"Alice <alice@example.org>"):
    """A CRLF message (h.make_message) whose first header is X-Test-Id: N
    (so the headers Dovecot's LMTP prepends can be cut off)."""
    head = [b"X-Test-Id: %d" % n, b"From: " + frm] + ([b"Sender: " + sender] if sender is not None else [])
    head += [b"To: bob@example.org", b"Subject: message %d" % n, b"Message-ID: <m%d@example.org>" % n]
    return h.make_message(head=head, body=body)


def test_id(stored):
    m = re.search(rb"^X-Test-Id: (\d+)\r?\n", stored, re.M)
    return int(m.group(1)) if m else None


def split_delivered(stored):
    """(prepended headers, message as sent) of a message Dovecot's LMTP stored."""
    i = stored.find(b"X-Test-Id: ")
    if i < 0:
        raise AssertionError(f"no X-Test-Id in {stored[:300]!r}")
    return stored[:i], stored[i:]


_shared = {}


def shared_daemon():
    """One Dovecot daemon with LMTP per script, with a pool of users: a
    daemon costs about a second to stop, a user nothing.  Its stores are
    throwaway (fsync off: the tests time delivery)."""
    if "d" not in _shared:
        t = h.TestDir("iit-pull-lmtp-")
        users = {f"u{i:02d}": f"u{i:02d}-Pw1" for i in range(1, 81)}
        d = h.DovecotDaemon(t, "lmtp", users=users, ssl=False, lmtp=True, fmt="mdbox",
                            extra_conf="mail_fsync = never\n")
        d.start()
        _shared["d"] = d
        _shared["free"] = list(users)
    return _shared["d"]


def new_user():
    shared_daemon()
    if not _shared["free"]:
        raise h.HarnessError("the shared Dovecot ran out of users: raise the pool size")
    return _shared["free"].pop(0)


class Env:
    """A test directory with a source store (a tunnel) and two fresh users,
    `alice` and `bob`, on the shared LMTP daemon `d`."""

    def __init__(self, prefix, start=True):
        self.t = h.TestDir(prefix)
        self.src = h.TunnelStore(self.t, "src", fmt="mdbox", extra_conf="mail_fsync = never\n")
        self.d = shared_daemon() if start else None
        self.alice = new_user() if start else "alice"
        self.bob = new_user() if start else "bob"
        self.data_home = self.t.sub("data")
        self.config_home = self.t.sub("config")
        self.statefile = os.path.join(self.t.path, "statefile")

    def lmtp(self):
        return f"lmtp:[127.0.0.1]:{self.d.lmtp_port}" if self.d else "lmtp:[127.0.0.1]:24"

    def config(self, name=None, section=SECTION, default=None, **options):
        # null-stderr: Dovecot's imap logs to its stderr, which is ours.
        opts = dict(self.src.section(), **{"null-stderr": "YES"})
        opts.update({"deliver-method": self.lmtp(), "deliver-rcpt": self.alice, "statefile": self.statefile})
        opts.update({k.replace("_", "-"): v for k, v in options.items()})
        opts = {k: v for k, v in opts.items() if v is not None}
        return h.write_config(self.t, {section: opts}, default=default, name=name)

    def env(self):
        return dict(os.environ, XDG_DATA_HOME=self.data_home, XDG_CONFIG_HOME=self.config_home)

    def argv(self, config, *args, exe=None, section=SECTION):
        return [exe or PULLIMAP, f"--config={config}", *args, section]

    def run(self, config, *args, exe=None, section=SECTION, timeout=120):
        """Runs pullimap (or exe) on the section; returns its h.Result."""
        return h.run(self.argv(config, *args, exe=exe, section=section), timeout=timeout, env=self.env())

    def spawn(self, config, *args, exe=None, section=SECTION):
        log = open(os.path.join(self.t.path, f"spawn-{time.monotonic_ns()}.log"), "w+b")
        p = subprocess.Popen(self.argv(config, *args, exe=exe, section=section), stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=self.env())
        p.log = log
        h.at_cleanup(lambda: p.poll() is None and p.kill())
        return p

    def seed(self, messages, date=None):
        """Appends to the source INBOX; returns the UIDs."""
        if date is None:
            return self.src.append_many("INBOX", messages)
        return [self.src.append("INBOX", m, date=date) for m in messages]

    def state(self, path=None):
        """The statefile as a list of 32-bit big-endian integers, or None."""
        try:
            with open(path or self.statefile, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        assert len(data) % 4 == 0, data
        return list(struct.unpack(f">{len(data) // 4}I", data))

    def write_state(self, values, path=None):
        with open(path or self.statefile, "wb") as f:
            f.write(struct.pack(f">{len(values)}I", *values))

    def source(self):
        """{uid: (sorted flags, body)} of the source INBOX."""
        return self.src.messages("INBOX")

    def imap(self, user=None):
        """An h.Imap on the daemon as `user` (default alice)."""
        return h.Imap(self.d, user=user or self.alice)

    def inbox(self, user=None):
        """[stored bytes] of user's INBOX on the LMTP daemon, by UID."""
        with self.imap(user) as m:
            got = m.messages("INBOX")
        return [got[uid][1] for uid in sorted(got)]

    def delivered_ids(self, user=None):
        return [test_id(s) for s in self.inbox(user)]


def stop(p, sig=signal.SIGTERM, timeout=10):
    p.send_signal(sig)
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise AssertionError(f"pullimap did not exit within {timeout}s of signal {sig}")


def output(p):
    p.log.seek(0)
    return p.log.read().decode("utf-8", "replace")


# The SMTP server: pullimap's tests want it with PIPELINING (and 8BITMIME).

def Smtpd(t, **opts):  # noqa: N802
    return h.SmtpdServer(t, **dict({"pipelining": True}, **opts))
