#!/usr/bin/env python3
"""A tunnel that dies after N bytes:
    cutrelay.py [--freeze] [--down] [--line=REGEX [--past]] [--transcript=FILE] N COUNTFILE COMMAND...

Runs COMMAND (through /bin/sh -c, the IMAP server of a tunnel) and relays
our stdin to its stdin and its stdout to our stdout.  Once N bytes have
gone through (both directions counted), it stops relaying at that exact
byte, closes both ends and exits: the client sees the connection drop
mid-stream, the server sees its client go away.  N < 0 means never.
COUNTFILE receives the number of bytes relayed (for calibration).

--down          count only the bytes from the server to the client (the
                client's own bytes pass but do not count): a point in the
                server's answers, whatever the client sends meanwhile
--freeze        at N, stop relaying instead of closing: the client waits
                for an answer that never comes (it is then SIGKILLed by
                the test: a crash at an exact point of the exchange); what
                the client still sends is read and dropped, and once it
                goes away (EOF) the relay closes the server and exits.
                COUNTFILE says "N frozen" from then on
--line=REGEX    the point is not N but the start of the first line from the
                server matching REGEX (a Python bytes regex; --past: its
                end): the server's answers are relayed whole lines at a
                time.  The byte counts of two runs differ where Dovecot's
                untagged answers (* N EXISTS) come before or after a
                tagged one depending on timing; a line does not move
--transcript    FILE receives every relayed chunk: a line
                "DIR OFFSET LENGTH" (DIR '>' client to server, '<' server
                to client; OFFSET the count, as N counts, before it), then
                the LENGTH bytes, then a newline
"""

import os
import re
import select
import subprocess
import sys


def main():
    args = sys.argv[1:]
    freeze = down = False
    transcript = None
    line, past = None, False
    while args and args[0].startswith("--"):
        opt = args.pop(0)
        if opt == "--freeze":
            freeze = True
        elif opt == "--down":
            down = True
        elif opt.startswith("--line="):
            line = re.compile(opt.split("=", 1)[1].encode())
        elif opt == "--past":
            past = True
        elif opt.startswith("--transcript="):
            transcript = open(opt.split("=", 1)[1], "wb", buffering=0)
        else:
            raise SystemExit(f"cutrelay.py: unknown option {opt}")
    limit, countfile, command = int(args[0]), args[1], " ".join(args[2:])
    child = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             bufsize=0)
    up_in, up_out = 0, 1  # client side
    down_in, down_out = child.stdout.fileno(), child.stdin.fileno()
    total = 0
    frozen = False
    pending = b""
    open_in = {up_in: down_out, down_in: up_out}

    def relay(fd, data):
        if transcript:
            transcript.write(b"%s %d %d\n" % (b">" if fd == up_in else b"<", total, len(data)) + data + b"\n")
        _write(open_in[fd], data)

    try:
        while open_in:
            readable, _, _ = select.select(list(open_in), [], [])
            for fd in readable:
                data = os.read(fd, 65536)
                if not data:
                    if fd == down_in and pending:
                        relay(fd, pending)
                    out = open_in.pop(fd)
                    if out == down_out:
                        child.stdin.close()
                    elif out == up_out:
                        os.close(up_out)
                    continue
                if line is not None and fd == down_in:
                    # whole lines only: the rest waits for its end
                    data, pending = pending + data, b""
                    end = data.rfind(b"\n") + 1
                    data, pending = data[:end], data[end:]
                    if not data:
                        continue
                    m = _first_line(line, data)
                    if m is not None:
                        data = data[:m[1] if past else m[0]]
                        if data:
                            relay(fd, data)
                        total += len(data)
                        frozen = freeze
                        if freeze:
                            _freeze(countfile, total)
                        return total
                counted = not down or fd == down_in
                if counted and limit >= 0 and total + len(data) >= limit:
                    data = data[:limit - total]
                    if data:
                        relay(fd, data)
                    total += len(data)
                    if freeze:
                        frozen = True
                        _freeze(countfile, total)
                    return total
                relay(fd, data)
                if counted:
                    total += len(data)
        return total
    finally:
        with open(countfile, "w") as f:
            f.write(f"{total}{' frozen' if frozen else ''}\n")
        # The connection is gone both ways: the server sees EOF and ends.
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


def _first_line(regex, data):
    """(start, end) of the first line of data (complete lines) matching regex."""
    start = 0
    while start < len(data):
        end = data.index(b"\n", start) + 1
        if regex.search(data[start:end]):
            return start, end
        start = end
    return None


def _freeze(countfile, total):
    """Relays nothing more; drops what the client sends until it goes away."""
    with open(countfile + ".tmp", "w") as f:
        f.write(f"{total} frozen\n")
    os.rename(countfile + ".tmp", countfile)
    while os.read(0, 65536):
        pass


def _write(fd, data):
    while data:
        n = os.write(fd, data)
        data = data[n:]


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        pass
    sys.exit(0)
