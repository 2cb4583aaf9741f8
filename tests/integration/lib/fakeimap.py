#!/usr/bin/env python3
"""A scripted fake IMAP server for the hostile-server tests (a program):

    fakeimap.py STATE SCENARIO LOG

It speaks IMAP on stdin/stdout as a pre-authenticated tunnel (`type =
tunnel`, `command = python3 fakeimap.py ...`), for ONE scenario at a
time: a small stateful mailbox model that answers what interimap and
pullimap send (ENABLE QRESYNC, LIST-STATUS, SELECT with QRESYNC, UID
FETCH with CHANGEDSINCE/VANISHED, UID STORE with UNCHANGEDSINCE,
MULTIAPPEND with APPENDUID, UID EXPUNGE, IDLE, ...), plus per-scenario
hooks that misbehave (SCENARIOS below).  It stands in for a hostile or
broken server only, never for Dovecot in a normal sync.

STATE is a JSON file holding the mailboxes (created with an empty INBOX
when missing; the tests seed and read it through FakeState, the same
file between runs); LOG receives one line per command and per hook that
fired, "PID C: ..." / "PID HOOK: ...", control characters escaped.

Python 3 standard library only."""

import base64
import email.parser
import email.utils
import json
import os
import re
import select
import sys
import time

MAX_UID = 4294967295

# What each scenario does besides behaving.  "normal" only behaves.
SCENARIOS = {
    "normal": "a well-behaved server",
    "modified": "every UID STORE with UNCHANGEDSINCE is refused: NO [MODIFIED 1:4294967295], nothing stored",
    "modified-once": "the first UID STORE with UNCHANGEDSINCE of a connection is refused as in 'modified'",
    "vanished-all": "SELECT expunges every message and says * VANISHED 1:4294967295",
    "vanished-beyond": "SELECT says * VANISHED UIDNEXT+100:4294967295 (UIDs that never existed)",
    "extra-fetch": "a body UID FETCH also returns the lowest UID not asked for, and its first message twice",
    "stray-fetch": "every command in the selected state gets an unsolicited * N FETCH (UID 3 ... BODY[] ...)",
    "uid-max": "a body UID FETCH also returns a message with UID 4294967295 (no EXISTS)",
    "uid-above-uidnext": "a body UID FETCH also returns a message with UID UIDNEXT+5 (no EXISTS)",
    "endless-line": "SELECT is answered with a line without end (no CRLF; up to 1 GiB)",
    "endless-literals": "SELECT is answered with one FETCH response of endless 64 KiB literals (up to 1 GiB)",
    "control-chars": "an ALERT and a mailbox name carrying ESC, CR and LF",
    "control-chars-no": "SELECT refused with a text carrying ESC and CR",
    "header-flood": "a header UID FETCH (BODY.PEEK[HEADER...]) also returns each message 2000 times more, "
                    "and 2000 UIDs not asked for",
}

CAPABILITIES = ("IMAP4rev1 LITERAL+ ENABLE IDLE UIDPLUS MULTIAPPEND UNSELECT CONDSTORE QRESYNC "
                "LIST-EXTENDED LIST-STATUS NAMESPACE")
ENDLESS_CAP = 1 << 30  # what an endless response sends at most
FLAGS = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]


