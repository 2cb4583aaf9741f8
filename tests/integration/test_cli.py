#!/usr/bin/env python3
"""interimap's command line next to the reference's (/usr/bin/interimap
0.5.7): for each argument list of a table that the option parser refuses
(or that ends at the missing configuration file, before any connection),
both programs must exit with the same status and print the same standard
error, byte for byte.  Covers Getopt::Long's wording (unknown, abbreviated,
missing or unexpected option values), the invalid combinations of
commands, --watch/--notify and --target, and MAILBOX checks."""

import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import harness as h  # noqa: E402

OURS = os.environ.get("INTERIMAP", "")
REF = "/usr/bin/interimap"
if not OURS or not os.access(OURS, os.X_OK):
    h.skip(f"interimap not found (INTERIMAP={OURS!r}); run through meson test")
if not os.access(REF, os.X_OK):
    h.skip("the reference interimap is not installed (apt-get install interimap)")

T = h.TestDir("iit-cli-")
MISSING = os.path.join(T.path, "no-such-config")

CASES = [
    # Getopt::Long's own refusals
    ["--bogus"],
    ["-d"],
    ["--conf=/x"],       # no abbreviations
    ["--re"],
    ["--config"],        # a value is required
    ["--quiet=1"],       # no value allowed
    ["--repair=x"],
    ["--watch=abc"],     # a number
    # invalid combinations
    ["--repair", "--delete", "INBOX"],
    ["--delete"],
    ["--rename", "A"],
    ["--rename", "A", "B", "C"],
    ["--target=local"],
    ["--target=remote", "--repair"],
    ["--watch", "--repair"],
    ["--watch=5", "--delete", "X"],
    ["--notify", "--delete", "X"],
    ["--notify", "--rename", "A", "B"],
]
# Past the parser: the configuration file is missing.  The same message;
# the reference exits with Perl's die status (errno, 2 here), ours with 1.
CONFIG_CASES = [
    [f"--config={MISSING}"],
    [f"--config={MISSING}", "--watch=5"],
    [f"--config={MISSING}", "--repair", "INBOX"],
]


def run(exe, args):
    env = {"PATH": "/usr/bin:/bin", "HOME": T.path, "XDG_CONFIG_HOME": os.path.join(T.path, "config"),
           "XDG_DATA_HOME": os.path.join(T.path, "data"), "LANG": "C.UTF-8"}
    r = subprocess.run([exe] + args, capture_output=True, timeout=30, stdin=subprocess.DEVNULL, env=env)
    # The program's own path appears in no message of either, except where
    # getopt would print it: normalize the name just in case.
    return r.returncode, r.stderr.replace(exe.encode(), b"interimap")


class CommandLine(unittest.TestCase):
    def test_same_refusals_as_the_reference(self):
        for args in CASES:
            with self.subTest(args=args):
                ref_rc, ref_err = run(REF, args)
                our_rc, our_err = run(OURS, args)
                self.assertNotEqual(ref_rc, 0, f"the reference accepted {args}")
                self.assertEqual((our_rc, our_err.decode(errors="replace")),
                                 (ref_rc, ref_err.decode(errors="replace")), args)

    def test_missing_configuration(self):
        for args in CONFIG_CASES:
            with self.subTest(args=args):
                ref_rc, ref_err = run(REF, args)
                our_rc, our_err = run(OURS, args)
                self.assertNotEqual(ref_rc, 0)
                self.assertNotEqual(our_rc, 0)
                self.assertEqual(our_err.decode(errors="replace"), ref_err.decode(errors="replace"), args)

    def test_help_and_version(self):
        rc, err = run(OURS, ["--help"])
        ref_rc, ref_err = run(REF, ["--help"])
        # The reference's text, then ours: authentication (issue 13) and
        # the servers that work (issue 12).
        self.assertEqual(rc, ref_rc)
        self.assertEqual(err[:len(ref_err)], ref_err)
        self.assertIn(b"password-command = CMD", err[len(ref_err):])
        self.assertIn(b"change-tracking = auto|qresync|condstore|plain", err[len(ref_err):])
        r = subprocess.run([OURS, "--version"], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout.decode(), r"^interimap version \d+\.\d+\.\d+\n$")


if __name__ == "__main__":
    unittest.main(verbosity=2)
