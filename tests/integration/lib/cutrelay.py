#!/usr/bin/env python3
"""A tunnel that dies after N bytes:  cutrelay.py N COUNTFILE COMMAND...

Runs COMMAND (through /bin/sh -c, the IMAP server of a tunnel) and relays
our stdin to its stdin and its stdout to our stdout.  Once N bytes have
gone through (both directions counted), it stops relaying at that exact
byte, closes both ends and exits: the client sees the connection drop
mid-stream, the server sees its client go away.  N < 0 means never.
COUNTFILE receives the number of bytes relayed (for calibration)."""

import os
import select
import subprocess
import sys


def main():
    limit, countfile, command = int(sys.argv[1]), sys.argv[2], " ".join(sys.argv[3:])
    child = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             bufsize=0)
    up_in, up_out = 0, 1  # client side
    down_in, down_out = child.stdout.fileno(), child.stdin.fileno()
    total = 0
    open_in = {up_in: down_out, down_in: up_out}
    try:
        while open_in:
            readable, _, _ = select.select(list(open_in), [], [])
            for fd in readable:
                data = os.read(fd, 65536)
                if not data:
                    out = open_in.pop(fd)
                    if out == down_out:
                        child.stdin.close()
                    elif out == up_out:
                        os.close(up_out)
                    continue
                if limit >= 0 and total + len(data) >= limit:
                    data = data[:limit - total]
                    total += len(data)
                    _write(open_in[fd], data)
                    return total
                total += len(data)
                _write(open_in[fd], data)
        return total
    finally:
        with open(countfile, "w") as f:
            f.write(f"{total}\n")
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
