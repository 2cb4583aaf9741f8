#!/usr/bin/env python3
"""relay.py OUT.json [--c2s FILE] -- COMMAND...: runs COMMAND with pipes,
copies our stdin to it and its stdout to ours, and counts the bytes each
way.  --c2s FILE: also copies what the client writes to FILE (the commands
it sends, for the trimmed-remote scenarios' command summary).

Bytes are grouped in bursts: a burst starts when the client writes after
at least GAP seconds of silence from it (a --watch poll, for instance).
OUT.json is rewritten at the start of each burst and at exit:
{"c2s": total, "s2c": total, "bursts": [[start, c2s, s2c], ...]}.

The benchmark uses it for the watch loop's idle cost (bytes per poll) and,
with --relay, to cross-check Dovecot's own in=/out= counters.
"""

import json
import os
import subprocess
import sys
import threading
import time

GAP = 0.4


def main():
    out = sys.argv[1]
    rest = sys.argv[2:]
    trace = None
    if rest[:1] == ["--c2s"]:
        trace = open(rest[1], "ab")
        rest = rest[2:]
    argv = rest[1:] if rest[:1] == ["--"] else rest
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    lock = threading.Lock()
    state = {"c2s": 0, "s2c": 0, "bursts": []}
    last_c2s = [0.0]
    t0 = time.monotonic()

    def dump():
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, out)

    def up():  # client -> server
        fd_in, fd_out = 0, proc.stdin.fileno()
        while True:
            data = os.read(fd_in, 1 << 16)
            if not data:
                break
            now = time.monotonic()
            with lock:
                if not state["bursts"] or now - last_c2s[0] > GAP:
                    state["bursts"].append([round(now - t0, 3), 0, 0])
                    dump()
                last_c2s[0] = now
                state["c2s"] += len(data)
                state["bursts"][-1][1] += len(data)
                if trace:
                    trace.write(data)
            try:
                _write_all(fd_out, data)
            except BrokenPipeError:
                break
        try:
            proc.stdin.close()
        except OSError:
            pass

    def _write_all(fd, data):
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    def down():  # server -> client
        fd_in = proc.stdout.fileno()
        while True:
            data = os.read(fd_in, 1 << 16)
            if not data:
                break
            with lock:
                state["s2c"] += len(data)
                if state["bursts"]:
                    state["bursts"][-1][2] += len(data)
                else:
                    state["bursts"].append([round(time.monotonic() - t0, 3), 0, len(data)])
            try:
                _write_all(1, data)
            except BrokenPipeError:
                break

    tu = threading.Thread(target=up, daemon=True)
    td = threading.Thread(target=down)
    tu.start()
    td.start()
    td.join()
    proc.wait()
    with lock:
        dump()
        if trace:
            trace.close()
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
