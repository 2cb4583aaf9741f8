#!/usr/bin/env python3
"""Connection layer against a Dovecot daemon: LOGIN and AUTHENTICATE PLAIN,
a wrong password, STARTTLS, IMAPS, certificate verification, SPKI
fingerprints, SNI and host names, a refused port, a server without
STARTTLS, COMPRESS over TLS, and credentials in --debug output.

Where the reference (Net::IMAP::InterIMAP from interimap 0.5.7) is
installed, each TLS/authentication case is also run through it and must
succeed or fail exactly as ours does."""

import base64
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402

h.require("imap-probe", "dovecot", "doveconf", "openssl")

T = None
D = None       # ssl = yes; a second certificate for SNI name other.example
PLAIN = None   # ssl = no (no STARTTLS), no imap_zlib, LITERAL-
HAVE_REFERENCE = False
WRONG_FPR = "sha256$" + "00" * 32
OURS_ONLY = ("auth-cleartext", "password-command", "username-command", "password-command-timeout")
CLEAR = {"auth-cleartext": "YES"}


def setUpModule():
    global T, D, PLAIN, HAVE_REFERENCE
    T = h.TestDir("iit-daemon-")
    D = h.DovecotDaemon(T, "tls", sni_names=["other.example"])
    PLAIN = h.DovecotDaemon(T, "plain", ssl=False, compress=False, literal_minus=True)
    h.start_all(D, PLAIN)
    HAVE_REFERENCE = h.have_reference()
    if not HAVE_REFERENCE:
        if h.IN_CI:
            raise RuntimeError("CI=true but the reference (package libinterimap) is not installed")
        h.log("reference Net::IMAP::InterIMAP not installed: no comparison with it")


def probe(section_opts, action="capabilities", *args, debug=None, section="remote"):
    config = h.write_config(T, {section: section_opts})
    return h.run_probe(config, action, *args, section=section, debug=debug)


def compare_with_reference(testcase, section_opts, ours):
    """The reference must agree on success or failure."""
    if not HAVE_REFERENCE:
        return
    # Options of ours the reference refuses: auth-cleartext is its
    # behaviour (it always sends the password); the others it lacks.
    if any(k in section_opts for k in OURS_ONLY if k != "auth-cleartext"):
        return
    section_opts = {k: v for k, v in section_opts.items() if k != "auth-cleartext"}
    config = h.write_config(T, {"remote": section_opts})
    ref = h.run_reference(config, "remote")
    testcase.assertEqual(ours.rc == 0, ref.rc == 0,
                         f"reference disagrees\n--- ours\n{ours.describe()}\n--- reference\n{ref.describe()}")


def ok(testcase, section_opts, tls=True):
    r = h.assert_ok(probe(section_opts))
    caps, is_tls, _ = h.parse_capabilities(r.out)
    testcase.assertEqual(is_tls, tls, r.describe())
    testcase.assertIn("QRESYNC", caps, "post-login capabilities")
    compare_with_reference(testcase, section_opts, r)
    return r


def fails(testcase, section_opts, *patterns):
    r = probe(section_opts)
    msg = h.assert_fails(r, *patterns)
    compare_with_reference(testcase, section_opts, r)
    return msg


class Authentication(unittest.TestCase):
    def test_login(self):
        ok(self, D.section(auth="LOGIN"))
        r = h.assert_ok(probe(D.section(auth="LOGIN"), debug=1))
        self.assertRegex(r.err, r"(?m)^remote: C: \S+ LOGIN\b")
        self.assertNotRegex(r.err, r"(?m)^remote: C: \S+ AUTHENTICATE\b")

    def test_authenticate_plain(self):
        ok(self, D.section(auth="PLAIN"))
        r = h.assert_ok(probe(D.section(auth="PLAIN"), debug=1))
        self.assertRegex(r.err, r"(?m)^remote: C: \S+ AUTHENTICATE PLAIN\b")

    def test_default_mechanism_is_plain(self):
        r = h.assert_ok(probe(D.section(), debug=1))
        self.assertRegex(r.err, r"(?m)^remote: C: \S+ AUTHENTICATE PLAIN\b")

    def test_unknown_mechanism_skipped(self):
        ok(self, D.section(auth="X-UNKNOWN PLAIN"))

    def test_no_usable_mechanism(self):
        fails(self, D.section(auth="X-UNKNOWN"), r"mechanism|auth")

    def test_wrong_password(self):
        for auth in ("PLAIN", "LOGIN"):
            with self.subTest(auth=auth):
                fails(self, D.section(auth=auth, password="wrong"), r"Authentication failed")

    def test_unknown_user(self):
        fails(self, D.section(username="mallory"), r"Authentication failed")

    def test_plain_without_tls(self):
        ok(self, PLAIN.section(type="imap", STARTTLS="NO"), tls=False)


