"""One scrub list: a secret sent to the API reaches none of the four backends, nor stdout."""

from __future__ import annotations

import json
import uuid

import boto3

from cruddur.telemetry.scrub import is_sensitive, scrub_url


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
    ]:
        assert is_sensitive(name), name
    for name in ["message", "ttl", "user_receiver_handle", "term", "http.method", "app.result_length", "handle"]:
        assert not is_sensitive(name), name


def test_urls_lose_sensitive_parameters_and_credentials():
    assert scrub_url("https://user:pw@example.test/a?term=fun&token=abc") == (
        "https://[REDACTED]@example.test/a?term=fun&token=[REDACTED]"
    )
    assert scrub_url("/api/activities/search?term=fun") == "/api/activities/search?term=fun"


def test_a_canary_secret_reaches_no_backend_and_no_stdout(
    make_app, aws, rollbar_api, otlp_receiver, xray_daemon, monkeypatch, capsys
):
    canary = f"canary-{uuid.uuid4().hex}"
    group = f"cruddur-{uuid.uuid4().hex[:8]}"
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
    client.set_cookie("session", canary)
    headers = {"Authorization": f"Bearer {canary}", "X-Api-Key": canary}
    body = {"message": "hello", "ttl": "1-day", "password": canary, "token": canary}

    assert client.post("/api/activities", json=body, headers=headers).status_code == 200
    assert client.get(f"/api/activities/search?term=hello&access_token={canary}", headers=headers).status_code == 200

    def broken(*args):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(app.extensions["cruddur"].deps.store, "create_activity", broken)
    assert client.post(f"/api/activities?api_key={canary}", json=body, headers=headers).status_code == 500
    app.extensions["cruddur"].telemetry.shutdown()

    otlp_bytes = b"".join(export.raw for export in otlp_receiver.exports)
    xray_documents = json.dumps(xray_daemon.documents)
    rollbar_bodies = b"".join(request.body for request in rollbar_api.requests)
    logs = boto3.client("logs")
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    cloudwatch_messages = json.dumps(
        [logs.get_log_events(logGroupName=group, logStreamName=s["logStreamName"])["events"] for s in streams]
    )
    stdout = capsys.readouterr().out

    assert otlp_receiver.spans() and xray_daemon.documents and rollbar_api.requests and streams, "each backend got data"
    assert canary.encode() not in otlp_bytes
    assert canary not in xray_documents
    assert canary.encode() not in rollbar_bodies
    assert canary not in cloudwatch_messages
    assert canary not in stdout
    rollbar_request = json.loads(rollbar_api.requests[-1].body)["data"]["request"]
    assert rollbar_request["headers"]["Authorization"] == "[REDACTED]"
    # The URL is kept (as url.path and url.query, today's HTTP conventions), the secret in it is not.
    assert b"/api/activities/search" in otlp_bytes and b"term=hello&access_token=[REDACTED]" in otlp_bytes