def escape(data):
    """Printable ASCII kept, everything else as \\xHH (for the log)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    return "".join(chr(b) if 0x20 <= b < 0x7f and b != 0x5c else f"\\x{b:02x}" for b in data)


# ---------------------------------------------------------------------------
# The state (also the tests' API)

class FakeState:
    """The JSON state: {'mailboxes': {name: {'uidvalidity', 'uidnext',
    'modseq', 'subscribed', 'messages': [{'uid', 'flags', 'modseq', 'date',
    'body' (base64)}], 'expunged': [[uid, modseq]]}}}.  Each method loads,
    changes and saves (atomic replace)."""

    def __init__(self, path):
        self.path = path
        if not os.path.exists(path):
            self.data = {"mailboxes": {}}
            self.mailbox("INBOX", create=True)
            self.save()

    def load(self):
        with open(self.path) as f:
            self.data = json.load(f)
        return self

    def save(self):
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f)
        os.replace(tmp, self.path)

    def mailbox(self, name, create=False):
        mbs = self.data["mailboxes"]
        if name.upper() == "INBOX":
            name = "INBOX"
        if name not in mbs and create:
            mbs[name] = {"uidvalidity": 1000 + len(mbs), "uidnext": 1, "modseq": 1, "subscribed": False,
                         "messages": [], "expunged": []}
        return mbs.get(name)

    # Between runs, from the tests.
    def append(self, body, flags=(), mailbox="INBOX"):
        """Appends a message (bytes); returns its UID."""
        self.load()
        uid = add_message(self.mailbox(mailbox, create=True), body, list(flags))
        self.save()
        return uid

    def messages(self, mailbox="INBOX"):
        """{uid: (sorted flags, body bytes)}."""
        self.load()
        return {m["uid"]: (sorted(m["flags"]), base64.b64decode(m["body"]))
                for m in self.mailbox(mailbox)["messages"]}

    def set_flags(self, uid, flags, mailbox="INBOX"):
        self.load()
        mb = self.mailbox(mailbox)
        for m in mb["messages"]:
            if m["uid"] == uid:
                mb["modseq"] += 1
                m["flags"], m["modseq"] = list(flags), mb["modseq"]
        self.save()

    def status(self, mailbox="INBOX"):
        self.load()
        mb = self.mailbox(mailbox)
        return {"MESSAGES": len(mb["messages"]), "UIDNEXT": mb["uidnext"], "UIDVALIDITY": mb["uidvalidity"],
                "HIGHESTMODSEQ": mb["modseq"]}


def add_message(mb, body, flags, date=None):
    mb["modseq"] += 1
    uid = mb["uidnext"]
    mb["uidnext"] += 1
    mb["messages"].append({"uid": uid, "flags": flags, "modseq": mb["modseq"],
                           "date": date or "07-Feb-1994 21:52:25 -0800",
                           "body": base64.b64encode(body).decode()})
    return uid


# ---------------------------------------------------------------------------
# Syntax

def join_sections(items):
    """FETCH items as strings, a section's field list joined back in:
    ['BODY.PEEK[HEADER.FIELDS', ['MESSAGE-ID'], ']'] -> 'BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]'."""
    out = []
    for it in items:
        if isinstance(it, list) and out and out[-1].upper().endswith(".FIELDS"):
            out[-1] += " (" + " ".join(str(x) for x in it) + ")"
        elif str(it) == "]" and out:
            out[-1] += "]"
        else:
            out.append(str(it))
    return out


def header_section(body, section):
    """RFC 3501 6.4.5: HEADER (the header and its blank line) or
    HEADER.FIELDS (A B) (those fields, folds included, then a blank line)."""
    head = body.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    if section.upper() == "HEADER":
        return head + b"\r\n"
    names = {n.upper().encode() for n in section[section.index("(") + 1:section.rindex(")")].split()}
    out, keep = b"", False
    for line in head.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):
            if keep:
                out += line + b"\r\n"
            continue
        keep = line.split(b":", 1)[0].strip().upper() in names
        if keep:
            out += line + b"\r\n"
    return out + b"\r\n"


class Literal(bytes):
    pass


class BadCommand(Exception):
    pass


_TOKEN = re.compile(rb'\s*(?:(\()|(\))|"((?:\\.|[^"\\])*)"|([^\s()"]+))')


def tokenize(chunks):
    """[(text, literal or None)] -> nested lists of str / Literal."""
    stack = [[]]
    for text, literal in chunks:
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                if text[pos:].strip() == b"":
                    break
                raise BadCommand(f"cannot parse at {text[pos:pos + 20]!r}")
            pos = m.end()
            if m.group(1):
                stack.append([])
            elif m.group(2):
                if len(stack) == 1:
                    raise BadCommand("unbalanced )")
                inner = stack.pop()
                stack[-1].append(inner)
            elif m.group(3) is not None:
                stack[-1].append(re.sub(rb"\\(.)", rb"\1", m.group(3)).decode("utf-8", "replace"))
            else:
                stack[-1].append(m.group(4).decode("utf-8", "replace"))
        if literal is not None:
            stack[-1].append(Literal(literal))
    if len(stack) != 1:
        raise BadCommand("unbalanced (")
    return stack[0]


def parse_set(text, largest):
    """A sequence set -> [(lo, hi)] ('*' is the largest UID in use)."""
    out = []
    for part in text.split(","):
        ends = [largest if x == "*" else int(x) for x in part.split(":")]
        if len(ends) == 1:
            ends.append(ends[0])
        out.append((min(ends), max(ends)))
    return out


def in_set(uid, ranges):
    return any(lo <= uid <= hi for lo, hi in ranges)


def compress(uids):
    """[uid] -> '1:3,5'."""
    uids = sorted(set(uids))
    out, i = [], 0
    while i < len(uids):
        j = i
        while j + 1 < len(uids) and uids[j + 1] == uids[j] + 1:
            j += 1
        out.append(str(uids[i]) if i == j else f"{uids[i]}:{uids[j]}")
        i = j + 1
    return ",".join(out)


def qstring(s):
    """A quoted string, or a literal when it cannot be quoted; None -> NIL."""
    if s is None:
        return b"NIL"
    b = s.encode("utf-8") if isinstance(s, str) else s
    if re.search(rb"[\x00-\x1f\x7f-\xff]", b):
        return b"{%d}\r\n" % len(b) + b
    return b'"' + b.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def envelope(body):
    """RFC 3501 7.4.2 ENVELOPE from the message's header."""
    hdr = email.parser.BytesHeaderParser().parsebytes(body)

    def addresses(*names):
        for name in names:
            values = hdr.get_all(name)
            if values:
                items = []
                for disp, addr in email.utils.getaddresses([str(v) for v in values]):
                    local, _, host = addr.partition("@")
                    items.append(b"(" + b" ".join([qstring(disp or None), b"NIL", qstring(local), qstring(host)])
                                 + b")")
                return b"(" + b"".join(items) + b")"
        return b"NIL"

    def text(name):
        v = hdr.get(name)
        return qstring(str(v)) if v is not None else b"NIL"

    frm = addresses("From")
    return b"(" + b" ".join([text("Date"), text("Subject"), frm, addresses("Sender", "From"),
                             addresses("Reply-To", "From"), addresses("To"), addresses("Cc"), addresses("Bcc"),
                             text("In-Reply-To"), text("Message-ID")]) + b")"