class Tls(unittest.TestCase):
    def test_starttls(self):
        ok(self, D.section(type="imap"))

    def test_starttls_no(self):
        ok(self, D.section(type="imap", STARTTLS="NO", **CLEAR), tls=False)

    def test_starttls_not_advertised(self):
        fails(self, PLAIN.section(type="imap", STARTTLS="YES"), r"STARTTLS")

    def test_starttls_unverified(self):
        fails(self, D.section(type="imap", SSL_CAfile=None), r"certificate|verif")

    def test_imaps_cafile(self):
        ok(self, D.section())

    def test_imaps_capath(self):
        # SSL_CApath: a hashed directory (openssl rehash); fall back to
        # the `<hash>.0` name computed by openssl x509 -hash
        capath = T.sub("capath")
        import shutil
        import subprocess
        digest = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", D.cert],
                                capture_output=True, text=True, check=True).stdout.strip()
        shutil.copy(D.cert, os.path.join(capath, digest + ".0"))
        ok(self, D.section(SSL_CAfile=None, SSL_CApath=capath))

    def test_imaps_unknown_ca(self):
        fails(self, D.section(SSL_CAfile=None), r"certificate|verif")

    def test_imaps_verify_no(self):
        ok(self, D.section(SSL_CAfile=None, SSL_verify="NO"))

    def test_fingerprint_alone_does_not_replace_verification(self):
        # Reference semantics: SSL_fingerprint pins a key on top of the
        # chain verification; with SSL_verify = YES and an untrusted
        # self-signed certificate, the handshake still fails.
        fails(self, D.section(SSL_CAfile=None, SSL_fingerprint="sha256$" + D.fingerprint),
              r"certificate|verif")

    def test_fingerprint_with_verify_no(self):
        ok(self, D.section(SSL_CAfile=None, SSL_verify="NO", SSL_fingerprint="sha256$" + D.fingerprint))

    def test_fingerprint_default_algorithm(self):
        ok(self, D.section(SSL_CAfile=None, SSL_verify="NO", SSL_fingerprint=D.fingerprint))

    def test_fingerprint_uppercase_hex(self):
        ok(self, D.section(SSL_fingerprint="sha256$" + D.fingerprint.upper()))

    def test_fingerprint_with_cafile(self):
        ok(self, D.section(SSL_fingerprint="sha256$" + D.fingerprint))

    def test_fingerprint_one_of_many(self):
        ok(self, D.section(SSL_fingerprint=f"{WRONG_FPR} sha256${D.fingerprint}"))

    def test_wrong_fingerprint(self):
        fails(self, D.section(SSL_fingerprint=WRONG_FPR), r"fingerprint")

    def test_wrong_fingerprint_verify_no(self):
        fails(self, D.section(SSL_verify="NO", SSL_CAfile=None, SSL_fingerprint=WRONG_FPR), r"fingerprint")

    def test_fingerprint_starttls(self):
        ok(self, D.section(type="imap", SSL_fingerprint="sha256$" + D.fingerprint))
        fails(self, D.section(type="imap", SSL_fingerprint=WRONG_FPR), r"fingerprint")

    def test_host_name_matches(self):
        ok(self, D.section(host="localhost"))   # subjectAltName DNS:localhost
        ok(self, D.section(host="127.0.0.1"))   # subjectAltName IP:127.0.0.1

    def test_sni_selects_certificate_for_another_name(self):
        # SSL_hostname sets SNI only: Dovecot then presents the certificate
        # of other.example, which does not match host = localhost.
        fails(self, D.section(host="localhost", SSL_CAfile=D.ca_bundle, SSL_hostname="other.example"),
              r"certificate|verif|host|name|match")

    def test_sni_is_sent(self):
        # proves SSL_hostname reaches the server: the key is other.example's
        other_fpr = D.sni["other.example"][2]
        ok(self, D.section(host="localhost", SSL_verify="NO", SSL_CAfile=None, SSL_hostname="other.example",
                           SSL_fingerprint=other_fpr))
        fails(self, D.section(host="localhost", SSL_verify="NO", SSL_CAfile=None, SSL_fingerprint=other_fpr),
              r"fingerprint")

    def test_sni_disabled(self):
        ok(self, D.section(host="localhost", SSL_hostname=""))

    def test_protocol_bounds(self):
        ok(self, D.section(SSL_protocol_min="TLSv1.2", SSL_protocol_max="TLSv1.3"))
        ok(self, D.section(SSL_protocol_max="TLSv1.2"))

    def test_imaps_on_plain_port(self):
        # a TLS handshake against a plaintext IMAP port fails cleanly
        r = probe(D.section(port=str(D.imap_port)))
        h.assert_fails(r)


