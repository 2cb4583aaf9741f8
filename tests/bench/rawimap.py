"""A minimal pipelined IMAP client over a tunnel command, for seeding the
benchmark's stores, applying its incremental changes and measuring the
floor (what the two Dovecot processes alone need for the same work).

Standard library only.  Nothing here is the project's code: it is the
benchmark's independent yardstick.
"""

import os
import re
import subprocess
import threading

_LIT_RE = re.compile(rb"\{(\d+)\+?\}\r\n$")


class ImapError(Exception):
    pass


def quote(name):
    if isinstance(name, str):
        name = name.encode("utf-8")
    return b'"' + name.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


class Tunnel:
    """An IMAP session on a `type = tunnel` command (`* PREAUTH` greeting).
    Commands are written without waiting (LITERAL+), responses read by the
    caller with read_response()."""

    def __init__(self, command, stderr_path=None):
        err = open(stderr_path, "ab") if stderr_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err, bufsize=0)
        finally:
            if stderr_path:
                err.close()
        self.r = os.fdopen(os.dup(self.proc.stdout.fileno()), "rb", buffering=1 << 20)
        self.w = self.proc.stdin
        self.tag = 0
        self.lock = threading.Lock()
        greeting, _ = self.read_response()
        if not greeting.startswith(b"* PREAUTH") and not greeting.startswith(b"* OK"):
            raise ImapError(f"unexpected greeting {greeting[:200]!r}")
        self.caps = set(greeting.upper().split())

    def next_tag(self):
        self.tag += 1
        return b"t%d" % self.tag

    def send(self, data):
        with self.lock:
            self.w.write(data)

    def command(self, text):
        """Writes one command (bytes without tag and CRLF); returns its tag."""
        tag = self.next_tag()
        self.send(tag + b" " + text + b"\r\n")
        return tag

    def append_cmd(self, mailbox, message, flags=(), date=None):
        """Bytes of an APPEND with a LITERAL+ literal (the caller sends them)."""
        tag = self.next_tag()
        f = b" (" + b" ".join(flags) + b")" if flags else b" ()"
        d = b' "' + date + b'"' if date else b""
        return tag, (tag + b" APPEND " + quote(mailbox) + f + d + b" {%d+}\r\n" % len(message)
                     + message + b"\r\n")

    def read_response(self):
        """One response: (the line with literals replaced by {N}, [literals])."""
        line = self.r.readline()
        if not line:
            raise ImapError("connection closed by the server")
        lits = []
        parts = [line]
        while True:
            m = _LIT_RE.search(line)
            if not m:
                break
            n = int(m.group(1))
            lit = self.r.read(n)
            if len(lit) != n:
                raise ImapError("connection closed inside a literal")
            lits.append(lit)
            line = self.r.readline()
            parts.append(line)
        return b"".join(parts), lits

    def wait(self, tags, on_untagged=None):
        """Reads until every tag in `tags` is completed; raises on NO/BAD."""
        pending = set(tags)
        while pending:
            line, lits = self.read_response()
            if line.startswith(b"* ") or line.startswith(b"+ "):
                if on_untagged is not None:
                    on_untagged(line, lits)
                continue
            tag, _, rest = line.partition(b" ")
            if tag in pending:
                pending.discard(tag)
                if not rest.startswith(b"OK"):
                    raise ImapError(f"{tag.decode()} {rest[:300]!r}")

    def run(self, text, on_untagged=None):
        tag = self.command(text)
        self.wait([tag], on_untagged)

    def pipeline(self, chunks, tags, on_untagged=None):
        """Writes chunks from a thread while reading every tag's completion."""
        err = []

        def writer():
            try:
                for c in chunks:
                    self.send(c)
            except Exception as e:  # the reader reports the server's side
                err.append(e)
        th = threading.Thread(target=writer, daemon=True)
        th.start()
        self.wait(tags, on_untagged)
        th.join()
        if err:
            raise err[0]

    def logout(self):
        try:
            self.run(b"LOGOUT")
        except ImapError:
            pass
        self.close()

    def close(self):
        for f in (self.w, self.r, self.proc.stdout):
            try:
                f.close()
            except Exception:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_LIST_RE = re.compile(rb'^\* LIST \(([^)]*)\) (NIL|"(?:\\.|[^"])") (.*)\r\n$', re.S)


def parse_list_line(line, lits):
    """An untagged LIST response -> (name bytes, flags) or None."""
    m = _LIST_RE.match(line)
    if not m:
        return None
    name = m.group(3)
    if lits:
        name = lits[0]
    elif name.startswith(b'"'):
        name = re.sub(rb'\\(.)', rb'\1', name[1:-1])
    return name, m.group(1).split()


def list_mailboxes(t):
    """[(name, flags)] of every mailbox, \\NoSelect ones included."""
    out = []

    def cb(line, lits):
        r = parse_list_line(line, lits)
        if r:
            out.append(r)
    t.run(b'LIST "" "*"', cb)
    return out


_FETCH_META = {
    "uid": re.compile(rb"UID (\d+)"),
    "flags": re.compile(rb"FLAGS \(([^)]*)\)"),
    "date": re.compile(rb'INTERNALDATE "([^"]+)"'),
}


def parse_fetch(line):
    """Dict of UID, FLAGS (list, without \\Recent) and INTERNALDATE from a
    FETCH response line (literal contents excluded)."""
    out = {}
    m = _FETCH_META["uid"].search(line)
    out["uid"] = int(m.group(1)) if m else None
    m = _FETCH_META["flags"].search(line)
    out["flags"] = [f for f in m.group(1).split() if f.lower() != b"\\recent"] if m else []
    m = _FETCH_META["date"].search(line)
    out["date"] = m.group(1) if m else None
    return out
