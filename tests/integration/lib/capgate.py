#!/usr/bin/env python3
"""A capability gate: a tunnel that fails the client for using what the
server did not advertise.

    capgate.py [--cut] [--log=FILE] [--forbid=CAP,...] VIOLATIONS COMMAND...
    capgate.py --self-test

Runs COMMAND (through /bin/sh -c: the IMAP server of a tunnel, e.g. a
Dovecot store whose `imap_capability` was trimmed) and relays our stdin
to its stdin and its stdout to our stdout, byte for byte, as
cutrelay.py does.  On the way it reads both streams:

 - from the server: the capabilities it advertises (the PREAUTH or OK
   greeting's [CAPABILITY ...], untagged CAPABILITY responses, a tagged
   OK's [CAPABILITY ...]; the newest list replaces the older), what ENABLE
   enabled (* ENABLED ...), continuation requests (+), tagged completions;
   literals ({n}, ~{n}: message bodies in FETCH responses) are skipped;
 - from the client: every command (tag, name, arguments), its literals
   ({n}, {n+}, ~{n}, ~{n+}: APPEND bodies, names) skipped by their byte
   counts, IDLE's DONE and AUTHENTICATE's SASL lines told apart from
   commands, and after COMPRESS DEFLATE both directions inflated.

Every command that uses an extension the server has not advertised (at
that point of the connection: before the greeting nothing is) is a
violation, one line appended to VIOLATIONS (flushed at once):

    <pid> <CAPABILITY needed> not advertised: <the command, literals elided> (<why>)
    <pid> protocol violation: <what>      (not a command, a literal sent too early...)

--forbid=CAP,... treats those capabilities as not advertised even if the
server lists them: the check of a forced mode on a full server (e.g.
--forbid=QRESYNC,CONDSTORE for `change-tracking = plain`).  --cut closes
the connection at the first violation (the default records and relays
on: the test reads the file after each run).  --log=FILE appends a line
per client command (`C <pid> <command>`, literals as {n}<N bytes> or
their text when short and printable), `# start <pid> caps: ...` once the
greeting is read and `# end <pid> up=<bytes> down=<bytes> commands=<n>`.

What is checked (command or item -> the capability it needs):

    ENABLE X ...                    ENABLE, and each X (QRESYNC, CONDSTORE, UTF8=ACCEPT...)
    SELECT/EXAMINE ... (CONDSTORE)  CONDSTORE
    SELECT/EXAMINE ... (QRESYNC ..) QRESYNC, enabled by a previous ENABLE (* ENABLED QRESYNC)
    FETCH ... (CHANGEDSINCE n)      CONDSTORE
    FETCH ... (... VANISHED)        QRESYNC, enabled
    FETCH item MODSEQ               CONDSTORE
    FETCH BINARY[..] BINARY.SIZE    BINARY
    FETCH X-GM-*                    X-GM-EXT-1;  EMAILID THREADID: OBJECTID; SAVEDATE; PREVIEW
    STORE ... (UNCHANGEDSINCE n)    CONDSTORE;   STORE X-GM-LABELS: X-GM-EXT-1
    SEARCH RETURN (...)             ESEARCH (SAVE: SEARCHRES too); `$` as a set: SEARCHRES
    SEARCH key MODSEQ               CONDSTORE;   YOUNGER/OLDER: WITHIN; FUZZY: SEARCH=FUZZY;
                                    X-GM-RAW...: X-GM-EXT-1; an unknown search key is a violation
    STATUS HIGHESTMODSEQ            CONDSTORE;   SIZE: STATUS=SIZE; APPENDLIMIT; MAILBOXID: OBJECTID
    LIST (selection options) ...    LIST-EXTENDED (SPECIAL-USE option: SPECIAL-USE too)
    LIST ref (pattern pattern)      LIST-EXTENDED
    LIST ... RETURN (STATUS (..))   LIST-STATUS (and the STATUS items as above)
    LIST ... RETURN (other)         LIST-EXTENDED (SPECIAL-USE: SPECIAL-USE; MYRIGHTS: LIST-MYRIGHTS)
    CREATE name (USE (...))         CREATE-SPECIAL-USE
    APPEND with > 1 message         MULTIAPPEND;  CATENATE: CATENATE; UTF8 (...): UTF8=ACCEPT
    a literal ~{n} (binary)         BINARY
    a literal {n+}                  LITERAL+, or LITERAL- when n <= 4096
    a synchronizing literal {n} whose bytes come before the server's "+"   (a protocol violation)
    MOVE, UID MOVE                  MOVE
    UID EXPUNGE                     UIDPLUS
    COMPRESS X                      COMPRESS=X
    IDLE NOTIFY NAMESPACE UNSELECT ID XLIST SORT(UID SORT) REPLACE UNAUTHENTICATE
                                    the capability of that name; THREAD X: THREAD=X
    GETQUOTA GETQUOTAROOT SETQUOTA  QUOTA;  GETACL SETACL ... : ACL; GETMETADATA ...: METADATA
    STARTTLS                        STARTTLS;  AUTHENTICATE X: AUTH=X;  LOGIN: not LOGINDISABLED
    any other command               a violation (IMAP4rev1's: CAPABILITY NOOP LOGOUT SELECT
                                    EXAMINE CREATE DELETE RENAME SUBSCRIBE UNSUBSCRIBE LIST LSUB
                                    STATUS APPEND CHECK CLOSE EXPUNGE SEARCH FETCH STORE COPY UID
                                    are always allowed)

--self-test runs the parser's own tests (no server) and exits 0 or 1.
"""

import os
import re
import select
import subprocess
import sys
import zlib