class Network(unittest.TestCase):
    def test_refused_port(self):
        port = h.free_ports(1)[0]
        msg = fails(self, D.section(port=str(port)))
        self.assertIn("127.0.0.1", msg)
        self.assertIn(str(port), msg)

    def test_unresolvable_host(self):
        r = probe(D.section(host="nonexistent.invalid"))
        msg = h.assert_fails(r)
        self.assertIn("nonexistent.invalid", msg)


class Compress(unittest.TestCase):
    def test_compress_on_off(self):
        r = h.assert_ok(probe(D.section(compress="YES")))
        self.assertTrue(h.parse_capabilities(r.out)[2], r.describe())
        r = h.assert_ok(probe(D.section(compress="NO")))
        self.assertFalse(h.parse_capabilities(r.out)[2], r.describe())

    def test_compress_default_remote(self):
        r = h.assert_ok(probe(D.section(), section="remote"))
        self.assertTrue(h.parse_capabilities(r.out)[2], r.describe())
        r = h.assert_ok(probe(D.section(), section="local"))
        self.assertFalse(h.parse_capabilities(r.out)[2], r.describe())

    def test_compress_not_advertised(self):
        r = h.assert_ok(probe(PLAIN.section(type="imap", STARTTLS="NO", compress="YES")))
        caps, _, compress = h.parse_capabilities(r.out)
        self.assertNotIn("COMPRESS=DEFLATE", caps)
        self.assertFalse(compress)

    def test_traffic_over_tls_and_deflate(self):
        msg = h.make_message("over tls+deflate", size=300_000)
        path = T.file("tls-deflate.eml", msg)
        for name, opts in (("imaps", D.section(compress="YES")),
                           ("starttls", D.section(type="imap", compress="YES"))):
            with self.subTest(name):
                mailbox = f"deflate-{name}"
                h.assert_ok(probe(opts, "create", mailbox))
                r = h.assert_ok(probe(opts, "append", mailbox, path, "\\Seen"))
                uid = int(r.out.split()[2])
                r = h.assert_ok(probe(opts, "fetch", mailbox, uid))
                self.assertEqual(r.out.split()[1:], [str(len(msg)), h.sha256_hex(msg)])
                flags, body = D.messages(mailbox)[uid]
                self.assertEqual(body, msg)
                self.assertIn("\\Seen", flags)
                boxes = h.parse_list(h.assert_ok(probe(opts, "list", mailbox)).out)
                self.assertEqual(boxes[mailbox]["messages"], 1)

    def test_literal_minus_daemon(self):
        msg = h.make_message("literal- daemon", size=10_000)
        path = T.file("litminus.eml", msg)
        opts = PLAIN.section(type="imap", STARTTLS="NO")
        r = h.assert_ok(probe(opts, "append", "INBOX", path))
        uid = int(r.out.split()[2])
        self.assertEqual(PLAIN.messages("INBOX")[uid][1], msg)


class DebugRedaction(unittest.TestCase):
    def traffic(self, auth, debug):
        r = h.assert_ok(probe(D.section(auth=auth), debug=debug))
        self.assertRegex(r.err, r"(?m)^remote: C: ", "client lines in the debug log")
        self.assertRegex(r.err, r"(?m)^remote: S: ", "server lines in the debug log")
        return r.err

    def secrets(self):
        plain = base64.b64encode(f"\0{D.user}\0{D.password}".encode()).decode()
        return [D.password, plain]

    def test_debug_1_redacts(self):
        for auth in ("LOGIN", "PLAIN"):
            with self.subTest(auth=auth):
                err = self.traffic(auth, 1)
                for secret in self.secrets():
                    self.assertNotIn(secret, err)

    def test_debug_2_shows_credentials(self):
        err = self.traffic("LOGIN", 2)
        self.assertIn(D.password, err)
        err = self.traffic("PLAIN", 2)
        self.assertIn(self.secrets()[1], err)

    def test_no_debug_no_traffic(self):
        r = h.assert_ok(probe(D.section()))
        self.assertNotRegex(r.err, r"(?m)^remote: [CS]: ")


if __name__ == "__main__":
    unittest.main(verbosity=2)