# ---------------------------------------------------------------------------
# The server

class Server:
    def __init__(self, state_path, scenario, log_path):
        if scenario not in SCENARIOS:
            raise SystemExit(f"fakeimap: unknown scenario {scenario!r} (one of {', '.join(SCENARIOS)})")
        self.state = FakeState(state_path)
        self.state.load()
        self.scenario = scenario
        self.log_file = open(log_path, "a")
        self.inbuf = b""
        self.selected = None  # mailbox name
        self.readonly = False
        self.qresync = False
        self.refused_once = False

    # I/O -----------------------------------------------------------------
    def log(self, kind, data):
        text = escape(data)
        self.log_file.write(f"{os.getpid()} {kind}: {text[:400]}\n")
        self.log_file.flush()

    def hook(self, what):
        self.log("HOOK", what)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self._write_all(data)

    def _write_all(self, data):
        view = memoryview(data)
        while view:
            n = os.write(1, view)
            view = view[n:]

    def line(self, data):
        self.send((data.encode() if isinstance(data, str) else data) + b"\r\n")

    def _fill(self, timeout=None):
        if timeout is not None:
            r, _, _ = select.select([0], [], [], timeout)
            if not r:
                return None
        data = os.read(0, 65536)
        if not data:
            raise EOFError
        self.inbuf += data
        return data

    def readline(self, timeout=None):
        """A line without its CRLF; None on timeout."""
        while b"\r\n" not in self.inbuf:
            if self._fill(timeout) is None:
                return None
        line, _, self.inbuf = self.inbuf.partition(b"\r\n")
        return line

    def read_exact(self, n):
        while len(self.inbuf) < n:
            self._fill()
        data, self.inbuf = self.inbuf[:n], self.inbuf[n:]
        return data

    def read_command(self):
        """(tag, [tokens]) with literals read; None at EOF."""
        chunks = []
        try:
            line = self.readline()
            while True:
                m = re.search(rb"\{(\d+)(\+?)\}$", line)
                if not m:
                    chunks.append((line, None))
                    break
                if not m.group(2):
                    self.line("+ go on")
                chunks.append((line[:m.start()], self.read_exact(int(m.group(1)))))
                line = self.readline()
        except EOFError:
            return None
        self.log("C", b"".join(t + (b"{%d}" % len(lit) if lit is not None else b"") for t, lit in chunks))
        tokens = tokenize(chunks)
        if len(tokens) < 2:
            raise BadCommand("no command")
        return tokens[0], tokens[1:]

    # State -----------------------------------------------------------------
    def save(self):
        self.state.save()

    def mb(self, name=None):
        return self.state.mailbox(name or self.selected)

    def largest(self, mb):
        return mb["messages"][-1]["uid"] if mb["messages"] else 0

    def seqno(self, mb, uid):
        for i, m in enumerate(mb["messages"]):
            if m["uid"] == uid:
                return i + 1
        return None

    # The loop ----------------------------------------------------------------
    def run(self):
        self.line(f"* PREAUTH [CAPABILITY {CAPABILITIES}] fakeimap ({self.scenario}) ready")
        while True:
            try:
                cmd = self.read_command()
            except BadCommand as e:
                self.line(f"* BAD {e}")
                continue
            if cmd is None:
                return
            tag, args = cmd
            name = args[0].upper() if isinstance(args[0], str) else ""
            rest = args[1:]
            if name == "UID" and rest:
                name, rest = "UID " + str(rest[0]).upper(), rest[1:]
            handler = getattr(self, "cmd_" + name.replace(" ", "_"), None)
            if handler is None:
                self.line(f"{tag} BAD unknown command {escape(name)}")
                continue
            try:
                status = handler(tag, rest)
            except (BadCommand, ValueError, IndexError) as e:
                self.line(f"{tag} BAD {escape(str(e))}")
                continue
            if status is None:
                continue  # answered already (or LOGOUT)
            if self.scenario == "stray-fetch" and self.selected is not None:
                self.stray_fetch()
            self.line(f"{tag} {status}")
            if name == "LOGOUT":
                return

    # Commands --------------------------------------------------------------
    def cmd_CAPABILITY(self, tag, args):
        self.line(f"* CAPABILITY {CAPABILITIES}")
        return "OK done"

    def cmd_NOOP(self, tag, args):
        self.report_growth()
        return "OK done"

    cmd_CHECK = cmd_NOOP

    def cmd_LOGOUT(self, tag, args):
        self.line("* BYE bye")
        return "OK done"

    def cmd_ENABLE(self, tag, args):
        caps = [a.upper() for a in args if a.upper() in ("QRESYNC", "CONDSTORE")]
        if "QRESYNC" in caps:
            self.qresync = True
        self.line("* ENABLED " + " ".join(caps))
        return "OK enabled"

    def cmd_NAMESPACE(self, tag, args):
        self.line('* NAMESPACE (("" "/")) NIL NIL')
        return "OK done"

    def status_items(self, name, items):
        mb = self.mb(name)
        values = {"MESSAGES": len(mb["messages"]), "UIDNEXT": mb["uidnext"], "UIDVALIDITY": mb["uidvalidity"],
                  "HIGHESTMODSEQ": mb["modseq"], "RECENT": 0,
                  "UNSEEN": sum(1 for m in mb["messages"] if "\\Seen" not in m["flags"])}
        return " ".join(f"{i.upper()} {values[i.upper()]}" for i in items if i.upper() in values)

    def cmd_LIST(self, tag, args):
        self.state.load()
        # LIST [(selection options)] reference pattern [RETURN (...)]
        if args and isinstance(args[0], list):
            args = args[1:]
        ref, pattern = args[0], args[1]
        ret = args[3] if len(args) > 3 and str(args[2]).upper() == "RETURN" else []
        if pattern == "":
            self.line('* LIST (\\Noselect) "/" ""')
            return "OK done"
        want_status, want_sub = None, False
        i = 0
        while i < len(ret):
            if str(ret[i]).upper() == "STATUS":
                want_status = ret[i + 1]
                i += 1
            elif str(ret[i]).upper() == "SUBSCRIBED":
                want_sub = True
            i += 1
        for name, mb in sorted(self.state.data["mailboxes"].items()):
            attrs = ["\\Subscribed"] if want_sub and mb["subscribed"] else []
            self.line(b"* LIST (" + " ".join(attrs).encode() + b') "/" ' + qstring(name))
            if want_status is not None:
                self.line(b"* STATUS " + qstring(name) + b" (" + self.status_items(name, want_status).encode()
                          + b")")
        if self.scenario == "control-chars":
            self.hook("LIST: a name with ESC, CR, LF")
            self.line(b'* LIST () "/" ' + qstring(b"evil\x1b[31mname\r\nforged: line\x1b[0m"))
        return "OK done"

    def cmd_LSUB(self, tag, args):
        self.state.load()
        for name, mb in sorted(self.state.data["mailboxes"].items()):
            if mb["subscribed"]:
                self.line(b'* LSUB () "/" ' + qstring(name))
        return "OK done"

    def cmd_STATUS(self, tag, args):
        self.state.load()
        name = str(args[0])
        if self.mb(name) is None:
            return "NO [NONEXISTENT] no such mailbox"
        self.line(b"* STATUS " + qstring(name) + b" (" + self.status_items(name, args[1]).encode() + b")")
        return "OK done"

    def cmd_CREATE(self, tag, args):
        self.state.load()
        if self.mb(str(args[0])) is not None:
            return "NO [ALREADYEXISTS] exists"
        self.state.mailbox(str(args[0]), create=True)
        self.save()
        return "OK created"

    def cmd_SUBSCRIBE(self, tag, args, on=True):
        self.state.load()
        mb = self.mb(str(args[0]))
        if mb is not None:
            mb["subscribed"] = on
            self.save()
        return "OK done"

    def cmd_UNSUBSCRIBE(self, tag, args):
        return self.cmd_SUBSCRIBE(tag, args, on=False)

    def cmd_SELECT(self, tag, args, readonly=False):
        self.state.load()
        name = str(args[0])
        mb = self.mb(name)
        self.selected = None
        if self.scenario == "endless-line":
            return self.endless_line()
        if self.scenario == "endless-literals":
            return self.endless_literals()
        if self.scenario == "control-chars-no":
            self.hook("SELECT refused with ESC and CR in the text")
            return "NO \x1b[31mno such mailbox\rforged: second line\x1b[0m"
        if mb is None:
            return "NO [NONEXISTENT] no such mailbox"
        self.selected, self.readonly = ("INBOX" if name.upper() == "INBOX" else name), readonly
        if self.scenario == "vanished-all" and mb["messages"]:
            self.hook(f"SELECT: expunging {len(mb['messages'])} message(s)")
            mb["modseq"] += 1
            mb["expunged"] += [[m["uid"], mb["modseq"]] for m in mb["messages"]]
            mb["messages"] = []
            self.save()
        qresync = None
        if len(args) > 1 and isinstance(args[1], list):
            params = args[1]
            if len(params) >= 2 and str(params[0]).upper() == "QRESYNC":
                qresync = params[1]
        self.line("* FLAGS (" + " ".join(FLAGS) + ")")
        self.line("* OK [PERMANENTFLAGS (" + " ".join(FLAGS) + " \\*)] flags")
        self.line(f"* {len(mb['messages'])} EXISTS")
        self.line("* 0 RECENT")
        self.line(f"* OK [UIDVALIDITY {mb['uidvalidity']}] uids valid")
        self.line(f"* OK [UIDNEXT {mb['uidnext']}] next")
        self.line(f"* OK [HIGHESTMODSEQ {mb['modseq']}] highest")
        self.exists = len(mb["messages"])
        if qresync and int(qresync[0]) == mb["uidvalidity"]:
            since = int(qresync[1])
            known = parse_set(str(qresync[2]), MAX_UID) if len(qresync) > 2 and isinstance(qresync[2], str) \
                else [(1, MAX_UID)]
            gone = [u for u, ms in mb["expunged"] if ms > since and in_set(u, known)]
            if gone:
                self.line("* VANISHED (EARLIER) " + compress(gone))
            for i, m in enumerate(mb["messages"]):
                if m["modseq"] > since:
                    self.line(f"* {i + 1} FETCH (UID {m['uid']} FLAGS ({' '.join(m['flags'])}) "
                              f"MODSEQ ({m['modseq']}))")
        if self.scenario == "vanished-all":
            self.line(f"* VANISHED {1}:{MAX_UID}")
        if self.scenario == "vanished-beyond":
            self.hook(f"SELECT: VANISHED {mb['uidnext'] + 100}:{MAX_UID}")
            self.line(f"* VANISHED {mb['uidnext'] + 100}:{MAX_UID}")
        if self.scenario == "control-chars":
            self.hook("SELECT: ALERT with ESC and CR")
            self.line(b"* OK [ALERT] \x1b[31mforged\rlooks like another line\x1b[0m")
        return f"OK [{'READ-ONLY' if readonly else 'READ-WRITE'}] selected"

    def cmd_EXAMINE(self, tag, args):
        return self.cmd_SELECT(tag, args, readonly=True)

    def cmd_UNSELECT(self, tag, args):
        self.selected = None
        return "OK done"

    cmd_CLOSE = cmd_UNSELECT

    def fetch_line(self, mb, m, seq, items, uid=None):
        parts = [b"UID %d" % (uid or m["uid"])]
        body = base64.b64decode(m["body"])
        for it in items:
            it = it.upper()
            if it == "FLAGS":
                parts.append(b"FLAGS (" + " ".join(m["flags"]).encode() + b")")
            elif it == "INTERNALDATE":
                parts.append(b'INTERNALDATE "' + m["date"].encode() + b'"')
            elif it == "MODSEQ":
                parts.append(b"MODSEQ (%d)" % m["modseq"])
            elif it == "RFC822.SIZE":
                parts.append(b"RFC822.SIZE %d" % len(body))
            elif it == "ENVELOPE":
                parts.append(b"ENVELOPE " + envelope(body))
            elif it in ("BODY.PEEK[]", "BODY[]", "RFC822"):
                parts.append(b"BODY[] {%d}\r\n" % len(body) + body)
            elif it.startswith(("BODY.PEEK[HEADER", "BODY[HEADER")):
                section = it[it.index("[") + 1:-1]
                data = header_section(body, section)
                parts.append(b"BODY[%s] {%d}\r\n" % (section.encode(), len(data)) + data)
        return b"* %d FETCH (" % seq + b" ".join(parts) + b")"

    def cmd_UID_FETCH(self, tag, args):
        self.state.load()
        mb = self.mb()
        if mb is None:
            return "BAD no mailbox selected"
        ranges = parse_set(str(args[0]), self.largest(mb))
        items = args[1] if isinstance(args[1], list) else [args[1]]
        items = join_sections(items)
        if "UID" not in [i.upper() for i in items]:
            items = ["UID"] + items
        since, vanished = None, False
        if len(args) > 2 and isinstance(args[2], list):
            mods = args[2]
            for i, mod in enumerate(mods):
                if str(mod).upper() == "CHANGEDSINCE":
                    since = int(mods[i + 1])
                elif str(mod).upper() == "VANISHED":
                    vanished = True
        if vanished and since is not None:
            gone = [u for u, ms in mb["expunged"] if ms > since and in_set(u, ranges)]
            if gone:
                self.line("* VANISHED (EARLIER) " + compress(gone))
        sent = []
        for i, m in enumerate(mb["messages"]):
            if in_set(m["uid"], ranges) and (since is None or m["modseq"] > since):
                self.line(self.fetch_line(mb, m, i + 1, items))
                sent.append((i + 1, m))
        with_body = any(i.upper() in ("BODY.PEEK[]", "BODY[]") for i in items)
        if with_body and mb["messages"]:
            self.fetch_hooks(mb, ranges, items, sent)
        with_header = any("[HEADER" in i.upper() for i in items)
        if with_header and sent and self.scenario == "header-flood":
            self.hook(f"FETCH: {len(sent)} message(s) 2000 times more, 2000 UIDs not asked for")
            for _ in range(2000):
                for seq, m in sent:
                    self.line(self.fetch_line(mb, m, seq, items))
            seq, m = sent[-1]
            for k in range(2000):
                self.line(self.fetch_line(mb, m, seq, items, uid=mb["uidnext"] + 10 + k))
        return "OK fetched"

    def fetch_hooks(self, mb, ranges, items, sent):
        last = len(mb["messages"])
        if self.scenario == "extra-fetch":
            outside = [(i + 1, m) for i, m in enumerate(mb["messages"]) if not in_set(m["uid"], ranges)]
            if outside:
                seq, m = outside[0]
                self.hook(f"FETCH: UID {m['uid']} not asked for")
                self.line(self.fetch_line(mb, m, seq, items))
            if sent:
                seq, m = sent[0]
                self.hook(f"FETCH: UID {m['uid']} again")
                self.line(self.fetch_line(mb, m, seq, items))
        elif self.scenario == "uid-max" and in_set(MAX_UID, ranges):
            self.hook(f"FETCH: UID {MAX_UID}")
            self.line(self.fetch_line(mb, mb["messages"][-1], last, items, uid=MAX_UID))
        elif self.scenario == "uid-above-uidnext":
            uid = mb["uidnext"] + 5
            if in_set(uid, ranges):
                self.hook(f"FETCH: UID {uid} above UIDNEXT {mb['uidnext']}")
                self.line(self.fetch_line(mb, mb["messages"][-1], last, items, uid=uid))

    def stray_fetch(self):
        mb = self.mb()
        if mb is None or not mb["messages"]:
            return
        pick = [(i + 1, m) for i, m in enumerate(mb["messages"]) if m["uid"] == 3] or [(1, mb["messages"][0])]
        seq, m = pick[0]
        self.hook(f"stray FETCH UID {m['uid']}")
        self.line(self.fetch_line(mb, m, seq, ["FLAGS", "INTERNALDATE", "ENVELOPE", "BODY[]"]))

    def cmd_UID_STORE(self, tag, args):
        self.state.load()
        mb = self.mb()
        if mb is None:
            return "BAD no mailbox selected"
        ranges = parse_set(str(args[0]), self.largest(mb))
        args = args[1:]
        unchanged = None
        if isinstance(args[0], list):
            if str(args[0][0]).upper() == "UNCHANGEDSINCE":
                unchanged = int(args[0][1])
            args = args[1:]
        item, flags = str(args[0]).upper(), args[1] if isinstance(args[1], list) else [args[1]]
        if unchanged is not None and (self.scenario == "modified"
                                      or (self.scenario == "modified-once" and not self.refused_once)):
            self.refused_once = True
            self.hook("STORE refused: NO [MODIFIED 1:4294967295]")
            return f"NO [MODIFIED 1:{MAX_UID}] conditional store failed"
        modified = []
        changed = []
        for i, m in enumerate(mb["messages"]):
            if not in_set(m["uid"], ranges):
                continue
            if unchanged is not None and m["modseq"] > unchanged:
                modified.append(m["uid"])
                continue
            old = list(m["flags"])
            if item.startswith("+FLAGS"):
                new = old + [f for f in flags if f not in old]
            elif item.startswith("-FLAGS"):
                new = [f for f in old if f not in flags]
            else:
                new = list(dict.fromkeys(flags))
            if sorted(new) != sorted(old):
                mb["modseq"] += 1
                m["flags"], m["modseq"] = new, mb["modseq"]
                changed.append((i + 1, m))
        self.save()
        for seq, m in changed:
            if ".SILENT" in item:
                self.line(f"* {seq} FETCH (UID {m['uid']} MODSEQ ({m['modseq']}))")
            else:
                self.line(f"* {seq} FETCH (UID {m['uid']} FLAGS ({' '.join(m['flags'])}) MODSEQ ({m['modseq']}))")
        if modified:
            return f"OK [MODIFIED {compress(modified)}] some not stored"
        return "OK stored"

    def expunge(self, mb, uids=None):
        gone = [m for m in mb["messages"] if "\\Deleted" in m["flags"] and (uids is None or in_set(m["uid"], uids))]
        if not gone:
            return
        mb["modseq"] += 1
        for m in gone:
            mb["expunged"].append([m["uid"], mb["modseq"]])
        mb["messages"] = [m for m in mb["messages"] if m not in gone]
        self.save()
        if self.qresync:
            self.line("* VANISHED " + compress(m["uid"] for m in gone))
        else:
            for m in reversed(gone):
                self.line(f"* {self.seqno({'messages': mb['messages'] + gone}, m['uid'])} EXPUNGE")
        self.exists = len(mb["messages"])

    def cmd_UID_EXPUNGE(self, tag, args):
        self.state.load()
        mb = self.mb()
        self.expunge(mb, parse_set(str(args[0]), self.largest(mb)))
        return f"OK [HIGHESTMODSEQ {mb['modseq']}] expunged"

    def cmd_EXPUNGE(self, tag, args):
        self.state.load()
        mb = self.mb()
        self.expunge(mb)
        return "OK expunged"

    def cmd_UID_SEARCH(self, tag, args):
        self.state.load()
        mb = self.mb()
        uids = [m["uid"] for m in mb["messages"]]
        if len(args) >= 2 and str(args[0]).upper() == "UID":
            ranges = parse_set(str(args[1]), self.largest(mb))
            uids = [u for u in uids if in_set(u, ranges)]
        self.line("* SEARCH" + "".join(f" {u}" for u in uids))
        return "OK searched"

    def cmd_APPEND(self, tag, args):
        self.state.load()
        name = str(args[0])
        mb = self.mb(name)
        if mb is None:
            return "NO [TRYCREATE] no such mailbox"
        rest, uids = args[1:], []
        while rest:
            flags, date = [], None
            if isinstance(rest[0], list):
                flags, rest = [str(f) for f in rest[0]], rest[1:]
            if not isinstance(rest[0], Literal):
                date, rest = str(rest[0]), rest[1:]
            if not isinstance(rest[0], Literal):
                raise BadCommand("APPEND without a message literal")
            uids.append(add_message(mb, bytes(rest[0]), flags, date))
            rest = rest[1:]
        self.save()
        if self.selected == ("INBOX" if name.upper() == "INBOX" else name):
            self.exists = len(mb["messages"])
            self.line(f"* {self.exists} EXISTS")
            self.line(f"* OK [HIGHESTMODSEQ {mb['modseq']}] highest")
        return f"OK [APPENDUID {mb['uidvalidity']} {compress(uids)}] appended"

    def report_growth(self):
        """* N EXISTS when the state file gained messages (a test appended)."""
        if self.selected is None:
            return False
        self.state.load()
        n = len(self.mb()["messages"])
        if n > getattr(self, "exists", 0):
            self.exists = n
            self.line(f"* {n} EXISTS")
            return True
        return False

    def cmd_IDLE(self, tag, args):
        self.line("+ idling")
        while True:
            line = self.readline(timeout=0.2)
            if line is not None:
                self.log("C", line)
                break
            self.report_growth()
            if self.scenario == "stray-fetch":
                self.stray_fetch()
        self.line(f"{tag} OK idle done")
        return None

    # Endless responses -----------------------------------------------------
    def _endless(self, head, chunk):
        sent = 0
        try:
            self.send(head)
            while sent < ENDLESS_CAP:
                self._write_all(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.hook(f"the client hung up after {sent} bytes")
            raise SystemExit(0)
        self.hook(f"stopped at the cap after {sent} bytes")
        raise SystemExit(0)

    def endless_line(self):
        self.hook("SELECT: a line without end")
        return self._endless(b"* OK [ALERT] ", b"x" * (1 << 20))

    def endless_literals(self):
        self.hook("SELECT: a FETCH of endless literals")
        n = 1 << 16
        part = b"X" * n
        chunk = b"".join(b" BODY[%d] {%d}\r\n" % (i + 1, n) + part for i in range(16))
        return self._endless(b"* 1 FETCH (UID 1", chunk)


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    Server(*sys.argv[1:]).run()


if __name__ == "__main__":
    main()
