#!/usr/bin/env python3
"""pullimap's SMTP/LMTP client (libinterimap/smtp) through smtp-probe,
against real servers on 127.0.0.1:

- SMTP: Python's standard smtpd (3.11), run as a separate process with a
  few switches: PIPELINING advertised or not, 8BITMIME advertised or not,
  a refused sender, recipient or message body, a server that ends each
  session after one message (421).  It records what it receives: each
  message with its envelope, the command batches (to see pipelining on
  the wire) and the sessions.
- LMTP: Dovecot's lmtp (harness.DovecotDaemon(lmtp=True)), delivering into
  a store read back with imaplib: the messages must arrive byte for byte
  (after the Return-Path/Delivered-To/Received headers Dovecot prepends),
  including the dot-stuffing and line-ending cases, 8-bit bytes, a 5 MiB
  message and 200 messages over one session.

Plus the pieces without a server: the DATA encoding (a table, each input
split at every byte), deliver-method parsing and envelope_mailbox()."""

import os
import re
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402

PROBE = os.environ.get("SMTP_PROBE", "")
if not PROBE or not os.access(PROBE, os.X_OK):
    h.skip(f"smtp-probe not found (SMTP_PROBE={PROBE!r}); run through meson test")
if not h.have_smtpd():  # (the server runs in a child)
    h.skip(f"{sys.executable} has no smtpd module (Python >= 3.12): run with Python 3.11")

T = None


def setUpModule():
    global T
    T = h.TestDir("iit-smtp-")


# ---------------------------------------------------------------------------
# Messages and the probe

def normalized(msg):
    """What must arrive: every CRLF, bare LF and bare CR as CRLF, and a final
    CRLF added when missing (RFC 5321 4.1.1.4)."""
    out = re.sub(rb"\r\n|\r|\n", b"\r\n", msg)
    if not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out


def SmtpdServer(**opts):  # noqa: N802  (the tests' server, in this script's directory)
    return h.SmtpdServer(T, **opts)


def as_smtpd_stores(msg):
    """smtpd keeps the data without the CRLF before the final "." and joins
    lines with LF."""
    return normalized(msg)[:-2].replace(b"\r\n", b"\n")


def tagged(name, body):
    return h.make_message(head=["X-Test-Id: " + name, "Subject: " + name], body=body)


# Dot-stuffing and line-ending cases (RFC 5321 4.5.2, 2.3.8, 4.1.1.4).
EDGE_CASES = {
    "plain": tagged("plain", b"Hello.\r\n"),
    "leading-dots": tagged("leading-dots", b".hidden\r\n..two\r\n...three\r\n. space\r\nend\r\n"),
    "lone-dot": tagged("lone-dot", b"before\r\n.\r\nafter\r\n"),
    "lone-dot-last": tagged("lone-dot-last", b"before\r\n.\r\n"),
    "dot-no-newline": tagged("dot-no-newline", b"last line is a dot\r\n."),
    "no-trailing-newline": tagged("no-trailing-newline", b"no newline at the end"),
    "bare-lf": tagged("bare-lf", b"one\ntwo\n.three\n.\nfour\n"),
    "bare-cr": tagged("bare-cr", b"one\rtwo\r.\r\nthree\r\r\nfour"),
    "crlf-dot-split": tagged("crlf-dot-split", b"x\r\n\r\n.\r\n\r\n.\r\n"),
    "fake-end": tagged("fake-end", b"a\n.\r\nb\r.\r\nc\r\n.\nd\r\n"),
    "eight-bit": tagged("eight-bit", "caf\u00e9 na\u00efve \u2014 \u65e5\u672c\r\n".encode() + b"latin1 \xe9\xff\r\n"),
    "long-line": tagged("long-line", b"x" * 5000 + b"\r\n." + b"y" * 3000 + b"\r\n"),
    "empty-body": b"X-Test-Id: empty-body\r\n\r\n",
}


