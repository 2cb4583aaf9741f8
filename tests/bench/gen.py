"""Seeded generation of realistic RFC 5322 messages, and seeding of a
Dovecot store with them through a pipelined APPEND (LITERAL+).

Sizes: a text body of lognormal size (median about 1.8 KiB), and for 3%
of the messages a multipart/mixed with a base64 attachment of 4-66 KiB
(up to 100 KiB encoded): about 4 KiB on average.  Random flags and
keywords, random INTERNALDATE in the last three years, and about 15% of
the appended messages expunged again so that UIDs are not contiguous.
"""

import base64
import random
import time

import rawimap as ri

_WORDS = (b"the of and to in is that for it as was with be by on not he this are or his from at which "
          b"but have an they you were her she there been one all we their has would when if so no will "
          b"more about can what up out them some could into other then only its time than these two may "
          b"first any new like our over very after most also made many should where must through back "
          b"years much before good well such because long little between both own each life being under "
          b"server mailbox message synchronize protocol release meeting schedule report budget invoice "
          b"deadline review draft patch build test merge branch commit ticket customer order shipment "
          b"quarterly minutes agenda project milestone").split()

_NAMES = [("Alice Martin", "alice@example.org"), ("Bob Dupont", "bob@example.net"),
          ("Carol Nguyen", "carol@lists.example.com"), ("Dave O'Brien", "dave@example.co.uk"),
          ("Eve Muller", "eve@example.de"), ("Frank Rossi", "frank@example.it"),
          ("Grace Kim", "grace@example.kr"), ("Heidi Larsen", "heidi@example.dk")]

_MONTHS = [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"]
_DAYS = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"]
_KEYWORDS = [b"$Forwarded", b"$Junk", b"$NotJunk", b"work", b"personal", b"$label1"]

NOW = 1790000000  # fixed "now" (Sept 2026) so that the data depend on the seed only


class Generator:
    def __init__(self, seed):
        self.seed = seed
        self.rng = random.Random(seed)
        rng = random.Random(seed ^ 0x5EED)
        lines, size = [], 0
        while size < 1 << 20:  # 1 MiB of text lines to slice bodies from
            words, n = [], 0
            target = rng.randint(50, 76)
            while n < target:
                w = rng.choice(_WORDS)
                words.append(w)
                n += len(w) + 1
            line = b" ".join(words)
            lines.append(line)
            size += len(line) + 2
        self.corpus = b"\r\n".join(lines) + b"\r\n"
        self.starts = [0]
        for ln in lines[:-1]:
            self.starts.append(self.starts[-1] + len(ln) + 2)

    def text(self, n):
        start = self.rng.choice(self.starts[: len(self.starts) // 2])
        chunk = self.corpus[start:start + n]
        return chunk[: chunk.rfind(b"\r\n") + 2] or b"Hello.\r\n"

    @staticmethod
    def rfc2822_date(ts):
        t = time.gmtime(ts)
        return b"%s, %d %s %d %02d:%02d:%02d +0000" % (_DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1],
                                                       t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)

    @staticmethod
    def internaldate(ts):
        t = time.gmtime(ts)
        return b"%02d-%s-%d %02d:%02d:%02d +0000" % (t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year,
                                                     t.tm_hour, t.tm_min, t.tm_sec)

    def flags(self):
        r = self.rng
        f = []
        if r.random() < 0.7:
            f.append(b"\\Seen")
        if r.random() < 0.1:
            f.append(b"\\Answered")
        if r.random() < 0.05:
            f.append(b"\\Flagged")
        if r.random() < 0.01:
            f.append(b"\\Draft")
        for k in _KEYWORDS:
            if r.random() < 0.04:
                f.append(k)
        return f

    def message(self, ident):
        """(message bytes, flags, INTERNALDATE) for a Message-ID based on ident."""
        r = self.rng
        ts = NOW - r.randint(0, 3 * 365 * 86400)
        frm, to = r.sample(_NAMES, 2)
        subject = b" ".join(r.choice(_WORDS) for _ in range(r.randint(2, 9)))
        head = [b"Return-Path: <" + frm[1].encode() + b">",
                b"Received: from mx.example.org (mx.example.org [192.0.2.%d]) by mail.example.net "
                b"with ESMTPS id %08X; " % (r.randint(1, 254), r.getrandbits(32)) + self.rfc2822_date(ts + 2),
                b"From: " + frm[0].encode() + b" <" + frm[1].encode() + b">",
                b"To: " + to[0].encode() + b" <" + to[1].encode() + b">",
                b"Subject: " + (b"Re: " if r.random() < 0.3 else b"") + subject.capitalize(),
                b"Date: " + self.rfc2822_date(ts),
                b"Message-ID: <" + ident.encode() + b"@bench.example>",
                b"MIME-Version: 1.0"]
        size = int(min(max(r.lognormvariate(7.5, 0.7), 200), 24000))
        body = self.text(size)
        if r.random() < 0.03:
            att = r.randbytes(r.randint(4 << 10, 66 << 10))
            b64 = base64.encodebytes(att).replace(b"\n", b"\r\n")
            boundary = b"=_bench_%08x" % r.getrandbits(32)
            head.append(b'Content-Type: multipart/mixed; boundary="' + boundary + b'"')
            msg = (b"\r\n".join(head) + b"\r\n\r\nThis is a multi-part message in MIME format.\r\n"
                   + b"--" + boundary + b"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body
                   + b"--" + boundary + b"\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\n"
                   + b"Content-Transfer-Encoding: base64\r\n"
                   + b"Content-Disposition: attachment; filename=\"data.bin\"\r\n\r\n" + b64
                   + b"--" + boundary + b"--\r\n")
        else:
            head.append(b"Content-Type: text/plain; charset=utf-8")
            msg = b"\r\n".join(head) + b"\r\n\r\n" + body
        return msg, self.flags(), self.internaldate(ts)


def seed(command, plan, gen, prefix, log_path=None, prune=0.15):
    """Creates and fills the mailboxes of `plan` ({name: final count}) through
    the tunnel `command`; returns {name: total bytes kept}."""
    t = ri.Tunnel(command, log_path)
    sizes = {}
    try:
        tags = [t.command(b"CREATE " + ri.quote(name)) for name in plan if name.upper() != "INBOX"]
        t.wait(tags)
        for name, count in plan.items():
            total = int(round(count / (1 - prune))) if count else 0
            chunks, tags, msg_sizes = [], [], []
            for i in range(total):
                msg, flags, date = gen.message(f"{prefix}.{name}.{i}".replace("/", "_"))
                tag, data = t.append_cmd(name, msg, flags, date)
                chunks.append(data)
                tags.append(tag)
                msg_sizes.append(len(msg))
            t.pipeline(chunks, tags)
            victims = sorted(gen.rng.sample(range(1, total + 1), total - count))
            gone = set(victims)
            sizes[name] = sum(s for u, s in enumerate(msg_sizes, 1) if u not in gone)
            if victims:
                t.run(b"SELECT " + ri.quote(name))
                uidset = b",".join(b"%d" % u for u in victims)
                t.run(b"UID STORE " + uidset + b" +FLAGS.SILENT (\\Deleted)")
                t.run(b"UID EXPUNGE " + uidset)
                t.run(b"UNSELECT")
    finally:
        t.logout()
    return sizes
