"""Stand-ins for the schedulers that sign their calls: our own RSA keys served as a JWKS over real HTTP (Google's
place), QStash tokens made with our own signing keys exactly as Upstash documents them, timestamped HMAC headers,
and the forged tokens an attacker would try."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from jobprocessor.triggers.timestamped_hmac import sign

QSTASH_CURRENT = "sig_CurrentKey0123456789abcdefgh"  # 32 characters, the shape of Upstash's keys
QSTASH_NEXT = "sig_NextKey0123456789abcdefghijk"
QSTASH_WRONG = "sig_WrongKey0123456789abcdefghij"
HMAC_SECRET = "hmac-secret-0123456789abcdef"
AUDIENCE = "https://jobs.example.test/process-pending"
EMAIL = "jobprocessor-tick@project.iam.gserviceaccount.com"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# --- RSA keys and the JWKS server ------------------------------------------------------------------------------------

class RsaKey:
    def __init__(self, kid: str, bits: int = 2048):
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        self.public = self.private.public_key()

    def jwk(self) -> dict:
        return {**RSAAlgorithm.to_jwk(self.public, as_dict=True), "kid": self.kid, "alg": "RS256", "use": "sig"}

    def public_pem(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class JwksServer:
    """Serves {"keys": [...]} over HTTP on loopback, with Cache-Control: max-age, as Google's URL does. Counts the
    requests; `down` answers 503; `close()` refuses connections."""

    def __init__(self, keys: list[RsaKey], max_age: int | None = 3600):
        self.keys, self.max_age, self.down, self.requests = list(keys), max_age, False, 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with outer.lock:
                    outer.requests += 1
                    down, document = outer.down, {"keys": [key.jwk() for key in outer.keys]}
                if down:
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if outer.max_age is not None:
                    self.send_header("Cache-Control", f"public, max-age={outer.max_age}, must-revalidate")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/oauth2/v3/certs"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def count(self) -> int:
        with self.lock:
            return self.requests

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# --- tokens -----------------------------------------------------------------------------------------------------------

def qstash_token(url: str, request_body: bytes = b"", key: str = QSTASH_CURRENT, now: float | None = None,
                 **overrides) -> str:
    """As https://upstash.com/docs/qstash/features/security shows: HS256, iss Upstash, sub the URL, a 5-minute life,
    jti, body = base64url SHA-256 of the body (with its padding)."""
    now = int(time.time() if now is None else now)
    claims = {"iss": "Upstash", "sub": url, "exp": now + 300, "nbf": now, "iat": now,
              "jti": "jwt_" + secrets.token_urlsafe(18),
              "body": base64.urlsafe_b64encode(hashlib.sha256(request_body).digest()).decode()}
    claims.update(overrides)
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(claims, key, algorithm="HS256", headers={"typ": "JWT"})


def google_claims(now: float | None = None, **overrides) -> dict:
    now = int(time.time() if now is None else now)
    claims = {"aud": AUDIENCE, "azp": "112233445566778899", "email": EMAIL, "email_verified": True,
              "exp": now + 3600, "iat": now, "iss": "https://accounts.google.com", "sub": "112233445566778899"}
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def google_token(key: RsaKey, kid: str | None = None, **overrides) -> str:
    return jwt.encode(google_claims(**overrides), key.private, algorithm="RS256",
                      headers={"kid": kid or key.kid, "typ": "JWT"})


def unsigned_token(header: dict, claims: dict, signature: bytes = b"") -> str:
    """A token no library would sign: for `alg: none` and other forgeries."""
    return ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(claims).encode()), b64url(signature)])


def hs256_with_public_key(key: RsaKey, claims: dict) -> str:
    """The algorithm-confusion forgery: HS256 "signed" with the RSA public key (PEM) as the HMAC secret, hoping the
    verifier passes that key to whatever algorithm the header names."""
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    mac = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(mac)


def hmac_headers(body: bytes = b"", timestamp: int | None = None, secret: str = HMAC_SECRET) -> dict:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {"X-Jobprocessor-Timestamp": ts, "X-Jobprocessor-Signature": sign(secret, ts, body)}
