"""A stand-in OIDC provider (discovery and JWKS over loopback HTTP, in a
thread, with real keys) and ``hgext_luigi.wsgi.make_app`` served by wsgiref in
its own process: shared by the tests of tokens and of access control."""

import base64
import hashlib
import hmac
import http.server
import json
import os
import subprocess
import sys
import threading
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from conftest import free_port, stop_process, wait_http

AUDIENCE = "hg-test"
REALM = "hgext_luigi"
# the app's JWKS refetch cooldown for unknown key ids, short to keep tests fast
COOLDOWN = 1.0

APP = """\
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

from hgext_luigi.wsgi import make_app


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


app = make_app(sys.argv[1], refresh_cooldown=float(sys.argv[3]))
make_server("127.0.0.1", int(sys.argv[2]), app, handler_class=Quiet).serve_forever()
"""

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Provider:
    """An OIDC provider's public side: discovery document and JWKS, counting
    how often each is fetched."""

    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.keys = [self.jwk(RSAAlgorithm, self.rsa, "rsa-1", "RS256"),
                     self.jwk(ECAlgorithm, self.ec, "ec-1", "ES256")]
        self.fetches = {"discovery": 0, "jwks": 0}
        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def jwk(algorithm, private, kid, alg):
        key = algorithm.to_jwk(private.public_key(), as_dict=True)
        key.update(kid=kid, alg=alg, use="sig")
        return key

    def handler(self):
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/.well-known/openid-configuration":
                    provider.count("discovery")
                    self.reply({"issuer": provider.url, "jwks_uri": provider.url + "/jwks"})
                elif self.path == "/jwks":
                    provider.count("jwks")
                    with provider.lock:
                        self.reply({"keys": list(provider.keys)})
                else:
                    self.send_error(404)

            def reply(self, doc):
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Handler

    def count(self, what):
        with self.lock:
            self.fetches[what] += 1

    def jwks_fetches(self):
        with self.lock:
            return self.fetches["jwks"]

    def add_key(self, private, kid):
        with self.lock:
            self.keys.append(self.jwk(RSAAlgorithm, private, kid, "RS256"))

    def claims(self, **changes):
        now = int(time.time())
        claims = {"iss": self.url, "aud": AUDIENCE, "sub": "u-1234",
                  "preferred_username": "alice", "email": "alice@example.com",
                  "iat": now, "exp": now + 600}
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, alg="RS256", kid=None, key=None, **changes):
        key = key or (self.ec if alg == "ES256" else self.rsa)
        kid = kid or ("ec-1" if alg == "ES256" else "rsa-1")
        return jwt.encode(self.claims(**changes), key, algorithm=alg, headers={"kid": kid})

    def unsigned_token(self):
        """``alg: none``: what PyJWT would never verify, built by hand."""
        header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
        return "%s.%s." % (header, b64url(json.dumps(self.claims()).encode()))

    def key_confusion_token(self):
        """HS256 with the RSA public key (as published) as HMAC secret."""
        pem = self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        signing_input = "%s.%s" % (
            b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode()),
            b64url(json.dumps(self.claims()).encode()))
        mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
        return "%s.%s" % (signing_input, b64url(mac))

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class App:
    """``make_app`` of a repository served by wsgiref, in its own process."""

    def __init__(self, hg, repo):
        script = os.path.join(os.path.dirname(repo.path), "serve_oidc.py")
        with open(script, "w") as f:
            f.write(APP)
        self.port = free_port()
        self.url = "http://127.0.0.1:%d/" % self.port
        self.log = os.path.join(os.path.dirname(repo.path), "app-%d.log" % self.port)
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, script, repo.path, str(self.port), str(COOLDOWN)],
                env=hg.env, stdout=log, stderr=subprocess.STDOUT)
        wait_http(self.url, self.proc, "the OIDC app")

    def with_token(self, token, user="mallory"):
        """The URL with the token as basic-auth password, as hg sends it."""
        return "http://%s:%s@127.0.0.1:%d/" % (user, token, self.port)

    def stop(self):
        stop_process(self.proc)


