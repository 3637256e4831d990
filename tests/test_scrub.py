"""One scrub list: a secret sent to the API reaches none of the four backends, nor stdout."""

from __future__ import annotations

import io
import json
import re
import uuid

import flask

from cruddur.telemetry.scrub import is_sensitive, scrub_text, scrub_url
from tests.support.cloudwatch import log_messages


def test_the_scrub_list_names():
    for name in [
        "Authorization",
        "Cookie",
        "Set-Cookie",
        "password",
        "client_secret",
        "X-Api-Key",
        "api_key",
        "access_token",
        "AWS_SESSION_TOKEN",
        "sessionid",
        "x-honeycomb-team",
        "HONEYCOMB_API_KEY",
        "mytoken",
        "x-amz-security-token",
        "X-Amz-Credential",
        "X-Amz-Signature",
        "signature",
        "sig",
        "code",
        "Code",
        "otp",
        "jwt",
        "id_jwt",
        "credential",
    ]:
        assert is_sensitive(name), name
    for name in [
        "message",
        "ttl",
        "user_receiver_handle",
        "term",
        "http.method",
        "app.result_length",
        "handle",
        "status_code",
        "http.response.status_code",
        "zipcode",
        "design",
        "signal",
        "hotplug",
    ]:
        assert not is_sensitive(name), name


def test_urls_lose_sensitive_parameters_and_credentials():
    assert scrub_url("https://user:pw@example.test/a?term=fun&token=abc") == (
        "https://[REDACTED]@example.test/a?term=fun&token=[REDACTED]"
    )
    assert scrub_url("/api/activities/search?term=fun") == "/api/activities/search?term=fun"


def test_free_text_loses_sensitive_pairs_url_credentials_and_the_given_secrets():
    text = "GET https://api.example.test/v1?status_code=500&x-amz-security-token=abc123 as bob:pw@ nope"
    assert scrub_text(text) == (
        "GET https://api.example.test/v1?status_code=500&x-amz-security-token=[REDACTED] as bob:pw@ nope"
    )
    assert scrub_text("dsn postgresql://app:hunter22@db.internal/cruddur") == (
        "dsn postgresql://[REDACTED]@db.internal/cruddur"
    )
    assert scrub_text("refused fake-value-0042 twice", ("fake-value-0042",)) == "refused [REDACTED] twice"


