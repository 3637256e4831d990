"""Who is asking: Amazon Cognito tokens, verified with PyJWT against the user pool's public keys.

AWS's verification steps (developer guide, "Verifying a JSON web token"): the token is a JWT
signed with RS256 by one of the pool's keys (found by `kid` in the pool's JWKS); `iss` is the
pool; `exp` has not passed; `token_use` is `access` (its `client_id` is our app client) or `id`
(its `aud` is our app client). Any other algorithm, `none` included, is refused before a key is
looked up, and the key object fixes the algorithm PyJWT verifies with, so an HS256 token "signed"
with the public key cannot pass.

The keys are fetched once, on the first token that needs them, and kept. A `kid` that is not
among them (Cognito rotated its keys, or a forgery) refreshes them at most once a minute with a
short timeout; requests whose key is known never wait for the network. An unreachable endpoint
refuses the new key's tokens (401) and keeps the known keys.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import requests
from jwt import PyJWK, PyJWKSet

from cruddur.config import ConfigError, flag
from cruddur.telemetry.enduser import EndUser

log = logging.getLogger(__name__)

#: Seconds of clock difference forgiven when checking `exp`, `nbf` and `iat`.
LEEWAY_SECONDS = 30
#: The least time between two fetches of the key set, successful or not.
REFRESH_INTERVAL_SECONDS = 60.0
#: Connect and read timeout of one fetch of the key set.
JWKS_TIMEOUT_SECONDS = 2.0
#: A key set is a few hundred bytes; anything this large is not one.
MAX_JWKS_BYTES = 256 * 1024
ALGORITHM = "RS256"

_POOL_REGION = re.compile(r"^(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)_[A-Za-z0-9]+$")


class TokenRefused(Exception):
    """A bearer token this API does not accept; `code` is the API error, `reason` is for the log."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Identity:
    """A verified token's user, and the display name a new user row gets (`name` claim, if any)."""

    user: EndUser
    display_name: str


@dataclass(frozen=True)
class CognitoSettings:
    user_pool_id: str
    client_id: str
    region: str
    jwks_url: str

    @property
    def issuer(self) -> str:
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.user_pool_id}"


@dataclass(frozen=True)
class AuthSettings:
    """Cognito's settings, or None when every request acts as `fallback_handle` (and why)."""

    cognito: CognitoSettings | None
    fallback_handle: str
    off_because: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], environment: str, fallback_handle: str) -> AuthSettings:
        """Refuses (ConfigError) half a configuration, and production without one unless CRUDDUR_AUTH=off."""
        wanted = flag(environ, "CRUDDUR_AUTH", True) if environ.get("CRUDDUR_AUTH", "").strip() else None
        pool_id = environ.get("COGNITO_USER_POOL_ID", "").strip()
        client_id = environ.get("COGNITO_CLIENT_ID", "").strip()
        if wanted is False:
            return cls(None, fallback_handle, "CRUDDUR_AUTH=off")
        if bool(pool_id) != bool(client_id):
            raise ConfigError("COGNITO_USER_POOL_ID and COGNITO_CLIENT_ID go together: set both, or neither")
        if not pool_id:
            if wanted:
                raise ConfigError("CRUDDUR_AUTH=on needs COGNITO_USER_POOL_ID and COGNITO_CLIENT_ID")
            if environment == "production":
                raise ConfigError(
                    "production needs COGNITO_USER_POOL_ID and COGNITO_CLIENT_ID, or CRUDDUR_AUTH=off to say "
                    "that every request may act as CRUDDUR_USER_HANDLE"
                )
            return cls(None, fallback_handle, "no COGNITO_USER_POOL_ID and COGNITO_CLIENT_ID")
        if not re.fullmatch(r"[A-Za-z0-9-]+_[A-Za-z0-9]+", pool_id):
            raise ConfigError(f"COGNITO_USER_POOL_ID={pool_id!r} is not a user pool id (like us-east-1_AbCdEf123)")
        region_match = _POOL_REGION.match(pool_id)
        region = (
            region_match.group("region")
            if region_match
            else (environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "").strip()
        )
        if not region:
            raise ConfigError(f"COGNITO_USER_POOL_ID={pool_id!r} names no region: set AWS_REGION")
        jwks_url = environ.get("COGNITO_JWKS_URL", "").strip()
        if jwks_url and not jwks_url.startswith(("https://", "http://")):
            raise ConfigError(f"COGNITO_JWKS_URL={jwks_url!r} must be an http(s) URL")
        default_url = f"https://cognito-idp.{region}.amazonaws.com/{pool_id}/.well-known/jwks.json"
        return cls(CognitoSettings(pool_id, client_id, region, jwks_url or default_url), fallback_handle)

    def describe(self) -> str:
        if self.cognito is None:
            return (
                f"auth: off ({self.off_because}): every request acts as {self.fallback_handle!r} "
                "(CRUDDUR_USER_HANDLE), without a token"
            )
        return (
            f"auth: Cognito user pool {self.cognito.user_pool_id} (app client {self.cognito.client_id}): "
            f"every POST needs a bearer token; reads without one act as {self.fallback_handle!r}"
        )


