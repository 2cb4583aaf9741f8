"""What test_auth*.py share: a Dovecot daemon with SCRAM hashes and
OAuth 2.0 (the oauth2 passdb asking a token-introspection server written
here), and the secrets every captured output is searched for.

    Introspection   RFC 7662-style token introspection over HTTP
                    (http.server in a thread): valid tokens -> user;
                    grant(token, user), revoke(token)
    AuthDovecot     make(tdir, introspection): a DovecotDaemon whose
                    passwd-file holds SCRAM-SHA-256 (alice), SCRAM-SHA-1
                    (bob) and PLAIN (carol) entries, with auth_mechanisms
                    plain login cram-md5 scram-sha-1 scram-sha-256
                    xoauth2 oauthbearer
    SECRETS         every password and token the tests use: none may
                    appear in any captured output (check_no_secret)
"""

import http.server
import json
import os
import subprocess
import threading
import urllib.parse

import harness as h

USERS = {"alice": "alice Pw-256", "bob": "bob Pw-sha1", "carol": "carol Pw-plain"}
SCHEMES = {"alice": "SCRAM-SHA-256", "bob": "SCRAM-SHA-1", "carol": None}
SECRETS = set(USERS.values())


def new_token(name):
    """A token-like secret, remembered in SECRETS."""
    token = f"ya29.{name}-" + os.urandom(12).hex()
    SECRETS.add(token)
    return token


class Introspection:
    """POST token=... -> {"active": true, "username": USER} for a granted
    token, {"active": false} otherwise.  `requests` counts the calls."""

    def __init__(self):
        self.valid = {}
        self.requests = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("ascii", "replace")
                token = urllib.parse.parse_qs(body).get("token", [""])[0]
                self._answer(token)

            def do_GET(self):
                query = urllib.parse.urlparse(self.path).query
                token = urllib.parse.parse_qs(query).get("token", [""])[0]
                auth = self.headers.get("Authorization") or ""
                if not token and auth.startswith("Bearer "):
                    token = auth[7:]
                self._answer(token)

            def _answer(self, token):
                with outer.lock:
                    outer.requests += 1
                    user = outer.valid.get(token)
                data = {"active": True, "username": user} if user else {"active": False}
                payload = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        h.at_cleanup(self.server.shutdown)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/introspect"

    def grant(self, token, user):
        with self.lock:
            self.valid[token] = user

    def revoke(self, token):
        with self.lock:
            self.valid.pop(token, None)


def make_dovecot(tdir, introspection, name="auth", **kwargs):
    """A DovecotDaemon (not started) for USERS with SCRAM hashes and the
    oauth2 passdb asking `introspection`."""
    oauth_conf = os.path.join(tdir.sub(name + "-oauth"), "oauth2.conf.ext")
    with open(oauth_conf, "w") as f:
        f.write("introspection_mode = post\n"
                f"introspection_url = {introspection.url}\n"
                "force_introspection = yes\n"
                "username_attribute = username\n"
                "active_attribute = active\n"
                "active_value = true\n")
    os.chmod(oauth_conf, 0o644)
    extra = ("auth_mechanisms = plain login cram-md5 scram-sha-1 scram-sha-256 xoauth2 oauthbearer\n"
             "passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
             f"  args = {oauth_conf}\n}}\n")
    d = h.DovecotDaemon(tdir, name, users=USERS, extra_conf=extra, **kwargs)
    # The passwd-file with SCRAM hashes (doveadm pw), as a server keeps them.
    lines = []
    with open(d.passwd) as f:
        for line in f:
            user, rest = line.split(":", 1)
            scheme = SCHEMES.get(user)
            if scheme:
                hashed = subprocess.run([h.which("doveadm") or "doveadm", "pw", "-s", scheme, "-p", USERS[user]],
                                        capture_output=True, text=True, check=True).stdout.strip()
                rest = hashed + rest[rest.index(":"):]
            lines.append(f"{user}:{rest}")
    with open(d.passwd, "w") as f:
        f.writelines(lines)
    return d


def check_no_secret(testcase, results):
    """No password or token of SECRETS in any captured output."""
    for r in results:
        text = r.out + r.err
        for secret in SECRETS:
            testcase.assertNotIn(secret, text, f"a secret in the output of {' '.join(r.argv)}")
