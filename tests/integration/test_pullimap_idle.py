#!/usr/bin/env python3
"""pullimap --idle (RFC 2177 IDLE) against real Dovecot servers: new
messages are delivered within seconds, IDLE is restarted after SECONDS,
purge-after 0 removes each message once delivered, SIGTERM and SIGINT end
it cleanly; over a tunnel and over TCP (SO_KEEPALIVE path)."""

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


class Idle(unittest.TestCase):
    def test_new_messages_are_delivered_within_seconds(self):
        e = p.Env("iit-pull-idle-")
        e.seed([message(1)])
        cfg = e.config()
        # The first run makes the statefile (--idle does not create it).
        r = e.run(cfg, "-q")
        self.assertEqual(r.rc, 0, r.describe())
        proc = e.spawn(cfg, "--idle", "--debug")
        h.wait_until("IDLE", lambda: re.search(r"C: \d+ IDLE", p.output(proc)) or proc.poll() is not None,
                     15, interval=0.02)
        self.assertIsNone(proc.poll(), p.output(proc))
        for n in (2, 3):
            e.seed([message(n)])
            start = time.monotonic()
            h.wait_until(f"message {n} delivered", lambda: n in e.delivered_ids(), 10, interval=0.1)
            h.log(f"message {n} delivered {time.monotonic() - start:.2f}s after its APPEND")
            self.assertLess(time.monotonic() - start, 5)
        # Several at once.
        e.seed([message(n) for n in range(4, 9)])
        h.wait_until("messages 4-8", lambda: e.delivered_ids()[-1:] == [8], 10, interval=0.1)
        self.assertEqual(e.delivered_ids(), list(range(1, 9)))
        # Each pull finished: \Seen, 8-byte statefile.
        h.wait_until("statefile UIDNEXT 9", lambda: e.state()[1:] == [9], 5, interval=0.02)
        self.assertTrue(all("\\Seen" in flags for flags, _ in e.source().values()))
        start = time.monotonic()
        self.assertEqual(p.stop(proc, signal.SIGTERM), 0, p.output(proc))
        self.assertLess(time.monotonic() - start, 3)
        out = p.output(proc)
        self.assertRegex(out, r"C: DONE")
        self.assertRegex(out, r"C: \d+ LOGOUT")
        self.assertNotIn("ERROR", out)

    def test_idle_restarted_after_seconds_over_tcp(self):
        # The source is an account on the daemon, reached over TCP (where
        # --idle turns SO_KEEPALIVE on); delivery goes to bob.
        e = p.Env("iit-pull-idle2-")

        def append(msg):
            with e.imap(e.alice) as m:
                m.append("INBOX", msg)
        append(message(1))
        opts = e.d.section(type="imap", username=e.alice, password=e.d.users[e.alice])
        opts.update({"deliver-method": e.lmtp(), "deliver-rcpt": e.bob, "statefile": e.statefile})
        cfg = h.write_config(e.t, {"acct": opts})
        r = e.run(cfg, "-q")
        self.assertEqual(r.rc, 0, r.describe())
        self.assertEqual(e.delivered_ids(e.bob), [1])
        proc = e.spawn(cfg, "--idle=1", "--debug")
        time.sleep(3.5)
        out = p.output(proc)
        self.assertIsNone(proc.poll(), out)
        self.assertGreaterEqual(len(re.findall(r"C: \d+ IDLE", out)), 3, out)
        self.assertGreaterEqual(len(re.findall(r"C: DONE", out)), 2, out)
        append(message(2))
        h.wait_until("message 2", lambda: e.delivered_ids(e.bob) == [1, 2], 10, interval=0.1)
        # SIGINT: a clean stop too, exit status 1 (an interruption).
        self.assertEqual(p.stop(proc, signal.SIGINT), 1, p.output(proc))
        self.assertNotIn("ERROR", p.output(proc))
        self.assertEqual(e.state()[1:], [3])

    def test_purge_after_zero_removes_delivered_messages(self):
        e = p.Env("iit-pull-idle3-")
        e.seed([message(1), message(2)])
        cfg = e.config(purge_after="0")
        r = e.run(cfg, "-q")
        self.assertEqual(r.rc, 0, r.describe())
        self.assertEqual(e.delivered_ids(), [1, 2])
        self.assertEqual(e.source(), {})
        proc = e.spawn(cfg, "--idle")
        e.seed([message(3)])
        h.wait_until("message 3", lambda: e.delivered_ids() == [1, 2, 3], 10, interval=0.1)
        h.wait_until("message 3 purged", lambda: e.source() == {}, 5, interval=0.1)
        self.assertEqual(p.stop(proc), 0, p.output(proc))
        self.assertEqual(e.state()[1:], [4])


if __name__ == "__main__":
    unittest.main(verbosity=2)
