"""Who is asking, for every request, before any route runs.

With Cognito configured: every POST, and every read of direct messages, needs
`Authorization: Bearer <token>`, verified by `cruddur.auth`; any other read without a token stays
public and acts as `CRUDDUR_USER_HANDLE` (as the week-2 frontend expects); a read *with* a token acts
as its user, and a token that fails is a 401 on any route but the health check, as RFC 6750 asks.
Without Cognito (development) every request acts as `CRUDDUR_USER_HANDLE` and tokens are ignored.
Refusals are the one error shape, with a `WWW-Authenticate: Bearer` challenge; the token itself is
never logged or recorded.
"""

from __future__ import annotations

import logging

from flask import Flask, request

from cruddur.api.common import ApiError, deps, set_request_user
from cruddur.auth import AuthSettings, CognitoVerifier, TokenRefused
from cruddur.services.users import ensure_user
from cruddur.telemetry import Telemetry
from cruddur.telemetry.enduser import EndUser

log = logging.getLogger(__name__)

REALM = "cruddur"
#: Endpoints that never look at a token: load balancers and orchestrators call the health check.
PUBLIC_ENDPOINTS = frozenset({"health.health"})
#: Reads of one user's direct messages: without a token they would be `CRUDDUR_USER_HANDLE`'s, shown
#: to anyone who asks. The course's own API answers them 401 without a token too.
PRIVATE_READS = frozenset({"messages.groups", "messages.conversation"})
#: How many verified handles each process remembers as already having a user row.
KNOWN_USERS_LIMIT = 10_000

_MESSAGES = {
    "token_missing": "This request needs an Authorization: Bearer header with a Cognito access token.",
    "token_invalid": "The bearer token is not valid for this API.",
    "token_expired": "The bearer token has expired; sign in again (or refresh it) and retry.",
}
_DESCRIPTIONS = {
    "token_invalid": "The token is not valid for this API",
    "token_expired": "The token has expired",
}


class Unauthorized(ApiError):
    """401 with an RFC 6750 challenge: no error attribute when no token came, `invalid_token` otherwise."""

    def __init__(self, code: str) -> None:
        challenge = f'Bearer realm="{REALM}"'
        if code in _DESCRIPTIONS:
            challenge += f', error="invalid_token", error_description="{_DESCRIPTIONS[code]}"'
        super().__init__(401, code, _MESSAGES[code], {"WWW-Authenticate": challenge})


def bearer_token(header: str | None) -> str | None:
    """The credentials of an `Authorization: Bearer ...` header; None when it is absent or another scheme."""
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip()


class Authentication:
    """Per-app: sets each request's user (for the services and in every telemetry tool) or refuses it."""

    def __init__(self, app: Flask, settings: AuthSettings, telemetry: Telemetry) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.fallback = EndUser(id=settings.fallback_handle, handle=settings.fallback_handle)
        self.verifier = CognitoVerifier(settings.cognito) if settings.cognito is not None else None
        self._known_handles: set[str] = set()
        app.extensions["cruddur.auth"] = self
        app.before_request(self._identify)

    def _identify(self) -> None:
        if self.verifier is None:
            set_request_user(self.fallback)
            self.telemetry.identify(self.fallback)
            return
        if request.url_rule is None or request.endpoint in PUBLIC_ENDPOINTS:
            return  # no route (the 404 or 405 comes first), or one that never needs a user
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            if request.method == "POST" or request.endpoint in PRIVATE_READS:
                log.info("auth: %s %s refused: no bearer token", request.method, request.path)
                raise Unauthorized("token_missing")
            return
        try:
            identity = self.verifier.verify(token)
        except TokenRefused as refused:
            log.info("auth: %s %s refused a bearer token: %s", request.method, request.path, refused.reason)
            raise Unauthorized(refused.code) from None
        user = identity.user
        set_request_user(user)
        self.telemetry.identify(user)
        if user.handle not in self._known_handles:
            ensure_user(deps(), user.handle, identity.display_name)
            if len(self._known_handles) >= KNOWN_USERS_LIMIT:
                self._known_handles.clear()
            self._known_handles.add(user.handle)


def init_app(app: Flask, settings: AuthSettings, telemetry: Telemetry) -> Authentication:
    """Install the check after telemetry's hooks, so a refusal is traced and the user lands on the spans."""
    authentication = Authentication(app, settings, telemetry)
    log.info("%s", settings.describe())
    return authentication
