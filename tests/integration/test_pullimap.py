#!/usr/bin/env python3
"""pullimap ($PULLIMAP) against real servers: a Dovecot store reached as a
tunnel is the source, Dovecot's LMTP service delivers into a second store
(read back with imaplib), Python's smtpd is a real SMTP server.  Checks the
destination stores, the source's flags and the statefile: delivery byte
for byte (large and 8-bit messages included), the envelope sender, a
refused message, SIGKILL then rerun, SIGTERM, --no-delivery, a UIDVALIDITY
change, the statefile lock, configuration errors."""

import fcntl
import os
import re
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import pulllib as p  # noqa: E402
from pulllib import message  # noqa: E402

p.require_pullimap()


def big_body(size, eight_bit=False):
    line = (b"caf\xc3\xa9 \xe2\x80\x94 na\xc3\xafve \xff\xfe " if eight_bit else b"") + b"0123456789 " * 6 + b"\r\n"
    out = []
    n = 0
    i = 0
    while n < size:
        l = (b".dot line %d\r\n" % i) if i % 1000 == 0 else line
        out.append(l)
        n += len(l)
        i += 1
    return b"".join(out)


class Delivery(unittest.TestCase):
    def test_lmtp_byte_for_byte_then_nothing_to_do(self):
        e = p.Env("iit-pull-lmtp-")
        msgs = []
        for i in range(1, 121):
            body = b"line %d\r\n" % i
            if i % 3 == 0:
                body += b".leading dot\r\n..two dots\r\n.\r\nafter a lone dot\r\n"
            if i % 4 == 0:
                body += "8-bit: caf\u00e9 \u65e5\u672c \u2014\r\n".encode() + b"latin-1 \xe9\xff\r\n"
            msgs.append(message(i, body))
        # Two large messages, one of them 8-bit.
        msgs.append(message(121, big_body(3 << 20)))
        msgs.append(message(122, big_body(3 << 20, eight_bit=True)))
        # The envelope sender: the Sender header wins over From; a local
        # part that is not a Dot-string is quoted; no address at all is <>.
        msgs.append(message(123, sender=b"List <list-bounces@lists.example.net>"))
        msgs.append(message(124, frm=b'"john doe"@example.org'))
        msgs.append(message(125, frm=b"undisclosed-recipients:;"))
        uids = e.seed(msgs)
        self.assertEqual(uids, list(range(1, 126)))

        r = e.run(e.config())
        self.assertEqual(r.rc, 0, r.describe())
        got = e.inbox()
        self.assertEqual(len(got), len(msgs))
        senders = {}
        for stored, sent in zip(got, msgs):
            head, body = p.split_delivered(stored)
            self.assertEqual(body, sent, f"message {p.test_id(sent)} differs")
            senders[p.test_id(sent)] = re.match(rb"Return-Path: <(.*)>\r\n", head).group(1)
        self.assertEqual(senders[1], b"alice@example.org")
        self.assertEqual(senders[123], b"list-bounces@lists.example.net")
        self.assertEqual(senders[124], b'"john doe"@example.org')
        self.assertEqual(senders[125], b"")
        # One "UID n from <sender> (INTERNALDATE)" line per message.
        logged = re.findall(r"^acct\(INBOX\): UID (\d+) from <([^>]*)> \((\d\d?-\w{3}-\d{4} [\d:]{8} [+-]\d{4})\)$",
                            r.err, re.M)
        self.assertEqual([int(u) for u, _, _ in logged], uids)
        self.assertEqual(logged[122][1], "list-bounces@lists.example.net")
        # The reference's closing line, last: the IMAP bytes both ways (with
        # the wire bytes and their ratio under COMPRESS).
        last = r.err.splitlines()[-1]
        self.assertRegex(last, r"^acct: IMAP traffic \(bytes\): recv [\d.]+[KMG]? "
                               r"(\(compr\. [\d.]+[KMG]?, factor \d+\.\d\d\) )?sent [\d.]+[KMG]?"
                               r"( \(compr\. [\d.]+[KMG]?, factor \d+\.\d\d\))?$")
        self.assertRegex(last, r"recv (6\.\d\dM|7\.\d\dM)", "about 6-7 MiB received (two 3 MiB messages)")
        # Step 3: every delivered message is \Seen; steps 4-5: 8 bytes.
        src = e.source()
        self.assertTrue(all("\\Seen" in flags for flags, _ in src.values()), src.keys())
        status = e.src.status("INBOX")
        self.assertEqual(e.state(), [status["UIDVALIDITY"], 126])

        # Nothing new: nothing delivered, same state; --quiet logs nothing.
        r = e.run(e.config(), "--quiet")
        self.assertEqual(r.rc, 0, r.describe())
        self.assertEqual(r.err, "")
        self.assertEqual(len(e.inbox()), len(msgs))
        self.assertEqual(e.state(), [status["UIDVALIDITY"], 126])
        # A new one: only it.
        e.seed([message(126)])
        r = e.run(e.config(), "-q")
        self.assertEqual(r.rc, 0, r.describe())
        self.assertEqual(e.delivered_ids()[len(msgs):], [126])
        self.assertEqual(e.state(), [status["UIDVALIDITY"], 127])

    def test_smtp_server(self):
        if not h.have_smtpd():
            self.skipTest("no smtpd module (Python >= 3.12)")
        e = p.Env("iit-pull-smtp-")
        server = p.Smtpd(e.t)
        msgs = [message(i, b"body %d\r\n.dot\r\n" % i + (b"\xe9t\xe9\r\n" if i == 2 else b"")) for i in range(1, 6)]
        e.seed(msgs)
        r = e.run(e.config(deliver_method=server.method(), deliver_rcpt="bob@example.org",
                           deliver_ehlo="pull.example.net"))
        self.assertEqual(r.rc, 0, r.describe())
        got = server.messages()
        self.assertEqual(len(got), 5)
        for (env, data), sent in zip(got, msgs):
            self.assertEqual(env["from"], "alice@example.org")
            self.assertEqual(env["rcpt"], ["bob@example.org"])
            # smtpd stores LF line ends without the last one.
            self.assertEqual(data, sent.replace(b"\r\n", b"\n")[:-1])
        self.assertIn("8BITMIME", " ".join(got[1][0]["options"]).upper())
        self.assertEqual(server.lines("ehlo.log"), ["pull.example.net"])
        # PIPELINING (RFC 2920): MAIL, RCPT and DATA in one batch.
        self.assertEqual(set(server.lines("batches.log")), {"MAIL,RCPT,DATA"})

    def test_default_recipient_is_the_effective_user(self):
        if not h.have_smtpd():
            self.skipTest("no smtpd module (Python >= 3.12)")
        import pwd
        e = p.Env("iit-pull-rcpt-")
        server = p.Smtpd(e.t)
        e.seed([message(1)])
        r = e.run(e.config(deliver_method=server.method(), deliver_rcpt=None))
        self.assertEqual(r.rc, 0, r.describe())
        self.assertEqual(server.messages()[0][0]["rcpt"], [pwd.getpwuid(os.geteuid()).pw_name])

    def test_no_delivery_records_the_state_only(self):
        e = p.Env("iit-pull-nodeliv-")
        e.seed([message(i) for i in range(1, 4)])
        r = e.run(e.config(), "--no-delivery")
        self.assertEqual(r.rc, 0, r.describe())
        self.assertEqual(e.inbox(), [])
        self.assertEqual(e.state()[1], 4)
        self.assertEqual(len(re.findall(r"UID \d from <alice@example.org>", r.err)), 3)
        # As the reference: they count as retrieved, hence \Seen.
        self.assertTrue(all("\\Seen" in flags for flags, _ in e.source().values()))
        e.seed([message(4)])
        r = e.run(e.config())
        self.assertEqual(r.rc, 0, r.describe())
        self.assertEqual(e.delivered_ids(), [4])


