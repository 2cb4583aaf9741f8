#!/usr/bin/env python3
"""authrelay.py MODE HOST PORT: a `type = tunnel` command relaying IMAP
between its stdin/stdout and a real server (Dovecot's plain port), which
alters the server's answers during authentication (test_auth.py):

  pass           nothing (the control run)
  tamper         the SCRAM server-final message ("+ base64(v=...)"): one
                 byte of the server signature changed
  skip-final     the SCRAM server-final message replaced by the tagged OK
                 the client waits for (a server that never proves it knows
                 the password)
  logindisabled  LOGINDISABLED added to every capability list

The only scripted stand-in of the tests: everything else is Dovecot's."""

import base64
import re
import socket
import sys
import threading


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sock = socket.create_connection((host, port))
    out = sys.stdout.buffer
    tag = [None]

    def client_to_server():
        inp = sys.stdin.buffer
        while True:
            line = inp.readline()
            if not line:
                break
            m = re.match(rb"(\S+) AUTHENTICATE ", line)
            if m:
                tag[0] = m.group(1)
            sock.sendall(line)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    threading.Thread(target=client_to_server, daemon=True).start()
    reader = sock.makefile("rb")
    while True:
        line = reader.readline()
        if not line:
            break
        if mode == "logindisabled" and b"CAPABILITY" in line and b"IMAP4rev1" in line:
            line = line.replace(b"IMAP4rev1", b"IMAP4rev1 LOGINDISABLED", 1)
        elif mode in ("tamper", "skip-final") and line.startswith(b"+ "):
            try:
                decoded = base64.b64decode(line[2:].strip(), validate=True)
            except ValueError:
                decoded = b""
            if decoded.startswith(b"v="):
                if mode == "skip-final":
                    out.write(tag[0] + b" OK Logged in\r\n")
                    out.flush()
                    continue
                sig = bytearray(base64.b64decode(decoded[2:]))
                sig[0] ^= 0x01
                forged = b"v=" + base64.b64encode(bytes(sig))
                line = b"+ " + base64.b64encode(forged) + b"\r\n"
                sys.stderr.write("authrelay: server signature altered\n")
        out.write(line)
        out.flush()


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, ConnectionResetError):
        pass
