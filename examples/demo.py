#!/usr/bin/env python3
"""The body of examples/demo.sh (which builds interimap and sets
$INTERIMAP): two throwaway Dovecot stores, sample mail on one, interimap
run twice, a summary of both sides.  Exits non-zero if the two sides do
not end up identical or the second run changed anything."""

import collections
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration", "lib"))
import harness as h  # noqa: E402
import synclib as s  # noqa: E402

SAMPLE = {  # mailbox (NUL = hierarchy delimiter) -> [(subject, flags)]
    "INBOX": [("Welcome to the demo", ["\\Seen"]), ("Meeting on Thursday", ["\\Flagged"]),
              ("Your invoice", []), ("Re: lunch?", ["\\Seen", "\\Answered"]), ("Photos", ["$Important"])],
    "Sent": [("Re: lunch?", ["\\Seen"]), ("Holiday plans", ["\\Seen"])],
    "Archive\0002024": [("Old thread %d" % i, ["\\Seen"]) for i in range(3)],
    "Lists\0dovecot": [("[Dovecot] release %d" % i, [] if i % 2 else ["\\Seen"]) for i in range(4)],
}
SUBSCRIBED = ["INBOX", "Sent", "Lists/dovecot"]


def summary(p, side):
    store = p.local if side == "local" else p.remote
    snap = s.snapshot(store)
    subs = s.subscribed(store)
    print(f"  {side} ({store.root}/mail):")
    for name in sorted(snap):
        msgs = snap[name]
        flags = collections.Counter(f for fl, _ in msgs.values() for f in fl)
        fl = ", ".join(f"{f} x{n}" for f, n in sorted(flags.items())) or "no flags"
        sub = " [subscribed]" if name in subs else ""
        print(f"    {name:<16} {len(msgs):>2} message(s): {fl}{sub}")
    return snap


def main():
    s.require()
    print(f"demo: interimap binary: {s.INTERIMAP}")
    t = h.TestDir("interimap-demo-")
    p = s.Pair(t, "demo")
    spec = {mb: [(h.make_message(subject=subj, body=f"This is '{subj}'.\r\n"), fl) for subj, fl in msgs]
            for mb, msgs in SAMPLE.items()}
    p.seed("remote", spec)
    with h.Imap(p.remote) as sd:
        for name in SUBSCRIBED:
            sd.subscribe(name)
    print(f"demo: two Dovecot stores under {t.path}; the remote one holds "
          f"{sum(len(v) for v in SAMPLE.values())} sample messages in {len(SAMPLE)} mailboxes")
    print(f"demo: configuration ({p.config}):")
    with open(p.config) as f:
        print("".join("    " + line for line in f))

    print(f"demo: $ interimap --config={p.config}    # first run: a full copy")
    r = p.run()
    print("".join("    " + line + "\n" for line in r.err.splitlines()), end="")
    if r.rc != 0:
        print(f"demo: FAILED: interimap exited with status {r.rc}")
        return 1
    before = (s.snapshot(p.local), s.snapshot(p.remote))
    print(f"demo: $ interimap --config={p.config}    # second run: nothing to do")
    r = p.run()
    print("".join("    " + line + "\n" for line in r.err.splitlines()), end="")
    if r.rc != 0:
        print(f"demo: FAILED: interimap exited with status {r.rc}")
        return 1

    print("demo: what each side holds now:")
    summary(p, "local")
    summary(p, "remote")
    try:
        p.check()
    except AssertionError as e:
        print(f"demo: FAILED: {e}")
        return 1
    if before != (s.snapshot(p.local), s.snapshot(p.remote)):
        print("demo: FAILED: the second run changed the stores")
        return 1
    db = s.read_db(p.db)
    print(f"demo: OK: both sides hold the same {len(db['mailboxes'])} mailboxes and messages; "
          f"the database {p.db} maps {sum(len(v) for v in db['mapping'].values())} message pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
