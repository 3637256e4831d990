"""Who is asking: Cognito tokens verified on every write, and the user in all four tools.

A stand-in user pool (`tests/support/cognito.py`) signs tokens with a key pair made here and serves
its JWKS on a loopback URL. What a client sees is checked (status, error body, `WWW-Authenticate`),
what the database holds afterwards, and what each telemetry backend's fake received.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
import uuid

import jwt
import psycopg
import pytest
from jwt import PyJWK
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from cruddur.auth import AuthSettings, SigningKeys
from cruddur.config import ConfigError, is_postgres_url
from tests.support.cloudwatch import log_records
from tests.support.cognito import (
    KID,
    OTHER_CLIENT_ID,
    OTHER_POOL_ID,
    b64url,
    hs256_with_public_key,
    private_key,
    public_jwk,
    unsigned,
)

CLOUD_IS_FUN = "68f126b0-1ceb-4a33-88be-d90fa7109eee"
WRITES = [
    ("/api/activities", {"message": "Today is a good day to post.", "ttl": "1-hour"}),
    (f"/api/activities/{CLOUD_IS_FUN}/reply", {"message": "Qapla'!"}),
    ("/api/messages", {"message": "Brother, no.", "user_receiver_handle": "lore"}),
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rows(database_url: str) -> dict[str, int]:
    """How many rows each table holds, in either store: a refused request must change none of them."""
    connect = psycopg.connect if is_postgres_url(database_url) else sqlite3.connect
    with connect(database_url) as connection:
        return {
            table: connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("users", "activities", "messages", "message_groups")
        }


def stdout_records(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


# --- writes need a valid token, and act as its user ---------------------------------------------------------


@pytest.mark.parametrize(("path", "body"), WRITES)
def test_every_write_acts_as_the_user_the_token_names(make_app, user_pool, path, body):
    client = make_app(user_pool.settings).test_client()
    response = client.post(path, json=body, headers=bearer(user_pool.token(username="worf")))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["handle"] == "worf"


@pytest.mark.parametrize(("path", "body"), WRITES)
def test_every_write_without_a_token_is_a_401_and_writes_nothing(make_app, user_pool, database_url, path, body):
    client = make_app(user_pool.settings).test_client()
    before = rows(database_url)
    for headers in ({}, {"Authorization": "Basic d29yZjpwcnVuZWp1aWNl"}):
        response = client.post(path, json=body, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="cruddur"'
        error = response.get_json()
        assert (error["error"], error["errors"], error["status"]) == ("token_missing", ["token_missing"], 401)
        assert error["trace_id"] and response.headers["X-Amzn-Trace-Id"]
    assert rows(database_url) == before


def test_a_new_user_is_created_on_first_sight_with_the_name_claim_as_display_name(make_app, user_pool):
    client = make_app(user_pool.settings).test_client()
    id_token = user_pool.token("id", username="jadzia", name="Jadzia Dax")
    posted = client.post("/api/activities", json={"message": "Hello", "ttl": "1-day"}, headers=bearer(id_token))
    assert posted.status_code == 200
    assert (posted.get_json()["handle"], posted.get_json()["display_name"]) == ("jadzia", "Jadzia Dax")
    access_token = user_pool.token(username="ezri")  # access tokens carry no name: the handle stands in
    posted = client.post("/api/activities", json={"message": "Hi", "ttl": "1-day"}, headers=bearer(access_token))
    assert (posted.get_json()["handle"], posted.get_json()["display_name"]) == ("ezri", "ezri")
    assert [a["handle"] for a in client.get("/api/activities/@jadzia").get_json()] == ["jadzia"]
    renamed = user_pool.token("id", username="jadzia", name="Someone Else")
    again = client.post("/api/activities", json={"message": "Again", "ttl": "1-day"}, headers=bearer(renamed))
    assert again.get_json()["display_name"] == "Jadzia Dax", "first sight creates; later tokens change nothing"


def test_reads_stay_public_and_a_token_makes_them_the_users_own(make_app, user_pool):
    client = make_app(user_pool.settings).test_client()
    assert client.get("/api/activities/home").status_code == 200
    assert client.get("/api/activities/notifications").status_code == 200
    lores = client.get("/api/message_groups", headers=bearer(user_pool.token(username="lore"))).get_json()
    assert [group["handle"] for group in lores] == ["andrewbrown"]
    conversation = client.get("/api/messages/@andrewbrown", headers=bearer(user_pool.token(username="lore")))
    assert {message["handle"] for message in conversation.get_json()} == {"lore", "andrewbrown"}


@pytest.mark.parametrize("path", ["/api/message_groups", "/api/messages/@bayko"])
def test_direct_messages_are_read_only_with_a_token(make_app, user_pool, path):
    """Without one they were CRUDDUR_USER_HANDLE's conversations, shown to anyone who asked."""
    client = make_app(user_pool.settings).test_client()
    response = client.get(path)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="cruddur"'
    assert response.get_json()["error"] == "token_missing"
    assert client.get(path, headers=bearer(user_pool.token(username="bayko"))).status_code == 200