class Run(h.Result):
    """smtp-probe's Result, with its output parsed."""

    @property
    def results(self):
        """{file basename: 'DELIVERED' or 'REFUSED: ...'}."""
        out = {}
        for line in self.out.splitlines():
            m = re.match(r"^DELIVERED (.*)$", line)
            if m:
                out[os.path.basename(m.group(1))] = "DELIVERED"
                continue
            m = re.match(r"^REFUSED (.*?): (.*)$", line)
            if m:
                out[os.path.basename(m.group(1))] = "REFUSED: " + m.group(2)
        return out

    @property
    def extensions(self):
        for line in self.out.splitlines():
            if line.startswith("EXTENSIONS"):
                return set(line.split()[1:])
        return set()


def probe(*args, timeout=300):
    r = h.run([PROBE] + list(args), timeout=timeout, cls=Run)
    if r.rc == "TIMEOUT":
        raise AssertionError("smtp-probe timed out\n" + r.describe())
    return r


_file_counter = [0]


def write_messages(messages, prefix="m"):
    """Writes {name: bytes} (or a list) into files; returns their paths in order."""
    d = T.sub("messages")
    paths = []
    items = messages.items() if isinstance(messages, dict) else ((f"{i:04d}", m) for i, m in enumerate(messages))
    for name, data in items:
        _file_counter[0] += 1
        path = os.path.join(d, f"{prefix}-{_file_counter[0]:05d}-{name}")
        with open(path, "wb") as f:
            f.write(data)
        paths.append(path)
    return paths


def deliver(method, paths, *options):
    return probe("deliver", *options, method, *paths)


# ---------------------------------------------------------------------------
# No server: encoding, deliver-method, envelope sender

