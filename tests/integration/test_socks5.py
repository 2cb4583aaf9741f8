#!/usr/bin/env python3
"""Connection layer through a SOCKS5 proxy (microsocks): socks5:// and
socks5h://, without and with username/password (RFC 1929), to the
daemon's IMAP (STARTTLS) and IMAPS ports; a wrong proxy password, a
missing one, an unreachable proxy and an unreachable target fail cleanly.
Where the reference is installed it must agree on success or failure."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402

h.require("imap-probe", "dovecot", "doveconf", "openssl", "microsocks")

T = D = OPEN = AUTH = None
HAVE_REFERENCE = False
PROXY_USER, PROXY_PASSWORD = "proxy-user", "proxy-Pa55"


def setUpModule():
    global T, D, OPEN, AUTH, HAVE_REFERENCE
    T = h.TestDir("iit-socks-")
    D = h.DovecotDaemon(T, "tls")
    OPEN = h.Microsocks(T, name="socks-open")
    AUTH = h.Microsocks(T, user=PROXY_USER, password=PROXY_PASSWORD, name="socks-auth")
    h.start_all(D, OPEN, AUTH)
    HAVE_REFERENCE = h.have_reference()
    if not HAVE_REFERENCE and h.IN_CI:
        raise RuntimeError("CI=true but the reference (package libinterimap) is not installed")


def probe(opts, action="capabilities", *args, debug=None):
    config = h.write_config(T, {"remote": opts})
    return h.run_probe(config, action, *args, section="remote", debug=debug)


def compare_with_reference(testcase, opts, ours):
    if not HAVE_REFERENCE:
        return
    ref = h.run_reference(h.write_config(T, {"remote": opts}), "remote")
    testcase.assertEqual(ours.rc == 0, ref.rc == 0,
                         f"reference disagrees\n--- ours\n{ours.describe()}\n--- reference\n{ref.describe()}")


class Socks5(unittest.TestCase):
    def ok(self, opts):
        r = h.assert_ok(probe(opts))
        caps, tls, _ = h.parse_capabilities(r.out)
        self.assertTrue(tls)
        self.assertIn("QRESYNC", caps)
        compare_with_reference(self, opts, r)
        return r

    def fails(self, opts, *patterns):
        r = probe(opts)
        msg = h.assert_fails(r, *patterns)
        compare_with_reference(self, opts, r)
        return msg

    def test_socks5_no_auth(self):
        self.ok(D.section(type="imap", proxy=OPEN.url()))
        self.ok(D.section(type="imaps", proxy=OPEN.url()))

    def test_socks5h_no_auth(self):
        # the proxy resolves "localhost"; the certificate is checked against it
        self.ok(D.section(type="imap", host="localhost", proxy=OPEN.url("socks5h")))
        self.ok(D.section(type="imaps", host="localhost", proxy=OPEN.url("socks5h")))

    def test_socks5_local_resolution(self):
        self.ok(D.section(type="imaps", host="localhost", proxy=OPEN.url("socks5")))

    def test_socks5_with_auth(self):
        self.ok(D.section(type="imap", proxy=AUTH.url()))

    def test_socks5h_with_auth(self):
        self.ok(D.section(type="imaps", host="localhost", proxy=AUTH.url("socks5h")))

    def test_default_proxy_port_is_1080(self):
        # without :PORT the reference uses 1080; nothing listens there in
        # the test (a proxy that happens to run on 1080 would be reached)
        if h.port_open(1080):
            self.skipTest("something listens on 127.0.0.1:1080")
        self.fails(D.section(type="imap", proxy="socks5://127.0.0.1"), r"1080")

    def test_wrong_proxy_password(self):
        self.fails(D.section(type="imap", proxy=AUTH.url(password="wrong")), r"SOCKS", r"auth")

    def test_missing_proxy_credentials(self):
        self.fails(D.section(type="imap", proxy=f"socks5://127.0.0.1:{AUTH.port}"), r"SOCKS")

    def test_proxy_unreachable(self):
        port = h.free_ports(1)[0]
        msg = self.fails(D.section(type="imap", proxy=f"socks5://127.0.0.1:{port}"))
        self.assertIn(str(port), msg)

    def test_target_unreachable(self):
        port = h.free_ports(1)[0]
        self.fails(D.section(type="imap", port=str(port), proxy=OPEN.url()), r"SOCKS|refused|connect")

    def test_traffic_through_proxy(self):
        msg = h.make_message("through socks", size=200_000)
        path = T.file("socks.eml", msg)
        opts = D.section(type="imaps", host="localhost", proxy=AUTH.url("socks5h"), compress="YES")
        r = h.assert_ok(probe(opts, "append", "INBOX", path))
        uid = int(r.out.split()[2])
        r = h.assert_ok(probe(opts, "fetch", "INBOX", uid))
        self.assertEqual(r.out.split()[1:], [str(len(msg)), h.sha256_hex(msg)])
        self.assertEqual(D.messages("INBOX")[uid][1], msg)

    def test_debug_1_redacts_proxy_password(self):
        r = h.assert_ok(probe(D.section(type="imap", proxy=AUTH.url()), debug=1))
        self.assertNotIn(PROXY_PASSWORD, r.err)
        self.assertNotIn(D.password, r.err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