def test_each_request_acts_for_its_own_user(make_app, user_pool):
    client = make_app(user_pool.settings).test_client()
    for name in ("worf", "garek", "worf"):
        sent = client.post(
            "/api/messages",
            json={"message": f"from {name}", "user_receiver_handle": "bayko"},
            headers=bearer(user_pool.token(username=name)),
        )
        assert sent.get_json()["handle"] == name
    baykos = client.get("/api/message_groups", headers=bearer(user_pool.token(username="bayko"))).get_json()
    assert {group["handle"] for group in baykos} == {"worf", "garek", "andrewbrown"}


# --- every forgery and every wrong token: 401, and nothing written -------------------------------------------


def _tampered(token: str, **changes: object) -> str:
    """The same header and signature over a changed payload."""
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return ".".join([head, b64url(json.dumps({**claims, **changes}).encode()), signature])


def _without(claims: dict, name: str) -> dict:
    return {key: value for key, value in claims.items() if key != name}


NOW = int(time.time())
REFUSED = {
    "expired": (lambda p: p.token(iat=NOW - 7200, exp=int(time.time()) - 120), "token_expired"),
    "not yet valid (nbf)": (lambda p: p.token(nbf=int(time.time()) + 600), "token_invalid"),
    "issued in the future (iat)": (lambda p: p.token(iat=int(time.time()) + 600), "token_invalid"),
    "wrong issuer": (lambda p: p.token(iss="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Nobody9"), None),
    "issuer not https": (lambda p: p.token(iss=p.issuer.replace("https://", "http://")), None),
    "access token of another client": (lambda p: p.token(client_id=OTHER_CLIENT_ID), None),
    "id token of another client": (lambda p: p.token("id", aud=OTHER_CLIENT_ID), None),
    "id token without aud": (lambda p: p.token("id", aud=None), None),
    "refresh or unknown token_use": (lambda p: p.token(token_use="refresh"), None),
    "no token_use": (lambda p: p.sign(_without(p.claims(), "token_use")), None),
    "no exp": (lambda p: p.sign(_without(p.claims(), "exp")), None),
    "no username": (lambda p: p.sign(_without(p.claims(), "username")), None),
    "alg none": (lambda p: unsigned({"alg": "none", "typ": "JWT", "kid": KID}, p.claims()), None),
    "alg none, capitalised": (lambda p: unsigned({"alg": "None", "typ": "JWT", "kid": KID}, p.claims()), None),
    "HS256 signed with the public key": (lambda p: hs256_with_public_key(p.claims(), p.key, KID), None),
    "unknown kid": (lambda p: p.sign(p.claims(), kid="not-a-key-of-this-pool"), None),
    "no kid": (lambda p: jwt.encode(p.claims(), p.key, algorithm="RS256"), None),
    "tampered payload": (lambda p: _tampered(p.token(username="worf"), username="andrewbrown"), None),
    "tampered expiry": (lambda p: _tampered(p.token(exp=int(time.time()) - 60), exp=int(time.time()) + 3600), None),
    "signature cut off": (lambda p: p.token().rsplit(".", 1)[0] + ".", None),
    "another pool's token, same kid": (
        lambda p: p.sign(
            {**p.claims(), "iss": p.issuer.replace(p.pool_id, OTHER_POOL_ID)}, key=private_key(OTHER_POOL_ID)
        ),
        None,
    ),
    "another pool's key, this pool's claims": (lambda p: p.sign(p.claims(), key=private_key(OTHER_POOL_ID)), None),
    "not a JWT": (lambda p: "not-a-jwt", None),
    "empty": (lambda p: "", None),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_a_token_that_fails_any_check_is_a_401_and_nothing_is_written(make_app, user_pool, database_url, capsys, case):
    build, code = REFUSED[case]
    code = code or "token_invalid"
    token = build(user_pool)
    client = make_app(user_pool.settings).test_client()
    assert client.get("/api/activities/home", headers=bearer(user_pool.token())).status_code == 200, "keys loaded"
    before = rows(database_url)
    capsys.readouterr()
    for path, body in WRITES:
        response = client.post(path, json=body, headers=bearer(token))
        assert response.status_code == 401, (path, response.get_json())
        error = response.get_json()
        assert (error["error"], error["errors"]) == (code, [code])
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="cruddur", error="invalid_token", error_description="')
    assert client.get("/api/activities/home", headers=bearer(token)).status_code == 401, "a bad token on a read too"
    assert rows(database_url) == before
    if token:
        assert token not in capsys.readouterr().out, "the token is never logged"


def test_the_keys_are_fetched_once_on_first_need_and_not_at_start_up(make_app, user_pool):
    client = make_app(user_pool.settings).test_client()
    assert user_pool.fetches == 0, "start-up does not wait on the network"
    for name in ("worf", "garek", "lore", "worf"):
        response = client.post(
            "/api/activities", json={"message": "m", "ttl": "1-hour"}, headers=bearer(user_pool.token(username=name))
        )
        assert response.status_code == 200
    assert user_pool.fetches == 1


def test_unknown_key_ids_fetch_the_keys_at_most_once_a_minute(make_app, user_pool):
    client = make_app(user_pool.settings).test_client()
    forged = user_pool.sign(user_pool.claims(), kid="rotated-or-forged")
    for _ in range(20):
        assert client.post("/api/activities", json={}, headers=bearer(forged)).status_code == 401
    assert user_pool.fetches == 1, "the first unknown kid fetches the keys; the next ones wait for the minute"
    assert client.post("/api/activities", json={}, headers=bearer(user_pool.token())).status_code == 422
    assert user_pool.fetches == 1, "the pool's own key was among those fetched"


@pytest.mark.parametrize("failure", ["500", "redirect", "not JSON", "no keys", "HS256 key only", "refused", "hang"])
def test_an_unreachable_key_endpoint_is_a_401_never_a_500_or_a_hang(make_app, user_pool, database_url, failure):
    client = make_app(user_pool.settings).test_client()
    server = user_pool.server
    if failure == "500":
        server.status = 500
    elif failure == "redirect":
        server.status = 302  # with the real key set as its body: still not where the keys are
    elif failure == "HS256 key only":
        server.reply = {"keys": [{"kty": "oct", "kid": KID, "alg": "HS256", "k": b64url(b"public-secret")}]}
    elif failure == "not JSON":
        server.reply = ["not", "a", "key", "set"]
    elif failure == "no keys":
        server.reply = {"keys": []}
    elif failure == "refused":
        server.close()
    else:
        server.hang = True  # the fetch gives up after its short timeout
    before = rows(database_url)
    for _ in range(3):
        response = client.post(
            "/api/activities", json={"message": "m", "ttl": "1-hour"}, headers=bearer(user_pool.token())
        )
        assert response.status_code == 401
        assert response.get_json()["error"] == "token_invalid"
    assert user_pool.fetches <= 1, "a failed fetch is not retried on every request"
    assert rows(database_url) == before


def test_a_refresh_in_flight_holds_up_no_request_whose_key_is_known(make_app, user_pool):
    """A token with a known key is verified from memory while another request waits on the key endpoint."""
    app = make_app(user_pool.settings)
    client = app.test_client()
    verifier = app.extensions["cruddur.auth"].verifier
    release = threading.Event()
    fetching = threading.Event()
    known = {KID: None}

    def slow_fetch(url: str):
        fetching.set()
        release.wait(30)
        return known

    verifier.keys = SigningKeys(user_pool.jwks_url, fetch=slow_fetch, interval=0)
    known[KID] = PyJWK(public_jwk(user_pool.key, KID))
    release.set()
    assert client.get("/api/activities/home", headers=bearer(user_pool.token())).status_code == 200
    release.clear()
    fetching.clear()
    stuck = {}
    thread = threading.Thread(
        target=lambda: stuck.update(
            response=client.post(
                "/api/activities", json={}, headers=bearer(user_pool.sign(user_pool.claims(), kid="new"))
            )
        )
    )
    thread.start()
    assert fetching.wait(10)
    response = client.post(
        "/api/activities", json={"message": "not held up", "ttl": "1-hour"}, headers=bearer(user_pool.token())
    )
    assert response.status_code == 200
    assert thread.is_alive(), "the other request is still waiting for its key"
    release.set()
    thread.join(10)
    assert stuck["response"].status_code == 401


def test_signing_keys_refresh_for_a_rotated_key_once_a_minute_and_keep_known_keys_through_failures():
    clock = [1000.0]
    first, second = private_key("rotation-1"), private_key("rotation-2")
    published = {"k1": PyJWK(public_jwk(first, "k1"))}
    calls = []

    def fetch(url: str):
        calls.append(clock[0])
        if published is None:
            raise ConnectionError("unreachable")
        return dict(published)

    keys = SigningKeys("https://example.test/jwks.json", fetch=fetch, clock=lambda: clock[0])
    assert keys.get("k1") is not None and len(calls) == 1, "fetched on first need"
    published["k2"] = PyJWK(public_jwk(second, "k2"))
    clock[0] += 30
    assert keys.get("k2") is None and len(calls) == 1, "within a minute of the last fetch: none"
    clock[0] += 31
    assert keys.get("k2") is not None and len(calls) == 2, "a minute on: refreshed, the rotated key is found"
    assert keys.get("k1") is not None and keys.get("k2") is not None and len(calls) == 2, "known keys: no fetch"
    published = None
    clock[0] += 61
    assert keys.get("k3") is None and len(calls) == 3
    assert keys.get("k1") is not None and keys.get("k2") is not None, "a failed refresh keeps the known keys"
    clock[0] += 59
    assert keys.get("k3") is None and len(calls) == 3, "a failed fetch also waits its minute"


# --- start-up -----------------------------------------------------------------------------------------------


def test_without_cognito_development_acts_as_the_configured_user_and_says_so(make_app, capsys):
    capsys.readouterr()
    client = make_app({"CRUDDUR_USER_HANDLE": "worf"}).test_client()
    lines = [r["message"] for r in stdout_records(capsys) if r["message"].startswith("auth:")]
    assert lines == [
        "auth: off (no COGNITO_USER_POOL_ID and COGNITO_CLIENT_ID): every request acts as 'worf' "
        "(CRUDDUR_USER_HANDLE), without a token"
    ]
    posted = client.post("/api/activities", json={"message": "m", "ttl": "1-hour"}, headers=bearer("anything"))
    assert posted.status_code == 200 and posted.get_json()["handle"] == "worf"


def test_with_cognito_start_up_names_the_pool_in_one_line(make_app, user_pool, capsys):
    capsys.readouterr()
    make_app(user_pool.settings)
    lines = [r["message"] for r in stdout_records(capsys) if r["message"].startswith("auth:")]
    assert len(lines) == 1 and user_pool.pool_id in lines[0] and "every POST needs a bearer token" in lines[0]


def test_production_refuses_to_start_without_cognito_unless_auth_is_explicitly_off(make_app, capsys):
    with pytest.raises(ConfigError, match="CRUDDUR_AUTH=off"):
        make_app({"CRUDDUR_ENVIRONMENT": "production"})
    capsys.readouterr()
    client = make_app({"CRUDDUR_ENVIRONMENT": "production", "CRUDDUR_AUTH": "off"}).test_client()
    assert any(r["message"].startswith("auth: off (CRUDDUR_AUTH=off)") for r in stdout_records(capsys))
    assert client.post("/api/activities", json={"message": "m", "ttl": "1-hour"}).status_code == 200


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"COGNITO_USER_POOL_ID": "us-east-1_AbC123"}, "go together"),
        ({"COGNITO_CLIENT_ID": "abc"}, "go together"),
        ({"CRUDDUR_AUTH": "on"}, "CRUDDUR_AUTH=on needs"),
        ({"CRUDDUR_AUTH": "maybe"}, "not a boolean"),
        ({"COGNITO_USER_POOL_ID": "not a pool", "COGNITO_CLIENT_ID": "abc"}, "not a user pool id"),
        ({"COGNITO_USER_POOL_ID": "Local_AbC123", "COGNITO_CLIENT_ID": "abc"}, "set AWS_REGION"),
        (
            {"COGNITO_USER_POOL_ID": "us-east-1_AbC123", "COGNITO_CLIENT_ID": "a", "COGNITO_JWKS_URL": "file:///x"},
            "http",
        ),
    ],
)
def test_half_or_wrong_auth_settings_refuse_to_start(environ, message):
    with pytest.raises(ConfigError, match=message):
        AuthSettings.from_environ(environ, "development", "andrewbrown")


