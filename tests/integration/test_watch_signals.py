"""Signals and lost connections in interimap's long-lived mode.

- SIGTERM in the middle of a large first synchronization under --watch:
  exit 0 (the pass in progress finished or abandoned), then a plain run
  converges with every message exactly once on both sides.
- SIGINT and SIGHUP while waiting: exit 0 at once, both sessions logged
  out (the reference exits 1 on SIGINT and dies of SIGHUP: not asserted
  for it).
- The remote server's process killed while --watch waits: a non-zero exit
  within seconds with an error naming the remote side; a change made
  meanwhile is synchronized by the next plain run, nothing lost.

INTERIMAP=/usr/bin/interimap runs it against the reference.
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402
import synclib as s  # noqa: E402
import watchlib as w  # noqa: E402


def files_in(store):
    """Message files in a maildir store (read directly: cheap enough to
    poll every few milliseconds)."""
    n = 0
    for root, _, files in os.walk(store.mail):
        if os.path.basename(root) in ("new", "cur"):
            n += len(files)
    return n


def count_messages(store, names):
    total = 0
    have = {n for n, _, _ in store.mailboxes()}
    for n in names:
        if n in have:
            total += store.status(n)["MESSAGES"]
    return total


def main():
    s.require()
    t0 = time.monotonic()
    t = h.TestDir("iit-watchsig-")
    reference = s.is_reference()

    with w.step("SIGTERM during a large first synchronization, then a plain run converges"):
        pair = s.Pair(t, "big")
        pair.sync()  # --watch does not create the database
        names = ["INBOX", "a", "b"]
        expect = {}
        with h.Imap(pair.remote) as sr:
            for n in names[1:]:
                sr.create(n)
            for n in names:
                msgs = [s.message(f"big-{n}", i, size=16000) for i in range(250)]
                for m in msgs:
                    sr.append(n, m)
                expect[n] = s.counter(*[(m, ()) for m in msgs])
        watcher = w.Watcher(pair, "--watch=2")
        h.wait_until("the first messages copied", lambda: files_in(pair.local) > 0,
                     30, watcher=watcher, interval=0.002)
        copied = files_in(pair.local)
        rc, took = watcher.stop(signal.SIGTERM, timeout=60)
        w.log(f"SIGTERM after {copied} of 750 messages: exit {rc} after {took:.2f}s, "
              f"{count_messages(pair.local, names)} copied")
        assert rc == 0, f"exit status {rc} after SIGTERM\n" + watcher.describe()
        pair.sync()
        pair.check(expect=expect)

    with w.step("SIGINT and SIGHUP while waiting: exit 0 at once, logged out"):
        for sig in (signal.SIGINT, signal.SIGHUP):
            watcher = w.Watcher(pair, "--watch=60")
            h.wait_until("both tunnels", lambda: len(watcher.children()) == 2, 10, watcher=watcher)
            time.sleep(1.5)
            if reference:
                rc, took = watcher.stop(sig)
                w.log(f"reference: {sig!r} -> exit status {rc} (not asserted)")
            else:
                w.stop_and_check_logout(pair, watcher, sig, expect_rc=0, max_seconds=3)

    with w.step("the remote server's process dies while waiting: non-zero exit naming it; nothing lost"):
        watcher = w.Watcher(pair, "--watch=2")
        m1, m2 = s.message("lost", 1), s.message("lost", 2)
        pair.local.append("a", m1)
        h.wait_until("m1 on the remote side", lambda: w.has_message(pair.remote, "a", m1), 10, watcher=watcher)
        victims = [pid for pid, cmd in w.descendants(watcher.pid) if pair.remote.conf in cmd]
        assert victims, f"no remote tunnel process among {w.descendants(watcher.pid)!r}"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        rc = watcher.wait_exit(15)
        took = time.monotonic() - t_kill
        assert rc is not None, "interimap still running 15s after its remote server died\n" + watcher.describe()
        w.log(f"exit status {rc} after {took:.2f}s: {watcher.stderr.strip().splitlines()[-1]!r}")
        assert rc != 0 and rc > 0, f"exit status {rc} after a lost connection\n" + watcher.describe()
        errors = [line for line in watcher.stderr.splitlines() if "ERROR" in line or "error" in line]
        assert errors and any("remote" in line for line in errors), \
            "no error line naming the remote side\n" + watcher.describe()
        if not reference:
            # Ours reads while it waits, so it notices at once.
            assert took < 3, f"took {took:.1f}s to notice\n" + watcher.describe()
        pair.local.append("a", m2)
        pair.sync()
        assert w.has_message(pair.remote, "a", m1) and w.has_message(pair.remote, "a", m2)
        pair.check()

    w.log(f"ok ({time.monotonic() - t0:.1f}s)")


if __name__ == "__main__":
    main()
