#!/usr/bin/env python3
"""A real SMTP server for the tests: Python's smtpd (3.11), run as a child
process by harness.SmtpdServer with its options as one JSON argument.
It records each message (msg-NNNNN.eml, and .json for the envelope), the
command batches (batches.log: "MAIL,RCPT,DATA" when pipelined), the
sessions, RSETs and QUITs, and can refuse a sender, a recipient or a body,
advertise PIPELINING and 8BITMIME or not, and end each session after one
message."""
import asyncore, json, os, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
import smtpd

opts = json.loads(sys.argv[1])
spool = opts["spool"]
counter = [0]

def log(name, line):
    with open(os.path.join(spool, name), "a") as f:
        f.write(line + "\n")

class Channel(smtpd.SMTPChannel):
    def recv(self, n):
        data = super().recv(n)
        # The commands that arrived together, when a chunk starts a
        # transaction: "MAIL,RCPT,DATA" when pipelined.
        if data.startswith(b"MAIL FROM:"):
            verbs = [l.split(b" ")[0].split(b":")[0].decode() for l in data.split(b"\r\n") if l]
            log("batches.log", ",".join(verbs))
        return data

    def smtp_EHLO(self, arg):
        if not arg:
            self.push("501 Syntax: EHLO hostname")
            return
        log("ehlo.log", arg)
        self._set_rset_state()
        self.seen_greeting = arg
        self.extended_smtp = True
        self.push("250-%s" % self.fqdn)
        if opts.get("pipelining"):
            self.push("250-PIPELINING")
        if opts.get("eightbitmime", True):
            self.push("250-8BITMIME")
        self.push("250-SMTPUTF8")
        self.push("250 HELP")

    def smtp_MAIL(self, arg):
        if opts.get("refuse_from") and arg and ("<%s>" % opts["refuse_from"]) in arg:
            self.push("553 5.7.1 <%s>: Sender address rejected" % opts["refuse_from"])
            return
        super().smtp_MAIL(arg)

    def smtp_RCPT(self, arg):
        if self.mailfrom is not None and arg and ("<%s>" % opts.get("refuse_rcpt")) in arg:
            self.push("550 5.1.1 <%s>: Recipient address rejected" % opts["refuse_rcpt"])
            return
        super().smtp_RCPT(arg)

    def smtp_RSET(self, arg):
        log("rset.log", "RSET")
        super().smtp_RSET(arg)

    def smtp_QUIT(self, arg):
        log("quit.log", "QUIT")
        super().smtp_QUIT(arg)

class Server(smtpd.SMTPServer):
    channel_class = Channel

    def handle_accepted(self, conn, addr):
        log("sessions.log", "session")
        super().handle_accepted(conn, addr)

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        if opts.get("refuse_body") and opts["refuse_body"].encode() in data:
            return "554 5.7.1 Message refused: it says %s" % opts["refuse_body"]
        counter[0] += 1
        base = os.path.join(spool, "msg-%05d" % counter[0])
        with open(base + ".eml", "wb") as f:
            f.write(data)
        with open(base + ".json", "w") as f:
            json.dump({"from": mailfrom, "rcpt": rcpttos, "options": kwargs.get("mail_options", [])}, f)
        if opts.get("one_per_session"):
            # 250, then the end of the session in the same write (RFC 5321
            # 3.8: 421 when the server must close).
            return "250 OK\r\n421 4.3.2 one message per session"
        return None

server = Server((opts["host"], opts["port"]), None, decode_data=False, enable_SMTPUTF8=True,
                data_size_limit=64 * 1024 * 1024)
open(os.path.join(spool, "ready"), "w").close()
asyncore.loop(timeout=0.2)