BASE_COMMANDS = {"CAPABILITY", "NOOP", "LOGOUT", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME",
                 "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND", "CHECK", "CLOSE",
                 "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "UID", "LOGIN", "AUTHENTICATE", "STARTTLS"}
# commands whose name is the capability they need
SAME_NAME = {"ENABLE", "IDLE", "NOTIFY", "NAMESPACE", "UNSELECT", "ID", "MOVE", "XLIST", "SORT", "REPLACE",
             "UNAUTHENTICATE", "MULTISEARCH"}
OTHER_COMMANDS = {"GETQUOTA": "QUOTA", "GETQUOTAROOT": "QUOTA", "SETQUOTA": "QUOTA",
                  "GETACL": "ACL", "SETACL": "ACL", "DELETEACL": "ACL", "LISTRIGHTS": "ACL", "MYRIGHTS": "ACL",
                  "GETMETADATA": "METADATA", "SETMETADATA": "METADATA", "ESEARCH": "MULTISEARCH"}

# SEARCH keys of RFC 3501 and how many arguments follow them (-1: a key)
SEARCH_KEYS = {k: 0 for k in ("ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
                              "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN")}
SEARCH_KEYS.update({k: 1 for k in ("BCC", "BEFORE", "BODY", "CC", "FROM", "KEYWORD", "LARGER", "ON",
                                   "SENTBEFORE", "SENTON", "SENTSINCE", "SINCE", "SMALLER", "SUBJECT",
                                   "TEXT", "TO", "UID", "UNKEYWORD")})
SEARCH_KEYS.update({"HEADER": 2})
SEARCH_EXTENSION_KEYS = {"MODSEQ": "CONDSTORE", "YOUNGER": "WITHIN", "OLDER": "WITHIN", "FUZZY": "SEARCH=FUZZY",
                         "X-GM-RAW": "X-GM-EXT-1", "X-GM-MSGID": "X-GM-EXT-1", "X-GM-THRID": "X-GM-EXT-1",
                         "X-GM-LABELS": "X-GM-EXT-1", "EMAILID": "OBJECTID", "THREADID": "OBJECTID",
                         "SAVEDBEFORE": "SAVEDATE", "SAVEDON": "SAVEDATE", "SAVEDSINCE": "SAVEDATE",
                         "SAVEDATESUPPORTED": "SAVEDATE"}
SEARCH_EXTENSION_ARGS = {"YOUNGER": 1, "OLDER": 1, "FUZZY": -1, "X-GM-RAW": 1, "X-GM-MSGID": 1, "X-GM-THRID": 1,
                         "X-GM-LABELS": 1, "EMAILID": 1, "THREADID": 1, "SAVEDBEFORE": 1, "SAVEDON": 1,
                         "SAVEDSINCE": 1, "SAVEDATESUPPORTED": 0}
STATUS_ITEMS = {"MESSAGES": None, "RECENT": None, "UIDNEXT": None, "UIDVALIDITY": None, "UNSEEN": None,
                "HIGHESTMODSEQ": "CONDSTORE", "SIZE": "STATUS=SIZE", "APPENDLIMIT": "APPENDLIMIT",
                "MAILBOXID": "OBJECTID", "DELETED": "IMAP4rev2"}
FETCH_ITEMS_BASE = {"ALL", "FAST", "FULL", "BODY", "BODYSTRUCTURE", "ENVELOPE", "FLAGS", "INTERNALDATE",
                    "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT", "UID"}
FETCH_ITEMS_EXT = {"MODSEQ": "CONDSTORE", "BINARY": "BINARY", "BINARY.PEEK": "BINARY", "BINARY.SIZE": "BINARY",
                   "X-GM-MSGID": "X-GM-EXT-1", "X-GM-THRID": "X-GM-EXT-1", "X-GM-LABELS": "X-GM-EXT-1",
                   "EMAILID": "OBJECTID", "THREADID": "OBJECTID", "SAVEDATE": "SAVEDATE", "PREVIEW": "PREVIEW",
                   "SNIPPET": "SNIPPET=FUZZY"}

LITERAL_AT_END = re.compile(rb"(~?)\{(\d+)(\+?)\}\r?\n\Z")
CAPABILITY_CODE = re.compile(r"\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)


# ---------------------------------------------------------------------------
# Tokens of a command whose literals were taken out

class Literal:
    def __init__(self, size, plus, binary, data=b""):
        self.size, self.plus, self.binary, self.data = size, plus, binary, data

    def __repr__(self):
        return f"Literal({self.size})"

    def text(self):
        return self.data.decode("utf-8", "replace")


class Quoted(str):
    pass


class Atom(str):
    @property
    def up(self):
        return self.upper()


def tokenize(parts):
    """parts: [bytes, Literal, bytes, ...] (a command without its CRLF, the
    literals' headers removed) -> nested lists of Atom, Quoted, Literal."""
    stack = [[]]
    for part in parts:
        if isinstance(part, Literal):
            stack[-1].append(part)
            continue
        s = part.decode("utf-8", "replace")
        i, n = 0, len(s)
        while i < n:
            c = s[i]
            if c == " ":
                i += 1
            elif c == "(":
                stack.append([])
                i += 1
            elif c == ")":
                if len(stack) > 1:
                    done = stack.pop()
                    stack[-1].append(done)
                i += 1
            elif c == '"':
                j, out = i + 1, []
                while j < n and s[j] != '"':
                    if s[j] == "\\" and j + 1 < n:
                        j += 1
                    out.append(s[j])
                    j += 1
                stack[-1].append(Quoted("".join(out)))
                i = j + 1
            else:
                j, depth = i, 0
                while j < n:
                    ch = s[j]
                    if ch == "[":
                        depth += 1
                    elif ch == "]":
                        depth -= 1
                    elif depth <= 0 and ch in " ()":
                        break
                    j += 1
                stack[-1].append(Atom(s[i:j]))
                i = j
    while len(stack) > 1:  # unbalanced: keep what we have
        done = stack.pop()
        stack[-1].append(done)
    return stack[0]


def render(parts, limit=300):
    """A command for humans: literals as {n}<N bytes> or their short text."""
    out = []
    for part in parts:
        if isinstance(part, Literal):
            head = f"{'~' if part.binary else ''}{{{part.size}{'+' if part.plus else ''}}}"
            if part.size <= 64 and all(32 <= b < 127 for b in part.data):
                out.append(f"{head}{part.text()}")
            else:
                out.append(f"{head}<{part.size} bytes>")
        else:
            out.append(part.decode("utf-8", "replace"))
    text = "".join(out)
    return text if len(text) <= limit else text[:limit] + "..."


def is_atom(tok, *names):
    return isinstance(tok, Atom) and (not names or tok.up in names)


# ---------------------------------------------------------------------------
# The checks

class Checker:
    """The server's state as the client may know it, and the rules."""

    def __init__(self, forbid=()):
        self.caps = set()          # upper-case
        self.enabled = set()
        self.forbid = {c.upper() for c in forbid}
        self.seen_caps = False

    def has(self, cap):
        cap = cap.upper()
        return cap in self.caps and cap not in self.forbid

    def set_caps(self, words):
        self.caps = {w.upper() for w in words}
        self.seen_caps = True

    def check(self, parts):
        """The capabilities a complete client command needs but that were
        not advertised: [(capability, why)]."""
        need = []
        toks = tokenize(parts)

        def req(cap, why=None):
            if not self.has(cap):
                need.append((cap, why))

        for part in parts:
            if isinstance(part, Literal):
                if part.binary:
                    req("BINARY", "a ~{n} literal")
                if part.plus and not (self.has("LITERAL+") or (self.has("LITERAL-") and part.size <= 4096)):
                    req("LITERAL+" if part.size <= 4096 else "LITERAL+ (LITERAL- allows {n+} up to 4096 only)",
                        f"a non-synchronizing literal of {part.size} bytes")
        if len(toks) < 2 or not is_atom(toks[1]):
            need.append(("IMAP4rev1", "not a command"))
            return need
        args = toks[2:]
        name = toks[1].up
        uid = False
        if name == "UID":
            if not args or not is_atom(args[0]):
                need.append(("IMAP4rev1", "UID without a command"))
                return need
            uid, name, args = True, args[0].up, args[1:]
            if name == "EXPUNGE":
                req("UIDPLUS")
            elif name == "MOVE":
                req("MOVE")
            elif name == "SORT":
                req("SORT")
            elif name == "THREAD":
                req("THREAD=" + (args[0].upper() if args and isinstance(args[0], str) else ""))
            elif name not in ("COPY", "FETCH", "STORE", "SEARCH"):
                need.append(("IMAP4rev1", f"unknown UID command {name}"))
        if not uid:
            if name in SAME_NAME:
                req(name)
            elif name in OTHER_COMMANDS:
                req(OTHER_COMMANDS[name])
            elif name == "COMPRESS":
                req("COMPRESS=" + (args[0].upper() if args and isinstance(args[0], str) else ""))
            elif name == "THREAD":
                req("THREAD=" + (args[0].upper() if args and isinstance(args[0], str) else ""))
            elif name == "STARTTLS":
                req("STARTTLS")
            elif name == "AUTHENTICATE":
                req("AUTH=" + (args[0].upper() if args and isinstance(args[0], str) else ""))
            elif name == "LOGIN":
                if "LOGINDISABLED" in self.caps:
                    need.append(("LOGIN (LOGINDISABLED)", "LOGIN while LOGINDISABLED"))
            elif name not in BASE_COMMANDS:
                need.append((name, "unknown command"))
        handler = getattr(self, "_" + name.replace("-", "_"), None)
        if handler is not None:
            handler(args, req)
        if any(is_atom(t) and t == "$" for t in args):
            req("SEARCHRES", "$ as a message set")
        return need

    # per command ------------------------------------------------------
    def _ENABLE(self, args, req):
        for a in args:
            if isinstance(a, str):
                req(a.upper(), f"ENABLE {a}")

    def _SELECT(self, args, req):
        if len(args) > 1 and isinstance(args[1], list):
            params = args[1]
            i = 0
            while i < len(params):
                p = params[i]
                if is_atom(p, "CONDSTORE"):
                    req("CONDSTORE", "SELECT (CONDSTORE)")
                elif is_atom(p, "QRESYNC"):
                    req("QRESYNC", "SELECT (QRESYNC ...)")
                    if self.has("QRESYNC") and "QRESYNC" not in self.enabled:
                        req("QRESYNC (enabled)", "SELECT (QRESYNC ...) before ENABLE QRESYNC")
                    i += 1
                else:
                    req(f"SELECT parameter {p!s}".upper(), "unknown SELECT parameter")
                i += 1

    _EXAMINE = _SELECT

    def _FETCH(self, args, req):
        if len(args) < 2:
            return
        items = args[1] if isinstance(args[1], list) else [args[1]]
        for it in items:
            if not isinstance(it, str):
                continue
            base = re.split(r"[\[<]", it.upper(), 1)[0]
            if base in FETCH_ITEMS_EXT:
                req(FETCH_ITEMS_EXT[base], f"FETCH item {it}")
            elif base not in FETCH_ITEMS_BASE and base not in ("BODY.PEEK",):
                req(f"FETCH item {base}", "unknown FETCH item")
        if len(args) > 2 and isinstance(args[2], list):
            mods = args[2]
            i = 0
            while i < len(mods):
                m = mods[i]
                if is_atom(m, "CHANGEDSINCE"):
                    req("CONDSTORE", "FETCH (CHANGEDSINCE n)")
                    i += 1
                elif is_atom(m, "VANISHED"):
                    req("QRESYNC", "FETCH (VANISHED)")
                    if self.has("QRESYNC") and "QRESYNC" not in self.enabled:
                        req("QRESYNC (enabled)", "FETCH (VANISHED) before ENABLE QRESYNC")
                elif is_atom(m, "PARTIAL"):
                    req("PARTIAL")
                    i += 1
                else:
                    req(f"FETCH modifier {m!s}".upper(), "unknown FETCH modifier")
                i += 1

    def _STORE(self, args, req):
        if len(args) > 1 and isinstance(args[1], list):
            for m in args[1]:
                if is_atom(m, "UNCHANGEDSINCE"):
                    req("CONDSTORE", "STORE (UNCHANGEDSINCE n)")
                elif is_atom(m) and not m.isdigit():
                    req(f"STORE modifier {m}".upper(), "unknown STORE modifier")
            args = args[:1] + args[2:]
        if len(args) > 1 and isinstance(args[1], str) and "X-GM-LABELS" in args[1].upper():
            req("X-GM-EXT-1", "STORE X-GM-LABELS")

    def _SEARCH(self, args, req):
        i = 0
        if i < len(args) and is_atom(args[i], "RETURN"):
            req("ESEARCH", "SEARCH RETURN (...)")
            if i + 1 < len(args) and isinstance(args[i + 1], list):
                for opt in args[i + 1]:
                    if is_atom(opt, "SAVE"):
                        req("SEARCHRES", "SEARCH RETURN (SAVE)")
                    elif is_atom(opt, "PARTIAL"):
                        req("PARTIAL")
            i += 2
        if i < len(args) and is_atom(args[i], "CHARSET"):
            i += 2
        self._search_keys(args[i:], req)

    def _search_keys(self, keys, req):
        i = 0
        while i < len(keys):
            k = keys[i]
            i += 1
            if isinstance(k, list):
                self._search_keys(k, req)
                continue
            if not is_atom(k):
                req("IMAP4rev1", f"a search key expected, got {k!r}")
                continue
            u = k.up
            if u in SEARCH_KEYS:
                i += SEARCH_KEYS[u]
            elif u == "NOT":
                i = self._one_key(keys, i, req)
            elif u == "OR":
                i = self._one_key(keys, i, req)
                i = self._one_key(keys, i, req)
            elif u == "MODSEQ":
                req("CONDSTORE", "SEARCH MODSEQ")
                if i < len(keys) and isinstance(keys[i], (Quoted, Literal)):
                    i += 2  # entry-name entry-type-req
                i += 1
            elif u in SEARCH_EXTENSION_KEYS:
                req(SEARCH_EXTENSION_KEYS[u], f"SEARCH {u}")
                n = SEARCH_EXTENSION_ARGS.get(u, 0)
                i = self._one_key(keys, i, req) if n < 0 else i + n
            elif re.fullmatch(r"[0-9*:,$]+", u):
                pass  # a message set
            else:
                req(f"SEARCH key {u}", "unknown search key")

    def _one_key(self, keys, i, req):
        """Checks the one key at keys[i]; returns the index after it."""
        if i >= len(keys):
            return i
        start = i
        k = keys[i]
        if isinstance(k, list):
            self._search_keys(k, req)
            return i + 1
        # find where this key ends by checking it alone
        u = k.up if is_atom(k) else ""
        if u in SEARCH_KEYS:
            end = i + 1 + SEARCH_KEYS[u]
        elif u == "NOT":
            end = self._one_key(keys, i + 1, lambda *a: None)
        elif u == "OR":
            end = self._one_key(keys, self._one_key(keys, i + 1, lambda *a: None), lambda *a: None)
        elif u == "MODSEQ":
            end = i + 2 + (2 if i + 1 < len(keys) and isinstance(keys[i + 1], (Quoted, Literal)) else 0)
        elif u in SEARCH_EXTENSION_KEYS:
            n = SEARCH_EXTENSION_ARGS.get(u, 0)
            end = self._one_key(keys, i + 1, lambda *a: None) if n < 0 else i + 1 + n
        else:
            end = i + 1
        self._search_keys(keys[start:end], req)
        return end

    def _status_items(self, items, req, why):
        for it in items:
            if not isinstance(it, str):
                continue
            cap = STATUS_ITEMS.get(it.upper(), f"STATUS item {it.upper()}")
            if cap is not None:
                req(cap, f"{why} {it}")

    def _STATUS(self, args, req):
        if len(args) > 1 and isinstance(args[1], list):
            self._status_items(args[1], req, "STATUS")

    def _LIST(self, args, req):
        i = 0
        if args and isinstance(args[0], list):
            req("LIST-EXTENDED", "LIST (selection options)")
            for o in args[0]:
                if is_atom(o, "SPECIAL-USE"):
                    req("SPECIAL-USE", "LIST (SPECIAL-USE)")
            i = 1
        if len(args) > i + 1 and isinstance(args[i + 1], list):
            req("LIST-EXTENDED", "LIST with several patterns")
        i += 2
        if i < len(args) and is_atom(args[i], "RETURN"):
            opts = args[i + 1] if i + 1 < len(args) and isinstance(args[i + 1], list) else []
            j = 0
            other = False
            while j < len(opts):
                o = opts[j]
                if is_atom(o, "STATUS"):
                    req("LIST-STATUS", "LIST ... RETURN (STATUS ...)")
                    if j + 1 < len(opts) and isinstance(opts[j + 1], list):
                        self._status_items(opts[j + 1], req, "LIST ... RETURN (STATUS")
                        j += 1
                else:
                    other = True
                    if is_atom(o, "SPECIAL-USE"):
                        req("SPECIAL-USE", "LIST ... RETURN (SPECIAL-USE)")
                    elif is_atom(o, "MYRIGHTS"):
                        req("LIST-MYRIGHTS", "LIST ... RETURN (MYRIGHTS)")
                    elif is_atom(o, "METADATA"):
                        req("LIST-METADATA", "LIST ... RETURN (METADATA)")
                        j += 1
                j += 1
            if other or not opts:
                req("LIST-EXTENDED", "LIST ... RETURN (...)")
        elif i < len(args):
            req("LIST-EXTENDED", "LIST with extra arguments")

    def _CREATE(self, args, req):
        if len(args) > 1:
            req("CREATE-SPECIAL-USE", "CREATE name (USE (...))")

    def _APPEND(self, args, req):
        messages = 0
        i = 1
        while i < len(args):
            a = args[i]
            if isinstance(a, Literal):
                messages += 1
            elif is_atom(a, "CATENATE"):
                req("CATENATE", "APPEND CATENATE")
                messages += 1
                i += 1
            elif is_atom(a, "UTF8"):
                req("UTF8=ACCEPT", "APPEND UTF8 (...)")
                messages += 1
                i += 1
            i += 1
        if messages > 1:
            req("MULTIAPPEND", f"APPEND of {messages} messages")


# ---------------------------------------------------------------------------
# The two streams

class ServerReader:
    """Reads the server's bytes: capabilities, ENABLED, '+', completions."""

    def __init__(self, gate):
        self.gate = gate
        self.buf = b""
        self.line = []          # parts of the current response
        self.literal_left = 0
        self.inflater = None

    def feed(self, data):
        if self.inflater is not None:
            data = self.inflater.decompress(data)
        self.buf += data
        while True:
            if self.literal_left:
                take = min(self.literal_left, len(self.buf))
                self.literal_left -= take
                self.buf = self.buf[take:]
                if self.literal_left:
                    return
                continue
            end = self.buf.find(b"\n")
            if end < 0:
                return
            chunk, self.buf = self.buf[:end + 1], self.buf[end + 1:]
            m = LITERAL_AT_END.search(chunk)
            if m:
                self.line.append(chunk[:m.start()])
                self.line.append(b" {} ")
                self.literal_left = int(m.group(2))
                continue
            self.line.append(chunk.rstrip(b"\r\n"))
            response, self.line = b"".join(self.line), []
            rest = self.gate.server_response(response)
            if rest == "deflate":
                self.inflater = zlib.decompressobj(-15)
                data, self.buf = self.buf, b""
                self.buf = self.inflater.decompress(data)

    def tail(self):
        return self.buf


class ClientReader:
    """Reads the client's bytes: commands with their literals."""

    def __init__(self, gate):
        self.gate = gate
        self.buf = b""
        self.parts = []
        self.literal = None      # the Literal being read
        self.literal_left = 0
        self.waiting_plus = False  # a synchronizing literal's header was sent
        self.inflater = None
        self.mode = "command"    # or "idle" (DONE expected) or "sasl" (until the tagged answer)

    def feed(self, data):
        if self.inflater is not None:
            data = self.inflater.decompress(data)
        self.buf += data
        while True:
            if self.literal is not None:
                if self.buf and self.waiting_plus and not self.gate.plus_seen:
                    self.gate.violation("IMAP4rev1 (synchronizing literal)",
                                        "literal bytes sent before the server's continuation: "
                                        + render(self.parts + [b"{%d}" % self.literal.size]))
                    self.waiting_plus = False
                take = min(self.literal_left, len(self.buf))
                if len(self.literal.data) < 64:
                    self.literal.data += self.buf[:min(take, 64 - len(self.literal.data))]
                self.literal_left -= take
                self.buf = self.buf[take:]
                if self.literal_left:
                    return
                self.parts.append(self.literal)
                self.literal = None
                self.waiting_plus = False
                continue
            end = self.buf.find(b"\n")
            if end < 0:
                return
            chunk, self.buf = self.buf[:end + 1], self.buf[end + 1:]
            if self.mode == "idle":
                if chunk.rstrip(b"\r\n").upper() != b"DONE":
                    self.gate.violation("IMAP4rev1", f"DONE expected while idling, got {chunk[:80]!r}")
                self.mode = "command"
                continue
            if self.mode == "sasl":
                continue
            m = LITERAL_AT_END.search(chunk)
            if m:
                self.parts.append(chunk[:m.start()])
                self.literal = Literal(int(m.group(2)), bool(m.group(3)), bool(m.group(1)))
                self.literal_left = self.literal.size
                self.waiting_plus = not self.literal.plus
                self.gate.plus_seen = False
                if self.literal_left == 0:
                    # nothing to wait for in the byte stream; the same rule holds
                    self.parts.append(self.literal)
                    self.literal = None
                continue
            self.parts.append(chunk.rstrip(b"\r\n"))
            parts, self.parts = self.parts, []
            after = self.gate.client_command(parts)
            if after in ("idle", "sasl"):
                self.mode = after


class Gate:
    def __init__(self, violations_path, log_path=None, forbid=(), cut=False, out=None):
        self.pid = os.getpid()
        self.checker = Checker(forbid)
        self.violations_path = violations_path
        self.log_path = log_path
        self.cut = cut
        self.out = out  # a list instead of files (self-test)
        self.server = ServerReader(self)
        self.client = ClientReader(self)
        self.plus_seen = False
        self.pending = {}        # tag -> command name, for COMPRESS / AUTHENTICATE / ENABLE
        self.commands = 0
        self.count = 0           # violations
        self.started = False
        self.up = self.down = 0
        self.stop = False

    # output ---------------------------------------------------------------
    def _append(self, path, line):
        if self.out is not None:
            self.out.append(line)
            return
        if path:
            with open(path, "a") as f:
                f.write(line + "\n")

    def violation(self, cap, what):
        self.count += 1
        if cap.startswith("IMAP4rev1"):
            self._append(self.violations_path, f"{self.pid} protocol violation: {what}")
        else:
            self._append(self.violations_path, f"{self.pid} {cap} not advertised: {what}")
        if self.cut:
            self.stop = True

    def log(self, line):
        if self.log_path and self.out is None:
            self._append(self.log_path, line)

    # the server -----------------------------------------------------------
    def server_response(self, line):
        text = line.decode("utf-8", "replace")
        if text.startswith("+"):
            self.plus_seen = True
            return None
        words = text.split(" ")
        m = CAPABILITY_CODE.search(text)
        if m and len(words) > 2 and words[1].upper() in ("OK", "PREAUTH", "BYE", "NO", "BAD") and \
                words[2].upper().startswith("[CAPABILITY"):
            self.checker.set_caps(m.group(1).split())
        elif words[0] == "*" and len(words) > 1 and words[1].upper() == "CAPABILITY":
            self.checker.set_caps(words[2:])
        elif words[0] == "*" and len(words) > 1 and words[1].upper() == "ENABLED":
            self.checker.enabled |= {w.upper() for w in words[2:]}
        if not self.started and words[0] == "*":
            self.started = True
            self.log(f"# start {self.pid} caps: {' '.join(sorted(self.checker.caps))}")
        if words[0] != "*" and words[0] in self.pending:
            name = self.pending.pop(words[0])
            ok = len(words) > 1 and words[1].upper() == "OK"
            if name == "sasl":
                self.client.mode = "command"
            elif name == "COMPRESS" and ok:
                self.client.inflater = zlib.decompressobj(-15)
                return "deflate"
        return None

    # the client -----------------------------------------------------------
    def client_command(self, parts):
        self.commands += 1
        self.log(f"C {self.pid} {render(parts)}")
        try:
            problems = self.checker.check(parts)
        except Exception as e:  # a gate bug must not pass unnoticed
            problems = [("GATE-ERROR", f"{e!r}")]
        for cap, why in problems:
            self.violation(cap, f"{render(parts)}" + (f" ({why})" if why else ""))
        toks = tokenize(parts[:1]) if parts and isinstance(parts[0], bytes) else []
        if len(toks) >= 2 and isinstance(toks[1], str):
            tag, name = str(toks[0]), toks[1].upper()
            if name == "IDLE":
                return "idle"
            if name == "AUTHENTICATE":
                self.pending[tag] = "sasl"
                return "sasl"
            if name == "COMPRESS":
                self.pending[tag] = "COMPRESS"
            else:
                self.pending[tag] = name
        return None


# ---------------------------------------------------------------------------
# The relay

def relay(gate, command):
    child = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    up_in, up_out = 0, 1
    down_in, down_out = child.stdout.fileno(), child.stdin.fileno()
    open_in = {up_in: down_out, down_in: up_out}
    parsing = True
    try:
        while open_in and not gate.stop:
            readable, _, _ = select.select(list(open_in), [], [])
            for fd in readable:
                data = os.read(fd, 65536)
                if not data:
                    out = open_in.pop(fd)
                    if out == down_out:
                        child.stdin.close()
                    else:
                        os.close(up_out)
                    continue
                if parsing:
                    try:
                        # parse first: the client never learns what we did not read
                        (gate.client if fd == up_in else gate.server).feed(data)
                    except Exception as e:
                        gate.violation("GATE-ERROR", f"{e!r}: parsing stopped")
                        parsing = False
                if fd == up_in:
                    gate.up += len(data)
                else:
                    gate.down += len(data)
                _write(open_in[fd], data)
                if gate.stop:
                    break
    finally:
        gate.log(f"# end {gate.pid} up={gate.up} down={gate.down} commands={gate.commands}")
        for f in (child.stdin, child.stdout):
            try:
                f.close()
            except OSError:
                pass
        for fd in (0, 1):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()


def _write(fd, data):
    while data:
        n = os.write(fd, data)
        data = data[n:]


# ---------------------------------------------------------------------------
# Self-test

GMAIL = ("IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 UIDPLUS COMPRESS=DEFLATE ENABLE "
         "MOVE CONDSTORE ESEARCH UTF8=ACCEPT LIST-EXTENDED LIST-STATUS LITERAL- SPECIAL-USE APPENDLIMIT=35651584")
M365 = "IMAP4 IMAP4rev1 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+"
FULL = ("IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS "
        "THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS "
        "LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS "
        "BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE COMPRESS=DEFLATE LITERAL+ NOTIFY "
        "SPECIAL-USE")


def _session(caps, client, server_after=b"", forbid=(), greeting=None):
    """Feeds a PREAUTH greeting advertising caps, then the client bytes
    (a list of chunks; b'<+>' feeds the server's '+ OK' continuation);
    returns the violation lines."""
    out = []
    g = Gate(None, out=out, forbid=forbid)
    g.server.feed(greeting or b"* PREAUTH [CAPABILITY " + caps.encode() + b"] Logged in\r\n")
    for chunk in client:
        if chunk == b"<+>":
            g.server.feed(b"+ OK\r\n")
        elif chunk.startswith(b"<S>"):
            g.server.feed(chunk[3:])
        else:
            g.client.feed(chunk)
    g.server.feed(server_after)
    return out


def self_test():
    cases = []  # (name, violations, expected capabilities (substrings), or [] for none)

    def case(name, got, *expected):
        cases.append((name, got, expected))

    body = b"From: a\r\nSubject: x\r\n\r\nA1 ENABLE QRESYNC\r\nB2 UID MOVE 1 X {5}\r\n" * 3
    # clean sessions
    case("Gmail-like CONDSTORE session", _session(GMAIL, [
        b"1 ENABLE CONDSTORE\r\n", b"2 LIST \"\" \"*\" RETURN (STATUS (UIDNEXT MESSAGES HIGHESTMODSEQ))\r\n",
        b"3 SELECT INBOX (CONDSTORE)\r\n", b"4 UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE 4)\r\n",
        b"5 UID STORE 3 (UNCHANGEDSINCE 9) +FLAGS.SILENT (\\Seen)\r\n",
        b"6 UID SEARCH RETURN (ALL) UID 1:*\r\n", b"7 UID EXPUNGE 4\r\n", b"8 UID MOVE 5 Trash\r\n",
        b"9 APPEND INBOX (\\Seen) {%d}\r\n" % len(body), b"<+>", body + b"\r\n",
        b"10 APPEND INBOX {3+}\r\nabc\r\n", b"11 IDLE\r\n", b"DONE\r\n", b"12 LSUB \"\" \"*\"\r\n",
        b"13 STATUS INBOX (UIDNEXT HIGHESTMODSEQ)\r\n", b"14 LIST (SUBSCRIBED) \"\" \"*\"\r\n",
        b"15 UID FETCH 1:3 (UID FLAGS MODSEQ BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>)\r\n",
        b"16 UID SEARCH OR (SEEN FLAGGED) NOT MODSEQ 5 SUBJECT \"MODSEQ x\"\r\n", b"17 NAMESPACE\r\n"]))
    case("Microsoft-365-like plain session", _session(M365, [
        b"1 LIST \"\" \"*\"\r\n", b"2 LSUB \"\" \"*\"\r\n", b"3 STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY)\r\n",
        b"4 SELECT INBOX\r\n", b"5 UID FETCH 1:* (FLAGS)\r\n", b"6 UID SEARCH ALL\r\n",
        b"7 APPEND {5+}\r\nINBOX {10+}\r\n0123456789\r\n", b"8 UID EXPUNGE 1:3\r\n", b"9 UID MOVE 1 X\r\n",
        b"10 UNSELECT\r\n", b"11 ID NIL\r\n", b"12 UID STORE 1 +FLAGS (\\Seen $Label)\r\n",
        b"13 APPEND INBOX {100000+}\r\n" + b"x" * 100000 + b"\r\n"]))
    case("QRESYNC session on a full server", _session(FULL, [
        b"1 ENABLE QRESYNC\r\n", b"<S>* ENABLED QRESYNC\r\n1 OK done\r\n",
        b"2 SELECT INBOX (QRESYNC (1 2 1:4))\r\n", b"3 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 3 VANISHED)\r\n",
        b"4 APPEND X {3}\r\n", b"<+>", b"abc {3}\r\n", b"<+>", b"def\r\n",
        b"5 COMPRESS DEFLATE\r\n"]))
    # violations
    case("ENABLE QRESYNC on Gmail", _session(GMAIL, [b"1 ENABLE QRESYNC\r\n"]), "QRESYNC")
    case("SELECT (QRESYNC) on Gmail", _session(GMAIL, [b"1 SELECT INBOX (QRESYNC (1 2))\r\n"]), "QRESYNC")
    case("SELECT (QRESYNC) before ENABLE", _session(FULL, [b"1 SELECT INBOX (QRESYNC (1 2))\r\n"]),
         "QRESYNC (enabled)")
    case("VANISHED on Gmail", _session(GMAIL, [b"1 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n"]), "QRESYNC")
    case("ENABLE on M365", _session(M365, [b"1 ENABLE CONDSTORE\r\n"]), "ENABLE", "CONDSTORE")
    case("SELECT (CONDSTORE) on M365", _session(M365, [b"1 SELECT {5+}\r\nINBOX (CONDSTORE)\r\n"]), "CONDSTORE")
    case("CHANGEDSINCE on M365", _session(M365, [b"1 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 7)\r\n"]), "CONDSTORE")
    case("MODSEQ item on M365", _session(M365, [b"1 UID FETCH 1:* (FLAGS MODSEQ)\r\n"]), "CONDSTORE")
    case("UNCHANGEDSINCE on M365", _session(M365, [b"1 UID STORE 1 (UNCHANGEDSINCE 3) +FLAGS (\\Seen)\r\n"]),
         "CONDSTORE")
    case("STATUS HIGHESTMODSEQ on M365", _session(M365, [b"1 STATUS INBOX (UIDNEXT HIGHESTMODSEQ)\r\n"]),
         "CONDSTORE")
    case("LIST-STATUS on M365", _session(M365, [b"1 LIST \"\" \"*\" RETURN (STATUS (MESSAGES))\r\n"]), "LIST-STATUS")
    case("LIST (SUBSCRIBED) on M365", _session(M365, [b"1 LIST (SUBSCRIBED) \"\" \"*\"\r\n"]), "LIST-EXTENDED")
    case("LIST RETURN (SUBSCRIBED) on M365", _session(M365, [b"1 LIST \"\" * RETURN (SUBSCRIBED)\r\n"]),
         "LIST-EXTENDED")
    case("LIST patterns on M365", _session(M365, [b"1 LIST \"\" (INBOX \"a/*\")\r\n"]), "LIST-EXTENDED")
    case("ESEARCH on M365", _session(M365, [b"1 UID SEARCH RETURN (ALL) 1:*\r\n"]), "ESEARCH")
    case("MODSEQ search on M365", _session(M365, [b"1 UID SEARCH MODSEQ 5\r\n"]), "CONDSTORE")
    case("MOVE without MOVE", _session("IMAP4rev1 UIDPLUS", [b"1 UID MOVE 1:2 X\r\n", b"2 MOVE 1 X\r\n"]),
         "MOVE", "MOVE")
    case("UID EXPUNGE without UIDPLUS", _session("IMAP4rev1 MOVE", [b"1 UID EXPUNGE 1\r\n"]), "UIDPLUS")
    case("COMPRESS on M365", _session(M365, [b"1 COMPRESS DEFLATE\r\n"]), "COMPRESS=DEFLATE")
    case("MULTIAPPEND on Gmail", _session(GMAIL, [b"1 APPEND INBOX {3}\r\n", b"<+>", b"abc () {3}\r\n", b"<+>",
                                                  b"def\r\n"]), "MULTIAPPEND")
    case("{n+} on Gmail (LITERAL-) over 4096", _session(GMAIL, [b"1 APPEND INBOX {5000+}\r\n" + b"y" * 5000 + b"\r\n"]),
         "LITERAL+")
    case("{n+} without LITERAL+", _session("IMAP4rev1 UIDPLUS", [b"1 APPEND INBOX {3+}\r\nabc\r\n"]), "LITERAL+")
    case("literal before +", _session(GMAIL, [b"1 APPEND INBOX {3}\r\nabc\r\n"]), "continuation")
    case("binary literal", _session(GMAIL, [b"1 APPEND INBOX ~{3+}\r\nabc\r\n"]), "BINARY")
    case("IDLE NOTIFY NAMESPACE UNSELECT ID without them", _session("IMAP4rev1", [
        b"1 IDLE\r\n", b"DONE\r\n", b"2 NOTIFY NONE\r\n", b"3 NAMESPACE\r\n", b"4 UNSELECT\r\n", b"5 ID NIL\r\n"]),
         "IDLE", "NOTIFY", "NAMESPACE", "UNSELECT", "ID")
    case("unknown command", _session(GMAIL, [b"1 XYZZY\r\n"]), "XYZZY")
    case("forbidden by --forbid", _session(FULL, [b"1 ENABLE QRESYNC\r\n", b"2 STATUS X (HIGHESTMODSEQ)\r\n"],
                                           forbid=("QRESYNC", "CONDSTORE")), "QRESYNC", "CONDSTORE")
    case("before any greeting", _session("", [b"1 ENABLE QRESYNC\r\n"], greeting=b""), "ENABLE", "QRESYNC")
    case("capabilities from a CAPABILITY response", _session("", [b"<S>* CAPABILITY IMAP4rev1 MOVE\r\n",
                                                                  b"1 MOVE 1 X\r\n", b"2 IDLE\r\n", b"DONE\r\n"],
                                                             greeting=b"* PREAUTH hi\r\n"), "IDLE")
    # a body in a FETCH response that looks like a CAPABILITY line changes nothing
    fake = b"* CAPABILITY IMAP4rev1 QRESYNC ENABLE\r\n"
    case("server literal skipped", _session(M365, [b"<S>* 1 FETCH (UID 1 BODY[] {%d}\r\n%s)\r\n" % (len(fake), fake),
                                                   b"1 ENABLE QRESYNC\r\n"]), "ENABLE", "QRESYNC")
    # deflate after COMPRESS: both directions
    cz, sz = zlib.compressobj(wbits=-15), zlib.compressobj(wbits=-15)
    out = []
    g = Gate(None, out=out)
    g.server.feed(b"* PREAUTH [CAPABILITY " + FULL.encode() + b"] hi\r\n")
    g.client.feed(b"1 COMPRESS DEFLATE\r\n")
    g.server.feed(b"1 OK begin\r\n" + sz.compress(b"* CAPABILITY IMAP4rev1 UIDPLUS\r\n") + sz.flush(zlib.Z_SYNC_FLUSH))
    g.client.feed(cz.compress(b"2 UID EXPUNGE 1\r\n3 UID MOVE 1 X\r\n") + cz.flush(zlib.Z_SYNC_FLUSH))
    case("after COMPRESS DEFLATE", out, "MOVE")

    failed = 0
    for name, got, expected in cases:
        ok = len(got) == len(expected) and all(e in line for e, line in zip(expected, got))
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": expected {list(expected)}, got {got}"))
        failed += not ok
    print(f"capgate self-test: {len(cases) - failed}/{len(cases)} passed")
    return 1 if failed else 0


def main():
    args = sys.argv[1:]
    if args == ["--self-test"]:
        sys.exit(self_test())
    cut, log_path, forbid = False, None, ()
    while args and args[0].startswith("--"):
        opt = args.pop(0)
        if opt == "--cut":
            cut = True
        elif opt.startswith("--log="):
            log_path = opt.split("=", 1)[1]
        elif opt.startswith("--forbid="):
            forbid = [c for c in opt.split("=", 1)[1].split(",") if c]
        else:
            raise SystemExit(f"capgate.py: unknown option {opt}")
    if len(args) < 2:
        raise SystemExit(__doc__.split("\n\n")[1])
    gate = Gate(args[0], log_path, forbid, cut)
    relay(gate, " ".join(args[1:]))


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        pass
    sys.exit(0)