def test_a_canary_secret_reaches_no_backend_and_no_stdout(
    make_app, aws, rollbar_api, otlp_receiver, xray_daemon, monkeypatch, capsys
):
    """Every path a secret comes in by: query parameters under any name the list matches, headers
    (also when OpenTelemetry's standard settings capture them all), the body, cookies, and an
    exception message that quotes them. Each value is the canary plus where it came from."""
    canary = f"canary-{uuid.uuid4().hex}"
    group = f"cruddur-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", ".*")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", ".*")
    app = make_app(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url,
            "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address,
            "CLOUDWATCH_LOG_GROUP": group,
            "ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-0006",
            "ROLLBAR_ENDPOINT": rollbar_api.endpoint,
        }
    )
    client = app.test_client()
    client.set_cookie("session", f"{canary}-cookie-session")
    client.set_cookie("prefs", f"{canary}-cookie-prefs")
    headers = {
        "Authorization": f"Bearer {canary}-header-authorization",
        "X-Api-Key": f"{canary}-header-x-api-key",
        "X-Amz-Security-Token": f"{canary}-header-x-amz-security-token",
        "X-Session-Id": f"{canary}-header-x-session-id",
    }
    query = "&".join(
        f"{name}={canary}-query-{name}"
        for name in (
            "mytoken",
            "x-amz-security-token",
            "code",
            "sig",
            "X-Amz-Signature",
            "X-Amz-Credential",
            "id_jwt",
            "otp",
            "client_secret",
            "access_token",
            "api_key",
        )
    )
    body = {
        "message": "hello",
        "ttl": "1-day",
        "password": f"{canary}-body-password",
        "token": f"{canary}-body-token",
        "auth": {"code": f"{canary}-body-auth-code", "factors": [{"otp": f"{canary}-body-otp"}]},
    }

    assert client.post("/api/activities", json=body, headers=headers).status_code == 200
    search = client.get(f"/api/activities/search?term=hello&status_code=200&{query}", headers=headers)
    assert search.status_code == 200

    def broken(*args):
        # What a failing call says: the URL it was given, a value from the body, its own DSN.
        try:
            raise KeyError(f"session {flask.request.cookies['session']}")
        except KeyError:
            raise RuntimeError(
                f"upstream refused {flask.request.url} with password {flask.request.get_json()['password']} "
                f"via postgresql://cruddur:{canary}-dsn@db.internal/cruddur"
            ) from None

    monkeypatch.setattr(app.extensions["cruddur"].deps.store, "create_activity", broken)
    failed = client.post(f"/api/activities?term=fun&{query}", json=body, headers=headers)
    assert failed.status_code == 500
    app.extensions["cruddur"].telemetry.shutdown()

    otlp_bytes = b"".join(export.raw for export in otlp_receiver.exports)
    xray_documents = json.dumps(xray_daemon.documents)
    rollbar_bodies = b"".join(request.body for request in rollbar_api.requests)
    cloudwatch_messages = log_messages(group)
    stdout = capsys.readouterr().out

    assert otlp_receiver.spans() and xray_daemon.documents and rollbar_api.requests and cloudwatch_messages, (
        "each backend got data"
    )
    leaks = {
        "OTLP": re.findall(rf"{canary}-[a-z-]+", otlp_bytes.decode("utf-8", "replace")),
        "X-Ray": re.findall(rf"{canary}-[a-z-]+", xray_documents),
        "Rollbar": re.findall(rf"{canary}-[a-z-]+", rollbar_bodies.decode("utf-8", "replace")),
        "CloudWatch": re.findall(rf"{canary}-[a-z-]+", json.dumps(cloudwatch_messages)),
        "stdout": re.findall(rf"{canary}-[a-z-]+", stdout),
    }
    assert leaks == {backend: [] for backend in leaks}

    # What is kept around the secrets, so the test cannot pass by sending nothing.
    rollbar_data = json.loads(rollbar_api.requests[-1].body)["data"]
    assert rollbar_data["request"]["headers"]["Authorization"] == "[REDACTED]"
    assert "mytoken=" in rollbar_data["request"]["url"] and "term=fun" in rollbar_data["request"]["url"]
    refused, session = (trace["exception"]["message"] for trace in rollbar_data["body"]["trace_chain"])
    assert refused.startswith("upstream refused http://localhost/api/activities?term=fun&mytoken=")
    assert session == "'session [REDACTED]'", "the exception it was raised while handling is scrubbed too"
    # The URL is kept (as url.path and url.query, today's HTTP conventions), the secrets in it are not.
    assert b"/api/activities/search" in otlp_bytes and b"term=hello&status_code=200&mytoken=[REDACTED]" in otlp_bytes
    assert b"http.request.header.user_agent" in otlp_bytes and b"http.request.header.x_api_key" in otlp_bytes
    assert b"upstream refused http://localhost/api/activities?term=fun&mytoken=[REDACTED]" in otlp_bytes
    assert "upstream refused" in xray_documents and "upstream refused" in stdout


class GoneClient(io.RawIOBase):
    """A request body whose client went away: every read fails."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        raise OSError("the client went away")


def test_a_failure_whose_body_cannot_be_read_is_still_reported_once(make_app, rollbar_api, monkeypatch):
    """Looking for the request's secrets reads its body; a body that cannot be read has none, and
    the failure is answered and reported as any other."""
    app = make_app({"ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-0008", "ROLLBAR_ENDPOINT": rollbar_api.endpoint})

    def broken(*args):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(app.extensions["cruddur"].deps.store, "home_activities", broken)
    gone = {"wsgi.input": GoneClient(), "CONTENT_LENGTH": "20", "CONTENT_TYPE": "application/json"}
    response = app.test_client().get("/api/activities/home", environ_overrides=gone)
    app.extensions["cruddur"].telemetry.shutdown()
    assert response.status_code == 500 and response.get_json()["error"] == "internal_error"
    [item] = rollbar_api.requests
    assert item.json()["data"]["body"]["trace"]["exception"]["message"] == "the disk caught fire"
