"""The tests' SMTP server (smtpd_server.py) on a free port of 127.0.0.1 or
::1, for test_smtp.py and the pullimap tests."""

import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smtpd_server.py")


def available():
    """Whether this Python has smtpd (removed in 3.12)."""
    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import smtpd  # noqa: F401
        return True
    except ImportError:
        return False


class SmtpdServer:
    """smtpd on a free port; `spool` holds what it received."""

    _count = 0

    def __init__(self, t, host="127.0.0.1", **opts):
        SmtpdServer._count += 1
        self.host = host
        self.spool = t.sub(f"smtpd-{SmtpdServer._count}")
        self.opts = dict(opts, spool=self.spool, host=host)
        self.script = SCRIPT
        for attempt in range(4):
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                self.port = s.getsockname()[1]
            self.opts["port"] = self.port
            ready = os.path.join(self.spool, "ready")
            self.process = h.Process([sys.executable, self.script, json.dumps(self.opts)], "smtpd",
                                     log_path=os.path.join(self.spool, "stderr.log"))
            # Not a probe connection: smtpd would count it as a session.
            deadline = time.monotonic() + 15
            while not os.path.exists(ready) and self.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if os.path.exists(ready):
                return
            self.process.stop()  # the port was taken meanwhile: try another
        raise h.HarnessError(f"smtpd did not start: {self.read('stderr.log')}")

    def method(self):
        return f"smtp:[{self.host}]:{self.port}"

    def read(self, name):
        try:
            with open(os.path.join(self.spool, name), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def lines(self, name):
        return self.read(name).splitlines()

    def messages(self):
        """[(envelope dict, data bytes)] in arrival order."""
        out = []
        for name in sorted(os.listdir(self.spool)):
            if name.endswith(".eml"):
                with open(os.path.join(self.spool, name), "rb") as f:
                    data = f.read()
                with open(os.path.join(self.spool, name[:-4] + ".json")) as f:
                    env = json.load(f)
                out.append((env, data))
        return out

    def stop(self):
        self.process.stop()