class Refusals(unittest.TestCase):
    def test_unknown_lmtp_recipient(self):
        e = p.Env("iit-pull-refused-")
        e.seed([message(i) for i in range(1, 4)])
        r = e.run(e.config(deliver_rcpt="nosuchuser"))
        self.assertEqual(r.rc, 1, r.describe())
        errors = r.error_lines()
        self.assertEqual(len(errors), 1, r.err)
        self.assertRegex(errors[0], r"^pullimap: ERROR: acct\(INBOX\): UID 1 not delivered: LMTP server "
                                    r"127\.0\.0\.1:\d+: RCPT TO:<nosuchuser> refused: 550 5\.1\.1 ")
        self.assertTrue(all("\\Seen" not in flags for flags, _ in e.source().values()))
        # Not advanced: UIDNEXT 1 and no delivered UID recorded.
        self.assertEqual(e.state(), [e.src.status("INBOX")["UIDVALIDITY"], 1])

    def test_refused_mid_fetch_then_resumed(self):
        if not h.have_smtpd():
            self.skipTest("no smtpd module (Python >= 3.12)")
        e = p.Env("iit-pull-refused2-")
        refusing = p.Smtpd(e.t, refuse_body="FORBIDDEN")
        msgs = [message(1), message(2), message(3, b"FORBIDDEN words\r\n"), message(4)]
        e.seed(msgs)
        cfg = e.config(deliver_method=refusing.method())
        r = e.run(cfg)
        self.assertEqual(r.rc, 1, r.describe())
        self.assertRegex(r.error_lines()[0], r"UID 3 not delivered: SMTP server 127\.0\.0\.1:\d+: end of data refused: "
                                             r"554 5\.7\.1 Message refused: it says FORBIDDEN")
        self.assertEqual([p.test_id(d) for _, d in refusing.messages()], [1, 2])
        uidvalidity = e.src.status("INBOX")["UIDVALIDITY"]
        # 1 and 2 are recorded as delivered by an unfinished fetch; 3 is not.
        self.assertEqual(e.state(), [uidvalidity, 1, 1, 2])
        self.assertFalse("\\Seen" in e.source()[3][0])

        # The server takes it now: 3 and 4 go, 1 and 2 are not sent again.
        refusing.stop()
        fine = p.Smtpd(e.t)
        r = e.run(e.config(deliver_method=fine.method()))
        self.assertEqual(r.rc, 0, r.describe())
        self.assertEqual([p.test_id(d) for _, d in fine.messages()], [3, 4])
        self.assertEqual(e.state(), [uidvalidity, 5])
        self.assertTrue(all("\\Seen" in flags for flags, _ in e.source().values()))

    def test_unreachable_deliver_method(self):
        e = p.Env("iit-pull-unreach-")
        e.seed([message(1)])
        port = h.free_ports(1)[0]
        r = e.run(e.config(deliver_method=f"lmtp:[127.0.0.1]:{port}"))
        self.assertEqual(r.rc, 1, r.describe())
        self.assertEqual(len(r.error_lines()), 1, r.err)
        self.assertIn(f"acct: cannot connect to LMTP server 127.0.0.1:{port}: Connection refused", r.err)
        self.assertEqual(e.state()[1:], [1])
        self.assertNotIn("\\Seen", e.source()[1][0])