def fetch_jwks(url: str, timeout: float = JWKS_TIMEOUT_SECONDS) -> dict[str, PyJWK]:
    """The RS256 signing keys of a JWKS endpoint by `kid`; raises on any failure, within about 3 times `timeout`
    (`timeout` bounds each connect and read; the whole body must also arrive within twice `timeout`)."""
    deadline = time.monotonic() + 2 * timeout
    body = b""
    with requests.get(
        url, timeout=(timeout, timeout), allow_redirects=False, stream=True, headers={"Accept": "application/json"}
    ) as response:
        if response.status_code != 200:
            raise ValueError(f"the key set endpoint answered {response.status_code}")
        for chunk in response.iter_content(16 * 1024):
            body += chunk
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError(f"the key set is larger than {MAX_JWKS_BYTES} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError("the key set took too long to arrive")
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("the key set is not a JSON object")
    return {
        key.key_id: key
        for key in PyJWKSet.from_dict(data).keys
        if key.key_id
        and key.key_type == "RSA"
        and key.algorithm_name == ALGORITHM
        and key.public_key_use in ("sig", None)
    }


class SigningKeys:
    """The pool's public keys by `kid`: fetched on first need, refreshed at most once a minute.

    PyJWT's own `PyJWKClient` does not fit: it holds one lock across the HTTP call (every token,
    known key or not, waits for a refresh in flight), refetches the whole set when its cache
    lifespan ends, and its cooldown starts only after a *successful* fetch, so an unreachable
    endpoint is asked again on every request.
    """

    def __init__(
        self,
        url: str,
        fetch: Callable[[str], dict[str, PyJWK]] = fetch_jwks,
        interval: float = REFRESH_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._fetch = fetch
        self._interval = interval
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._last_fetch = -math.inf
        self._lock = threading.Lock()
        self.fetches = 0

    def get(self, kid: str) -> PyJWK | None:
        """The key, from memory when known; else after one refresh, if none happened this last minute."""
        key = self._keys.get(kid)
        if key is not None:
            return key
        # Only tokens whose key is unknown get here; they wait for a refresh in flight, never longer than it takes.
        if not self._lock.acquire(timeout=4 * JWKS_TIMEOUT_SECONDS):
            return None
        try:
            key = self._keys.get(kid)
            if key is not None or self._clock() - self._last_fetch < self._interval:
                return key
            self._last_fetch = self._clock()
            self.fetches += 1
            try:
                self._keys = {**self._keys, **self._fetch(self.url)}
            except Exception as error:  # any failure: keep the known keys, refuse this token
                log.warning("auth: cannot fetch the signing keys from %s (%s); next try in a minute", self.url, error)
                return None
            log.info("auth: %d signing keys from %s", len(self._keys), self.url)
            return self._keys.get(kid)
        finally:
            self._lock.release()


class CognitoVerifier:
    """Verifies a Cognito access or ID token for one user pool and app client."""

    def __init__(self, settings: CognitoSettings, keys: SigningKeys | None = None) -> None:
        self.settings = settings
        self.keys = keys or SigningKeys(settings.jwks_url)

    def verify(self, token: str) -> Identity:
        """The token's user, or `TokenRefused` saying why not (for the log; clients get the code only)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRefused("token_invalid", "not a JWT") from None
        if header.get("alg") != ALGORITHM:
            raise TokenRefused("token_invalid", "algorithm is not RS256")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRefused("token_invalid", "no key id (kid)")
        key = self.keys.get(kid)
        if key is None:
            raise TokenRefused("token_invalid", "signed with a key the user pool does not have (or it is out of reach)")
        claims = self._decode(token, key)
        return self._identity(claims)

    def _decode(self, token: str, key: PyJWK) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=self.settings.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "sub", "token_use"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused("token_expired", "expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRefused("token_invalid", "not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidIssuerError:
            raise TokenRefused("token_invalid", "issued by another user pool") from None
        except jwt.InvalidSignatureError:
            raise TokenRefused("token_invalid", "signature does not match") from None
        except jwt.PyJWTError as error:
            raise TokenRefused("token_invalid", f"{type(error).__name__}") from None

    def _identity(self, claims: dict[str, Any]) -> Identity:
        client_id = self.settings.client_id
        use = claims.get("token_use")
        if use == "access":
            if claims.get("client_id") != client_id:
                raise TokenRefused("token_invalid", "access token of another app client")
            handle = claims.get("username")
        elif use == "id":
            audience = claims.get("aud")
            if audience != client_id and not (isinstance(audience, list) and client_id in audience):
                raise TokenRefused("token_invalid", "ID token of another app client")
            handle = claims.get("cognito:username")
        else:
            raise TokenRefused("token_invalid", "token_use is neither access nor id")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip():
            raise TokenRefused("token_invalid", "no sub")
        if not isinstance(handle, str) or not handle.strip():
            raise TokenRefused("token_invalid", "no username")
        name = claims.get("name")
        display_name = name.strip() if isinstance(name, str) and name.strip() else handle
        return Identity(EndUser(id=sub, handle=handle), display_name)