class Encoding(unittest.TestCase):
    # input -> the bytes sent after the 354, end of data included
    TABLE = [
        (b"", b"\r\n.\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"..\r\n", b"...\r\n.\r\n"),
        (b"a\r\n.\r\nb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\n.\nb\n", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r", b"a\r\n.\r\n"),
        (b"\r", b"\r\n.\r\n"),
        (b"\n", b"\r\n.\r\n"),
        (b"\r\r\n\n", b"\r\n\r\n\r\n.\r\n"),
        (b"x.y\r\n .z\r\n", b"x.y\r\n .z\r\n.\r\n"),
        (b"\r\n.", b"\r\n..\r\n.\r\n"),
        (b"\xff.\xfe\r\n.\xfd", b"\xff.\xfe\r\n..\xfd\r\n.\r\n"),
    ]

    def encode(self, data, chunk):
        path = write_messages({"enc": data}, prefix="enc")[0]
        r = subprocess.run([PROBE, "encode", "--chunk", str(chunk), path], capture_output=True, check=True)
        return r.stdout

    def test_table_at_every_split(self):
        for data, expected in self.TABLE:
            # chunk sizes 1..len+1: every split point is met at least once
            for chunk in range(1, len(data) + 2):
                with self.subTest(data=data, chunk=chunk):
                    self.assertEqual(self.encode(data, chunk), expected)

    def test_edge_cases_match_the_model(self):
        # The model: normalize, dot-stuff each line, end with ".\r\n".
        for name, msg in EDGE_CASES.items():
            n = normalized(msg) if msg else b"\r\n"
            stuffed = b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in n.split(b"\r\n")[:-1])
            for chunk in (1, 2, 3, 7, 4096):
                with self.subTest(name=name, chunk=chunk):
                    self.assertEqual(self.encode(msg, chunk), stuffed + b".\r\n")


class DeliverMethod(unittest.TestCase):
    def test_valid(self):
        for value, expected in [
            ("smtp:[127.0.0.1]:25", "smtp 127.0.0.1 25"),
            ("lmtp:[127.0.0.1]:24", "lmtp 127.0.0.1 24"),
            ("lmtp:[::1]:2424", "lmtp ::1 2424"),
            ("smtp:[::ffff:192.0.2.1]:65535", "smtp ::ffff:192.0.2.1 65535"),
            ("smtp:[127.0.0.1]:0025", "smtp 127.0.0.1 25"),
        ]:
            with self.subTest(value=value):
                r = probe("method", value)
                self.assertEqual((r.rc, r.out.strip()), (0, expected), r.describe())

    def test_invalid(self):
        for value in ["SMTP:[127.0.0.1]:25", "smtps:[127.0.0.1]:25", "smtp:127.0.0.1:25", "smtp:[127.0.0.1]",
                      "smtp:[127.0.0.1]:", "smtp:[localhost]:25", "smtp:[1.2.3]:25", "smtp:[127.0.0.1]:0",
                      "smtp:[127.0.0.1]:65536", "smtp:[127.0.0.1]:2x5", "smtp:[]:25", "lmtp:[fe80::1%lo]:24"]:
            with self.subTest(value=value):
                r = probe("method", value)
                self.assertEqual(r.rc, 1, r.describe())
                self.assertIn(f"Invalid deliver-method `{value}`", r.err)

    def test_reference_regex_agrees(self):
        # The reference's validation: /\A([ls]mtp:\[.*\]:\d+)\z/ then
        # inet_pton; we refuse the same values (and also port 0 / > 65535).
        pattern = re.compile(r"\A([ls]mtp:\[.*\]:\d+)\Z")
        for value in ["smtp:[127.0.0.1]:25", "Smtp:[127.0.0.1]:25", "smtp:[127.0.0.1]25", "lmtp:[::1]:24"]:
            with self.subTest(value=value):
                self.assertEqual(probe("method", value).rc == 0, bool(pattern.match(value)))


class EnvelopeMailbox(unittest.TestCase):
    TABLE = [
        # (local, domain) -> reverse-path, as pullimap 0.5.7 builds it
        (("alice", "example.org"), "alice@example.org"),
        (("first.last", "example.org"), "first.last@example.org"),
        (("a+tag!#$%&'*/=?^_`{|}~-", "example.org"), "a+tag!#$%&'*/=?^_`{|}~-@example.org"),
        (("john doe", "example.org"), '"john doe"@example.org'),
        (("a..b", "example.org"), '"a..b"@example.org'),
        ((".a", "example.org"), '".a"@example.org'),
        (('say "hi"\\', "example.org"), '"say \\"hi\\"\\\\"@example.org'),
        (("", "example.org"), '""@example.org'),
        (("caf\u00e9", "example.org"), ""),        # not ASCII: null sender, as the reference
        (("NIL", "example.org"), ""),               # no local part (a group)
        (("alice", "NIL"), ""),
        (("alice", "[192.0.2.1]"), "alice@[192.0.2.1]"),
        (("alice", "[IPv6:2001:db8::1]"), "alice@[IPv6:2001:db8::1]"),
        (("alice", "b\u00fccher.example"), "alice@b\u00fccher.example"),  # U-label kept (RFC 6531)
        (("alice", "exa mple.org"), ""),            # would break the command: ours only
        (("alice", "example.org>"), ""),
        (("alice", ""), ""),
    ]

    def test_table(self):
        for (local, domain), expected in self.TABLE:
            with self.subTest(local=local, domain=domain):
                r = probe("mailbox", local, domain)
                self.assertEqual(r.rc, 0, r.describe())
                self.assertEqual(r.out.rstrip("\n"), f"<{expected}>")


# ---------------------------------------------------------------------------
# A hostile SMTP server (behaviour no real server shows): scripted here.

class HostileSmtp(unittest.TestCase):
    def test_endless_multiline_reply_is_cut(self):
        """A server answering EHLO with "250-" lines for ever: the client
        stops at its bound on a reply (1 MiB) with a protocol error,
        instead of growing without end (6 GiB in a minute before)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        sent = [0]

        def serve():
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"220 hostile ESMTP\r\n")
                conn.recv(1024)  # EHLO
                line = b"250-" + b"x" * 60 + b"\r\n"
                deadline = time.monotonic() + 60  # bounded: 60 s, 64 MiB at most
                try:
                    while time.monotonic() < deadline and sent[0] < (64 << 20):
                        conn.sendall(line * 256)
                        sent[0] += len(line) * 256
                except OSError:
                    pass  # the client hung up: what we wait for

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            paths = write_messages([tagged("h1", b"x\r\n")])
            r = deliver(f"smtp:[127.0.0.1]:{port}", paths, "--rcpt", "bob@example.org")
        finally:
            t.join(70)
            listener.close()
        self.assertNotEqual(r.rc, 0, r.describe())
        self.assertIn("reply longer than 1048576 bytes", r.err, r.describe())
        self.assertIn("while waiting for the EHLO reply", r.err, r.describe())
        # Cut near the bound, not after everything the server could send.
        self.assertLess(sent[0], 16 << 20, r.describe())


# ---------------------------------------------------------------------------
# SMTP: smtpd

class Smtp(unittest.TestCase):
    def check_stored(self, server, messages, sender="", rcpt=("bob@example.org",)):
        stored = server.messages()
        self.assertEqual(len(stored), len(messages))
        for (env, data), msg in zip(stored, messages):
            self.assertEqual(data, as_smtpd_stores(msg))
            self.assertEqual(env["from"], sender or "<>")  # smtpd's form of the null reverse-path
            self.assertEqual(env["rcpt"], list(rcpt))

    def run_edge_cases(self, pipelining, chunk=None):
        server = SmtpdServer(pipelining=pipelining)
        paths = write_messages(EDGE_CASES)
        opts = ["--rcpt", "bob@example.org", "--from", "alice@example.org", "--ehlo", "probe.example"]
        if chunk:
            opts += ["--chunk", chunk]
        r = deliver(server.method(), paths, *opts)
        self.assertEqual(r.rc, 0, r.describe())
        self.assertEqual(list(r.results.values()), ["DELIVERED"] * len(paths))
        self.check_stored(server, list(EDGE_CASES.values()), "alice@example.org")
        # One session, greeted with deliver-ehlo, ended with QUIT.
        self.assertEqual(server.lines("sessions.log"), ["session"])
        self.assertEqual(server.lines("ehlo.log"), ["probe.example"])
        self.assertEqual(server.lines("quit.log"), ["QUIT"])
        self.assertEqual(server.lines("rset.log"), [])
        # 8-bit messages declared BODY=8BITMIME (RFC 6152), the others not.
        for (env, _), name in zip(server.messages(), EDGE_CASES):
            with self.subTest(name=name):
                self.assertEqual(env["options"], ["BODY=8BITMIME"] if name == "eight-bit" else [])
        return server, r

    def test_without_pipelining(self):
        server, r = self.run_edge_cases(pipelining=False)
        self.assertNotIn("PIPELINING", r.extensions)
        # One command per write: MAIL alone.
        batches = server.lines("batches.log")
        self.assertEqual(len(batches), len(EDGE_CASES))
        self.assertEqual(set(batches), {"MAIL"})

    def test_with_pipelining(self):
        server, r = self.run_edge_cases(pipelining=True)
        self.assertIn("PIPELINING", r.extensions)
        # RFC 2920: MAIL, RCPT and DATA in one write.
        batches = server.lines("batches.log")
        self.assertEqual(len(batches), len(EDGE_CASES))
        self.assertEqual(set(batches), {"MAIL,RCPT,DATA"})

    def test_streamed_in_small_chunks(self):
        for chunk in (1, 3, 1000):
            with self.subTest(chunk=chunk):
                self.run_edge_cases(pipelining=True, chunk=chunk)

    def test_no_8bitmime_advertised(self):
        # The message goes as is (as the reference), without BODY=.
        server = SmtpdServer(eightbitmime=False)
        paths = write_messages({"eight-bit": EDGE_CASES["eight-bit"]})
        r = deliver(server.method(), paths, "--rcpt", "bob@example.org")
        self.assertEqual(r.rc, 0, r.describe())
        self.assertNotIn("8BITMIME", r.extensions)
        self.check_stored(server, [EDGE_CASES["eight-bit"]])
        self.assertEqual(server.messages()[0][0]["options"], [])

    def test_smtputf8_for_a_utf8_address(self):
        server = SmtpdServer(pipelining=True)
        paths = write_messages({"utf8": tagged("utf8", b"hi\r\n")})
        r = deliver(server.method(), paths, "--rcpt", "b\u00f6b@example.org", "--from", "alice@b\u00fccher.example")
        self.assertEqual(r.rc, 0, r.describe())
        env = server.messages()[0][0]
        self.assertEqual(env["options"], ["SMTPUTF8"])
        self.assertEqual(env["from"], "alice@b\u00fccher.example")
        self.assertEqual(env["rcpt"], ["b\u00f6b@example.org"])

    def test_refused_message_body_session_goes_on(self):
        for pipelining in (False, True):
            with self.subTest(pipelining=pipelining):
                server = SmtpdServer(pipelining=pipelining, refuse_body="FORBIDDEN")
                msgs = {"ok1": tagged("ok1", b"fine\r\n"), "bad": tagged("bad", b"FORBIDDEN words\r\n"),
                        "ok2": tagged("ok2", b"fine too\r\n")}
                paths = write_messages(msgs)
                r = deliver(server.method(), paths, "--rcpt", "bob@example.org")
                self.assertEqual(r.rc, 2, r.describe())
                res = list(r.results.values())
                self.assertEqual(res[0], "DELIVERED")
                self.assertEqual(res[1], "REFUSED: end of data: 554 5.7.1 Message refused: it says FORBIDDEN")
                self.assertEqual(res[2], "DELIVERED")
                self.check_stored(server, [msgs["ok1"], msgs["ok2"]])
                self.assertEqual(server.lines("sessions.log"), ["session"])

    def test_refused_recipient_rset_and_go_on(self):
        for pipelining in (False, True):
            with self.subTest(pipelining=pipelining):
                server = SmtpdServer(pipelining=pipelining, refuse_rcpt="nobody@example.org")
                paths = write_messages([tagged("r1", b"x\r\n"), tagged("r2", b"y\r\n")])
                r = deliver(server.method(), paths, "--rcpt", "nobody@example.org")
                self.assertEqual(r.rc, 2, r.describe())
                for res in r.results.values():
                    self.assertEqual(res, "REFUSED: RCPT TO:<nobody@example.org>: "
                                          "550 5.1.1 <nobody@example.org>: Recipient address rejected")
                self.assertEqual(server.messages(), [])
                # RSET after each refused transaction, in one session.
                self.assertEqual(server.lines("rset.log"), ["RSET", "RSET"])
                self.assertEqual(server.lines("sessions.log"), ["session"])
                self.assertEqual(server.lines("quit.log"), ["QUIT"])

    def test_refused_sender(self):
        for pipelining in (False, True):
            with self.subTest(pipelining=pipelining):
                server = SmtpdServer(pipelining=pipelining, refuse_from="spam@example.org")
                paths = write_messages([tagged("s1", b"x\r\n"), tagged("s2", b"y\r\n")])
                r = deliver(server.method(), paths[:1], "--rcpt", "bob@example.org", "--from", "spam@example.org")
                self.assertEqual(r.rc, 2, r.describe())
                self.assertEqual(list(r.results.values()),
                                 ["REFUSED: MAIL FROM:<spam@example.org>: "
                                  "553 5.7.1 <spam@example.org>: Sender address rejected"])
                self.assertEqual(server.lines("rset.log"), ["RSET"])
                self.assertEqual(server.messages(), [])
                # Without PIPELINING nothing follows the refused MAIL.
                if not pipelining:
                    self.assertEqual(server.lines("batches.log"), ["MAIL"])

    def test_one_refused_recipient_of_two_aborts_the_transaction(self):
        # Pipelined: DATA was answered 354 for the accepted recipient; the
        # client must not send the message to part of the recipients, so it
        # closes the connection (the transaction is aborted, RFC 5321 3.8)
        # and opens a new session for the next message.
        server = SmtpdServer(pipelining=True, refuse_rcpt="nobody@example.org")
        paths = write_messages([tagged("p1", b"x\r\n"), tagged("p2", b"y\r\n")])
        r = deliver(server.method(), paths, "--rcpt", "bob@example.org", "--rcpt", "nobody@example.org")
        self.assertEqual(r.rc, 2, r.describe())
        self.assertEqual(len(r.results), 2)
        for res in r.results.values():
            self.assertTrue(res.startswith("REFUSED: RCPT TO:<nobody@example.org>: 550"), res)
        time.sleep(0.3)  # let smtpd notice the closed connections
        self.assertEqual(server.messages(), [])
        self.assertEqual(server.lines("sessions.log"), ["session", "session"])

    def test_server_ends_the_session_between_messages(self):
        # A 421 (and a close) while idle: the next message opens a new session.
        server = SmtpdServer(pipelining=True, one_per_session=True)
        msgs = [tagged(f"s{i}", b"body %d\r\n" % i) for i in range(3)]
        r = deliver(server.method(), write_messages(msgs), "--rcpt", "bob@example.org", "--debug")
        self.assertEqual(r.rc, 0, r.describe())
        self.assertEqual(list(r.results.values()), ["DELIVERED"] * 3)
        self.check_stored(server, msgs)
        self.assertEqual(server.lines("sessions.log"), ["session"] * 3)

    def test_debug_trace_hides_the_data(self):
        server = SmtpdServer(pipelining=True)
        paths = write_messages({"secret": tagged("secret", b"TOP-SECRET-CONTENT\r\n")})
        r = deliver(server.method(), paths, "--rcpt", "bob@example.org", "--from", "a@example.org", "--debug")
        self.assertEqual(r.rc, 0, r.describe())
        trace = r.err.splitlines()
        self.assertIn("C: EHLO localhost.localdomain", trace)  # the deliver-ehlo default
        self.assertIn("C: MAIL FROM:<a@example.org>", trace)
        self.assertIn("C: RCPT TO:<bob@example.org>", trace)
        self.assertIn("C: [...]", trace)
        self.assertTrue(any(l.startswith("S: 354") for l in trace))
        self.assertIn("C: QUIT", trace)
        self.assertNotIn("TOP-SECRET-CONTENT", r.err)

    def test_default_recipient_is_the_effective_user(self):
        import pwd
        server = SmtpdServer()
        r = deliver(server.method(), write_messages([tagged("u", b"x\r\n")]))
        self.assertEqual(r.rc, 0, r.describe())
        self.assertEqual(server.messages()[0][0]["rcpt"], [pwd.getpwuid(os.geteuid()).pw_name])

    def test_ipv6(self):
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                s.bind(("::1", 0))
        except OSError:
            self.skipTest("no IPv6 loopback")
        server = SmtpdServer(host="::1", pipelining=True)
        self.assertTrue(server.method().startswith("smtp:[::1]:"))
        r = deliver(server.method(), write_messages([tagged("v6", b"x\r\n")]), "--rcpt", "bob@example.org")
        self.assertEqual(r.rc, 0, r.describe())
        self.assertEqual(len(server.messages()), 1)

    def test_connection_refused_names_the_address(self):
        port = h.free_ports(1)[0]
        r = deliver(f"smtp:[127.0.0.1]:{port}", write_messages([tagged("c", b"x\r\n")]))
        self.assertEqual(r.rc, 1, r.describe())
        self.assertIn(f"cannot connect to SMTP server 127.0.0.1:{port}: Connection refused", r.err)
        r = deliver(f"lmtp:[::1]:{port}", write_messages([tagged("c", b"x\r\n")]))
        self.assertEqual(r.rc, 1, r.describe())
        self.assertRegex(r.err, rf"cannot connect to LMTP server \[::1\]:{port}: ")

    def test_server_gone_mid_session(self):
        server = SmtpdServer(pipelining=True)
        paths = write_messages([tagged("g1", b"x\r\n")])
        server.stop()
        r = deliver(server.method(), paths)
        self.assertEqual(r.rc, 1, r.describe())
        self.assertIn(f"SMTP server 127.0.0.1:{server.port}", r.err)

    def test_not_an_smtp_server(self):
        # A peer that greets with garbage: a protocol error quoting it.
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        port = lsock.getsockname()[1]

        def serve():
            c, _ = lsock.accept()
            c.sendall(b"* OK IMAP4rev1 ready\r\n")
            time.sleep(1)
            c.close()
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        r = deliver(f"smtp:[127.0.0.1]:{port}", write_messages([tagged("x", b"x\r\n")]))
        t.join()
        lsock.close()
        self.assertEqual(r.rc, 1, r.describe())
        self.assertIn("malformed reply line `* OK IMAP4rev1 ready` while waiting for the greeting", r.err)


# ---------------------------------------------------------------------------
# LMTP: Dovecot

D = None


def dovecot():
    global D
    if D is None:
        h.require("dovecot", "doveconf", "dovecot-lmtp")
        D = h.DovecotDaemon(T, "lmtp", users={"alice": "alice-Pw1", "bob": "bob-Pw2"}, ssl=False, lmtp=True,
                            fmt="mdbox")
        D.start()
    return D


def inbox(user):
    """[body bytes] of user's INBOX, by UID, read through h.Imap."""
    with h.Imap(dovecot(), user=user) as m:
        got = m.messages("INBOX")
    return [got[uid][1] for uid in sorted(got)]


def strip_lmtp_headers(stored, first=b"X-Test-Id: "):
    """The message as sent: Dovecot prepends Return-Path, Delivered-To and
    Received; our messages all start with `first`."""
    i = stored.find(first)
    if i < 0:
        raise AssertionError(f"{first!r} not found in {stored[:300]!r}")
    return stored[:i], stored[i:]


class Lmtp(unittest.TestCase):
    def setUp(self):
        self.d = dovecot()
        self.before = {u: len(inbox(u)) for u in ("alice", "bob")}

    def new_messages(self, user):
        return inbox(user)[self.before[user]:]

    def test_edge_cases_arrive_byte_identical(self):
        for chunk in (None, 1, 5):
            with self.subTest(chunk=chunk):
                self.before = {u: len(inbox(u)) for u in ("alice", "bob")}
                paths = write_messages(EDGE_CASES)
                opts = ["--rcpt", "alice", "--from", "sender@example.org"]
                if chunk:
                    opts += ["--chunk", chunk]
                r = deliver(f"lmtp:[127.0.0.1]:{self.d.lmtp_port}", paths, *opts)
                self.assertEqual(r.rc, 0, r.describe())
                self.assertEqual(list(r.results.values()), ["DELIVERED"] * len(paths))
                self.assertTrue({"PIPELINING", "8BITMIME"} <= r.extensions, r.extensions)
                got = self.new_messages("alice")
                self.assertEqual(len(got), len(EDGE_CASES))
                for stored, (name, msg) in zip(got, EDGE_CASES.items()):
                    with self.subTest(name=name):
                        head, body = strip_lmtp_headers(stored)
                        self.assertEqual(body, normalized(msg))
                        self.assertTrue(head.startswith(b"Return-Path: <sender@example.org>\r\n"), head)
                        self.assertIn(b"Delivered-To: alice\r\n", head)

    def test_five_mib_message(self):
        msg = h.make_message("big", size=5 * 1024 * 1024, headers=["X-Test-Id: big"])
        # Dot lines and bare LFs inside the big body too.
        msg += b".dot line\n..two\r\n.\r\nend"
        paths = write_messages({"big": msg})
        r = deliver(f"lmtp:[127.0.0.1]:{self.d.lmtp_port}", paths, "--rcpt", "alice")
        self.assertEqual(r.rc, 0, r.describe())
        got = self.new_messages("alice")
        self.assertEqual(len(got), 1)
        # make_message puts X-Test-Id after its own headers: compare from From:.
        _, body = strip_lmtp_headers(got[0], first=b"From: Alice")
        self.assertEqual(h.sha256_hex(body), h.sha256_hex(normalized(msg)))
        h.log(f"5 MiB message over LMTP in {r.seconds:.2f}s")

    def test_200_messages_one_session(self):
        msgs = [tagged(f"bulk-{i:03d}", (b"line %d\r\n.dot %d\r\n" % (i, i)) * (i % 50 + 1)) for i in range(200)]
        paths = write_messages(msgs, prefix="bulk")
        connects = len(re.findall(r"lmtp\(\d+\): Info: Connect from ", self.d.read_log()))
        r = deliver(f"lmtp:[127.0.0.1]:{self.d.lmtp_port}", paths, "--rcpt", "alice")
        self.assertEqual(r.rc, 0, r.describe())
        self.assertEqual(list(r.results.values()), ["DELIVERED"] * 200)
        got = self.new_messages("alice")
        self.assertEqual(len(got), 200)
        for stored, msg in zip(got, msgs):
            self.assertEqual(strip_lmtp_headers(stored)[1], msg)
        stats = [l for l in r.out.splitlines() if l.startswith("STATS")][0].split()
        self.assertEqual(stats[1], "200")
        h.log(f"200 messages over one LMTP session: {stats[2]}s, {stats[3]} messages/s")
        # One session: Dovecot logs "lmtp(PID): Info: Connect from 127.0.0.1"
        # per LMTP connection.
        time.sleep(0.2)
        after = len(re.findall(r"lmtp\(\d+\): Info: Connect from ", self.d.read_log()))
        self.assertEqual(after - connects, 1)

    def test_one_recipient_goes_in_one_round_trip_with_bdat(self):
        # Dovecot's LMTP offers CHUNKING: MAIL, RCPT and BDAT LAST with the
        # data go in one write (RFC 3030, RFC 2920), no DATA and no 354;
        # the bytes stored are the same as through DATA (no dot-stuffing).
        msgs = {n: EDGE_CASES[n] for n in list(EDGE_CASES)[:6]}
        r = deliver(f"lmtp:[127.0.0.1]:{self.d.lmtp_port}", write_messages(msgs, prefix="bdat"),
                    "--rcpt", "alice", "--debug")
        self.assertEqual(r.rc, 0, r.describe())
        self.assertIn("CHUNKING", r.extensions)
        trace = r.err.splitlines()
        self.assertEqual(len([l for l in trace if re.match(r"C: BDAT \d+ LAST$", l)]), len(msgs), trace)
        self.assertNotIn("C: DATA", trace)
        self.assertFalse([l for l in trace if l.startswith("S: 354")], trace)
        got = self.new_messages("alice")
        self.assertEqual(len(got), len(msgs))
        for stored, (name, msg) in zip(got, msgs.items()):
            with self.subTest(name=name):
                self.assertEqual(strip_lmtp_headers(stored)[1], normalized(msg))

    def test_two_recipients_one_reply_each(self):
        # RFC 2033 4.2: one reply per accepted recipient after the data.
        msg = tagged("both", b"for alice and bob\r\n")
        r = deliver(f"lmtp:[127.0.0.1]:{self.d.lmtp_port}", write_messages({"both": msg}, prefix="both"),
                    "--rcpt", "alice", "--rcpt", "bob", "--debug")
        self.assertEqual(r.rc, 0, r.describe())
        for user in ("alice", "bob"):
            got = self.new_messages(user)
            self.assertEqual(len(got), 1, user)
            self.assertEqual(strip_lmtp_headers(got[0])[1], msg)
        # Two 250 replies followed the data.
        trace = r.err.splitlines()
        after_data = trace[trace.index("C: [...]") + 1:]
        self.assertEqual(len([l for l in after_data[:2] if l.startswith("S: 250")]), 2, trace)

    def test_unknown_recipient(self):
        paths = write_messages({"u1": tagged("u1", b"x\r\n"), "u2": tagged("u2", b"y\r\n")}, prefix="unknown")
        r = deliver(f"lmtp:[127.0.0.1]:{self.d.lmtp_port}", paths, "--rcpt", "nosuchuser", "--debug")
        self.assertEqual(r.rc, 2, r.describe())
        self.assertEqual(len(r.results), 2)
        for res in r.results.values():
            self.assertRegex(res, r"^REFUSED: RCPT TO:<nosuchuser>: 550 5\.1\.1 ")
        # One session for both, RSET after each refused transaction.
        trace = r.err.splitlines()
        self.assertEqual(trace.count("C: LHLO localhost.localdomain"), 1)
        self.assertEqual(trace.count("C: RSET"), 2)
        self.assertEqual(trace.count("C: QUIT"), 1)
        self.assertEqual(self.new_messages("alice"), [])

    def test_unknown_recipient_among_two_delivers_to_none(self):
        paths = write_messages({"a1": tagged("a1", b"x\r\n")}, prefix="partial")
        r = deliver(f"lmtp:[127.0.0.1]:{self.d.lmtp_port}", paths, "--rcpt", "alice", "--rcpt", "nosuchuser")
        self.assertEqual(r.rc, 2, r.describe())
        self.assertRegex(list(r.results.values())[0], r"^REFUSED: RCPT TO:<nosuchuser>: 550 ")
        time.sleep(0.3)
        self.assertEqual(self.new_messages("alice"), [])

    def test_then_good_messages_still_go_through(self):
        # After refusals the client is usable: a mixed run through one probe.
        paths = write_messages({"ok": tagged("ok", b"fine\r\n")}, prefix="after")
        r = deliver(f"lmtp:[127.0.0.1]:{self.d.lmtp_port}", paths, "--rcpt", "bob")
        self.assertEqual(r.rc, 0, r.describe())
        self.assertEqual(len(self.new_messages("bob")), 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