class Interruptions(unittest.TestCase):
    N = 400

    def env(self, prefix):
        e = p.Env(prefix)
        e.seed([message(i, b"body %d\r\n" % i * 40) for i in range(1, self.N + 1)])
        return e

    def test_sigkill_mid_fetch_then_rerun(self):
        e = self.env("iit-pull-kill-")
        cfg = e.config()
        proc = e.spawn(cfg, "--quiet")
        # Killed once about 100 UIDs are recorded in the statefile.
        h.wait_until("100 deliveries", lambda: len(e.state() or []) >= 2 + 100 or proc.poll() is not None,
                     30, interval=0.02)
        proc.kill()
        proc.wait()
        self.assertEqual(proc.returncode, -signal.SIGKILL, p.output(proc))
        state = e.state()
        self.assertEqual(state[1], 1)
        recorded = state[2:]
        self.assertGreaterEqual(len(recorded), 100)
        self.assertLess(len(recorded), self.N, "the run finished before the kill: make it longer")
        ids = e.delivered_ids()
        # Every recorded UID was delivered; at most one more (in flight).
        self.assertEqual(ids[:len(recorded)], recorded)
        self.assertLessEqual(len(ids) - len(recorded), 1)

        r = e.run(cfg, "--quiet")
        self.assertEqual(r.rc, 0, r.describe())
        ids = e.delivered_ids()
        counts = {i: ids.count(i) for i in set(ids)}
        self.assertEqual(set(counts), set(range(1, self.N + 1)))
        twice = [i for i, c in counts.items() if c > 1]
        self.assertLessEqual(len(twice), 1, twice)
        self.assertEqual(e.state(), [state[0], self.N + 1])
        self.assertTrue(all("\\Seen" in flags for flags, _ in e.source().values()))

    def test_sigterm_mid_fetch_stops_cleanly(self):
        e = self.env("iit-pull-term-")
        cfg = e.config()
        proc = e.spawn(cfg, "--quiet")
        h.wait_until("50 deliveries", lambda: len(e.state() or []) >= 2 + 50 or proc.poll() is not None,
                     30, interval=0.02)
        start = time.monotonic()
        rc = p.stop(proc, signal.SIGTERM)
        self.assertLess(time.monotonic() - start, 5)
        out = p.output(proc)
        self.assertEqual(rc, 0, out)
        self.assertNotIn("ERROR", out)
        recorded = e.state()[2:]
        self.assertLess(len(recorded), self.N)
        # A clean stop delivers nothing it did not record.
        self.assertEqual(e.delivered_ids(), recorded)
        r = e.run(cfg, "--quiet")
        self.assertEqual(r.rc, 0, r.describe())
        self.assertEqual(sorted(e.delivered_ids()), list(range(1, self.N + 1)))