def test_the_pool_id_names_the_region_of_the_issuer_and_the_key_set():
    settings = AuthSettings.from_environ(
        {"COGNITO_USER_POOL_ID": "eu-west-1_AbC123", "COGNITO_CLIENT_ID": "abc", "AWS_REGION": "us-east-1"},
        "production",
        "andrewbrown",
    ).cognito
    assert settings.issuer == "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"
    assert settings.jwks_url == "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123/.well-known/jwks.json"


def test_a_browser_may_send_the_authorization_header_and_read_the_challenge(make_app, user_pool):
    client = make_app({**user_pool.settings, "FRONTEND_URL": "https://3000-cruddur.example.test"}).test_client()
    origin = {"Origin": "https://3000-cruddur.example.test"}
    preflight = client.options(
        "/api/activities",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200, "the preflight itself carries no token and needs none"
    allowed = {h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {"authorization", "content-type"}
    refused = client.post("/api/activities", json={}, headers=origin)
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == origin["Origin"]
    assert "www-authenticate" in refused.headers["Access-Control-Expose-Headers"].lower()


# --- the user in all four tools, and the token in none ------------------------------------------------------


def _attributes(span) -> dict[str, object]:
    return {kv.key: kv.value.string_value or kv.value.int_value for kv in span.attributes}


def test_the_user_is_in_all_four_tools_and_the_token_in_none(
    make_app, user_pool, aws, rollbar_api, otlp_receiver, xray_daemon, capsys
):
    group = f"cruddur-{uuid.uuid4().hex[:8]}"
    app = make_app(
        {
            **user_pool.settings,
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url,
            "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address,
            "CLOUDWATCH_LOG_GROUP": group,
            "ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-0014",
            "ROLLBAR_ENDPOINT": rollbar_api.endpoint,
        }
    )
    client = app.test_client()
    token = user_pool.token("id", username="jadzia", name="Jadzia Dax", email="jadzia@example.test")
    sub = user_pool.claims("id", username="jadzia")["sub"]
    # The keys are fetched (and that logged, before anyone is identified) by an earlier request.
    assert client.get("/api/activities/home", headers=bearer(token)).status_code == 200
    earlier = capsys.readouterr().out
    posted = client.post("/api/activities", json={"message": "Hello", "ttl": "1-day"}, headers=bearer(token))
    assert posted.status_code == 200
    assert client.get("/rollbar/test", headers=bearer(token)).status_code == 200
    trace_ids = {
        response.headers["X-Amzn-Trace-Id"].split(";")[0].removeprefix("Root=1-").replace("-", "")
        for response in (posted,)
    }
    app.extensions["cruddur"].telemetry.shutdown()

    server_spans = [
        span for export in otlp_receiver.exports for span in export.spans() if span.kind == ProtoSpan.SPAN_KIND_SERVER
    ]
    assert len(server_spans) == 3
    for span in server_spans:
        attributes = _attributes(span)
        assert (attributes["enduser.id"], attributes["app.user_handle"]) == (sub, "jadzia")

    segments = [s for s in xray_daemon.wait_for_segments(3) if "user" in s]
    assert len(segments) == 3
    for segment in segments:
        assert segment["user"] == sub
        assert segment["annotations"]["app_user_handle"] == "jadzia"

    [item] = rollbar_api.wait_for(1)
    assert item.json()["data"]["person"] == {"id": sub, "username": "jadzia"}

    stdout = capsys.readouterr().out
    request_lines = [json.loads(line) for line in stdout.splitlines() if '"trace_id"' in line]
    posted_lines = [line for line in request_lines if line["trace_id"] in trace_ids]
    assert posted_lines and all(line["user_id"] == sub for line in posted_lines)
    assert {line["logger"] for line in posted_lines} >= {"cruddur.access"}
    events = log_records(group)
    cloudwatch_lines = [event for event in events if event.get("trace_id") in trace_ids]
    assert cloudwatch_lines and all(event["user_id"] == sub for event in cloudwatch_lines)

    signature = token.rsplit(".", 1)[1]
    everything = {
        "OTLP": b"".join(export.raw for export in otlp_receiver.exports).decode("latin-1"),
        "X-Ray": json.dumps(xray_daemon.documents),
        "Rollbar": b"".join(request.body for request in rollbar_api.requests).decode(),
        "CloudWatch": json.dumps(events),
        "stdout": earlier + stdout,
    }
    for tool, payload in everything.items():
        assert token not in payload and signature not in payload, f"the token reached {tool}"
        assert "jadzia@example.test" not in payload, f"the email reached {tool}"


def test_a_request_without_a_token_names_no_user_in_any_tool(make_app, user_pool, span_exporter, capsys):
    app = make_app({**user_pool.settings, "TELEMETRY_SPAN_EXPORTER": span_exporter})
    capsys.readouterr()
    assert app.test_client().get("/api/activities/home").status_code == 200
    [server] = [span for span in span_exporter.get_finished_spans() if span.name.startswith("GET")]
    assert "enduser.id" not in server.attributes
    assert all("user_id" not in record for record in stdout_records(capsys))
