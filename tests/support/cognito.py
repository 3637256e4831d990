"""A stand-in Cognito user pool: an RSA key pair made here, its JWKS on a loopback URL, and tokens
shaped like the ones Cognito issues (claims as in AWS's "Understanding user pool JSON web tokens").

Keys are generated once per test session (2048-bit RSA takes a moment); every `FakeUserPool` gets
its own JWKS server, whose `requests` count the app's fetches.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.support.recording import RecordingServer

REGION = "us-east-1"
POOL_ID = "us-east-1_FakePool1"
OTHER_POOL_ID = "us-east-1_OtherPool2"
CLIENT_ID = "fakeclient0000000000000001"
OTHER_CLIENT_ID = "fakeclient0000000000000002"
KID = "fake-key-1"


@functools.cache
def private_key(name: str) -> rsa.RSAPrivateKey:
    """One RSA key per name for the whole session."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, str]:
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """`header.payload.` with no signature: what an `alg=none` forgery looks like."""
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."


def hs256_with_public_key(claims: dict[str, Any], key: rsa.RSAPrivateKey, kid: str) -> str:
    """The classic forgery: HS256 whose HMAC secret is the RSA public key (PEM), which anyone can get.

    PyJWT refuses to make one, so it is made by hand."""
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    head = unsigned({"alg": "HS256", "typ": "JWT", "kid": kid}, claims)[:-1]
    signature = hmac.new(pem, head.encode(), hashlib.sha256).digest()
    return f"{head}.{b64url(signature)}"


class FakeUserPool:
    """`settings` point the app at this pool; `token(...)` mints access (or `use="id"`) tokens."""

    def __init__(self, pool_id: str = POOL_ID, client_id: str = CLIENT_ID) -> None:
        self.pool_id = pool_id
        self.client_id = client_id
        self.key = private_key(pool_id)
        self.kid = KID
        self.server = RecordingServer(reply={"keys": [public_jwk(self.key, self.kid)]})
        self.jwks_url = f"{self.server.url}/{pool_id}/.well-known/jwks.json"

    @property
    def issuer(self) -> str:
        return f"https://cognito-idp.{REGION}.amazonaws.com/{self.pool_id}"

    @property
    def settings(self) -> dict[str, str]:
        return {
            "COGNITO_USER_POOL_ID": self.pool_id,
            "COGNITO_CLIENT_ID": self.client_id,
            "COGNITO_JWKS_URL": self.jwks_url,
        }

    @property
    def fetches(self) -> int:
        return len(self.server.requests)

    def claims(self, use: str = "access", username: str = "worf", **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        common = {
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.pool_id}/{username}")),
            "iss": self.issuer,
            "event_id": str(uuid.uuid4()),
            "token_use": use,
            "auth_time": now,
            "iat": now,
            "exp": now + 3600,
            "jti": str(uuid.uuid4()),
        }
        if use == "id":
            specific = {
                "aud": self.client_id,
                "cognito:username": username,
                "email": f"{username}@example.test",
                "email_verified": True,
                "origin_jti": str(uuid.uuid4()),
            }
        else:
            specific = {
                "client_id": self.client_id,
                "username": username,
                "scope": "aws.cognito.signin.user.admin",
                "origin_jti": str(uuid.uuid4()),
            }
        claims = {**common, **specific, **overrides}
        return {name: value for name, value in claims.items() if value is not None}

    def sign(self, claims: dict[str, Any], key: rsa.RSAPrivateKey | None = None, kid: str | None = None) -> str:
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid})

    def token(self, use: str = "access", username: str = "worf", **overrides: Any) -> str:
        return self.sign(self.claims(use, username, **overrides))

    def close(self) -> None:
        self.server.close()