class StateAndConfig(unittest.TestCase):
    def test_uidvalidity_change_is_an_error(self):
        e = p.Env("iit-pull-uidv-")
        e.seed([message(1)])
        uidvalidity = e.src.status("INBOX")["UIDVALIDITY"]
        e.write_state([uidvalidity + 1, 1])
        r = e.run(e.config())
        self.assertEqual(r.rc, 1, r.describe())
        self.assertEqual(len(r.error_lines()), 1, r.err)
        self.assertIn(f"UIDVALIDITY of mailbox INBOX changed (statefile: {uidvalidity + 1}, server: {uidvalidity})",
                      r.err)
        self.assertEqual(e.state(), [uidvalidity + 1, 1])
        self.assertEqual(e.inbox(), [])

    def test_second_process_fails_at_once(self):
        e = p.Env("iit-pull-lock-")
        e.seed([message(1)])
        cfg = e.config()
        r = e.run(cfg, "-q")
        self.assertEqual(r.rc, 0, r.describe())
        # A running pullimap --idle holds the lock...
        proc = e.spawn(cfg, "--idle", "--debug")
        h.wait_until("IDLE", lambda: re.search(r"C: \S+ IDLE", p.output(proc)) or proc.poll() is not None,
                     15, interval=0.02)
        self.assertIsNone(proc.poll(), p.output(proc))
        r = e.run(cfg)
        self.assertEqual(r.rc, 1, r.describe())
        self.assertLess(r.seconds, 3)
        self.assertRegex(r.err, r"Can't lock .*statefile: .* \(is another pullimap running on it\?\)")
        self.assertEqual(p.stop(proc), 0, p.output(proc))
        # ...so does another program's POSIX lock (the reference's kind).
        with open(e.statefile, "r+b") as f:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            r = e.run(cfg)
            self.assertEqual(r.rc, 1, r.describe())
            self.assertIn("Can't lock", r.err)

    def test_idle_mode_does_not_create_the_statefile(self):
        e = p.Env("iit-pull-nocreate-")
        r = e.run(e.config(), "--idle")
        self.assertEqual(r.rc, 1, r.describe())
        self.assertIn(f"Can't open {e.statefile}: No such file or directory", r.err)
        self.assertIsNone(e.state())

    def test_statefile_default_location(self):
        e = p.Env("iit-pull-xdg-")
        e.seed([message(1)])
        r = e.run(e.config(statefile=None))
        self.assertEqual(r.rc, 0, r.describe())
        self.assertEqual(e.state(os.path.join(e.data_home, "pullimap", "acct"))[1], 2)
        self.assertEqual(os.stat(os.path.join(e.data_home, "pullimap")).st_mode & 0o777, 0o700)
        # A relative one is under the same directory; a relative --config
        # under $XDG_CONFIG_HOME/pullimap.
        os.makedirs(os.path.join(e.config_home, "pullimap"), exist_ok=True)
        cfg = e.config(statefile="other", name=os.path.join(e.config_home, "pullimap", "my.conf"))
        self.assertTrue(os.path.exists(cfg))
        argv = [p.PULLIMAP, "--config", "my.conf", "acct"]
        import subprocess
        r = subprocess.run(argv, capture_output=True, env=e.env(), stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(e.state(os.path.join(e.data_home, "pullimap", "other"))[1], 2)

    def test_configuration_errors(self):
        e = p.Env("iit-pull-config-", start=False)
        cases = [
            ({"deliver_method": "smtp:127.0.0.1:25"}, r"\[acct\] deliver-method: Invalid deliver-method"),
            ({"deliver_method": "imap:[127.0.0.1]:25"}, r"\[acct\] deliver-method: Invalid deliver-method `imap:"),
            ({"deliver_method": "lmtp:[localhost]:24"}, r"\[acct\] deliver-method: .*not an IP address"),
            ({"purge_after": "7d"}, r"\[acct\] purge-after: must be a number of days .*\(value: 7d\)"),
            ({"purge_after": "-1"}, r"\[acct\] purge-after: must be a number of days"),
            ({"deliver_rcpt": "<bob@example.org>"}, r"\[acct\] deliver-rcpt: must not hold '<' or '>'"),
            ({"database": "x.db"}, r"\[acct\] database: Invalid option"),
            ({"logfile": "/tmp/x"}, r"\[acct\] logfile: Invalid option"),
            ({"type": "imap4"}, r"\[acct\] type: "),
            ({"compress": "maybe"}, r"\[acct\] compress: invalid boolean"),
        ]
        for opts, pattern in cases:
            with self.subTest(opts=opts):
                r = e.run(e.config(**opts))
                self.assertEqual(r.rc, 1, r.describe())
                self.assertEqual(len(r.err.splitlines()), 1, r.err)
                self.assertRegex(r.err, r"^pullimap: ERROR: .*config-\d+\.ini: " + pattern)
                self.assertIsNone(e.state())
        # The default section's options count too.
        r = e.run(e.config(default={"list-mailbox": "*"}))
        self.assertEqual(r.rc, 1, r.describe())
        self.assertIn("list-mailbox: Invalid option", r.err)
        r = e.run(e.config(), section="nosuch")
        self.assertEqual(r.rc, 1, r.describe())
        self.assertIn("No such section nosuch", r.err)
        r = e.run(os.path.join(e.t.path, "missing.ini"))
        self.assertEqual(r.rc, 1, r.describe())
        self.assertIn("missing.ini", r.err)
        # Usage errors.
        for argv in ([], ["a", "b"], ["_"], ["--bogus", "acct"], ["--idle=x", "acct"]):
            with self.subTest(argv=argv):
                import subprocess
                r = subprocess.run([p.PULLIMAP] + argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn("Usage: pullimap [OPTIONS] SECTION", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
