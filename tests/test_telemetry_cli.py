"""`flask telemetry status|check|spend` against the local fakes, healthy and broken."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cruddur.telemetry import spend
from cruddur.telemetry.settings import TelemetrySettings
from tests.support.cloudwatch import log_messages
from tests.support.recording import RecordingServer
from tests.support.server import free_port, run_in_backend
from tests.support.xray_daemon import FakeXRayDaemon

HONEYCOMB_KEY = "hcaik_fake_key_for_tests_0000wxyz"
AUTH_REPLY = {"team": {"name": "Cruddur", "slug": "cruddur"}, "environment": {"name": "dev", "slug": "dev"}}


@pytest.fixture
def honeycomb() -> RecordingServer:
    """Honeycomb's API: `/1/auth` says who the key is; `/v1/traces` takes spans."""
    server = RecordingServer(routes={"/1/auth": (200, AUTH_REPLY), "/v1/traces": (200, {})})
    yield server
    server.close()


@pytest.fixture
def daemon() -> FakeXRayDaemon:
    daemon = FakeXRayDaemon(tcp=True)
    yield daemon
    daemon.close()


def run(make_app, config: dict, *args: str):
    """The command in an app built for it, as `flask --app app telemetry ...` builds it."""
    result = make_app({"CRUDDUR_FOR_COMMAND": True, **config}).test_cli_runner().invoke(args=["telemetry", *args])
    return result, result.output


def last_json(output: str) -> dict:
    """The command's output is one JSON document and nothing else."""
    return json.loads(output)


def flask_command(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`flask --app app ...` in a shell, from backend-flask/, as a user types it."""
    return run_in_backend([str(Path(sys.executable).with_name("flask")), "--app", "app", *args], {**os.environ, **env})


def test_status_says_what_is_off_and_what_turns_it_on(make_app):
    result, output = run(make_app, {}, "status")
    assert result.exit_code == 0
    assert "OpenTelemetry: off (set HONEYCOMB_API_KEY" in output
    assert "AWS X-Ray: off (set AWS_XRAY_DAEMON_ADDRESS" in output
    assert "CloudWatch Logs: off (no AWS region: set AWS_REGION" in output
    assert "Rollbar: off (set ROLLBAR_ACCESS_TOKEN" in output
    assert "Sampling: every request" in output


def test_status_shows_where_each_tool_sends_without_secrets_or_network(make_app, aws, monkeypatch):
    config = {
        "HONEYCOMB_API_KEY": HONEYCOMB_KEY,
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        "CLOUDWATCH_LOG_GROUP": "cruddur-status",
        "CLOUDWATCH_LOG_RETENTION_DAYS": "14",
        "ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-9876",
        "ROLLBAR_ENVIRONMENT": "staging",
        "CRUDDUR_SAMPLING_RULE": "aws/json/xray.json",
    }
    app = make_app({"CRUDDUR_FOR_COMMAND": True, **config})

    def no_network(*args, **kwargs):
        raise AssertionError("status made a network call")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    result = app.test_cli_runner().invoke(args=["telemetry", "status", "--json"])
    assert result.exit_code == 0
    status = last_json(result.output)
    assert "https://api.honeycomb.io/v1/traces" in status["opentelemetry"] and "…wxyz" in status["opentelemetry"]
    assert "127.0.0.1:2000" in status["xray"]
    assert "'cruddur-status'" in status["cloudwatch"] and "14 days" in status["cloudwatch"]
    assert "'staging'" in status["rollbar"] and "…9876" in status["rollbar"]
    assert "Cruddur" in status["sampling"] and "10%" in status["sampling"]
    assert HONEYCOMB_KEY not in result.output and "fake-rollbar-token-9876" not in result.output


def healthy_config(honeycomb, daemon, rollbar_api) -> dict:
    return {
        "HONEYCOMB_API_KEY": HONEYCOMB_KEY,
        "HONEYCOMB_API_ENDPOINT": honeycomb.url,
        "AWS_XRAY_DAEMON_ADDRESS": daemon.address,
        "CLOUDWATCH_LOG_GROUP": "cruddur-check",
        "ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-1111",
        "ROLLBAR_ENDPOINT": rollbar_api.endpoint,
    }


def test_check_passes_against_healthy_fakes(make_app, aws, honeycomb, daemon, rollbar_api):
    result, output = run(make_app, healthy_config(honeycomb, daemon, rollbar_api), "check")
    assert result.exit_code == 0, output
    assert "team 'Cruddur', environment 'dev'" in output
    assert "sampling rules in the account: Cruddur, Default" in output
    assert "account 123456789012" in output
    assert "written to cruddur-check/" in output
    assert "accepted for environment 'development'" in output
    assert output.strip().endswith("All checks passed.")
    auth = [r for r in honeycomb.requests if r.path == "/1/auth"]
    assert auth[0].headers["x-honeycomb-team"] == HONEYCOMB_KEY
    assert [r.path for r in honeycomb.requests if r.method == "POST"] == ["/v1/traces"]
    assert any(doc.get("annotations", {}).get("check") for doc in daemon.wait_for_segments(1))
    [item] = rollbar_api.requests
    assert item.json()["data"]["environment"] == "development"


def test_check_json_report(make_app, aws, honeycomb, daemon, rollbar_api):
    result, output = run(make_app, healthy_config(honeycomb, daemon, rollbar_api), "check", "--json")
    report = last_json(output)
    assert result.exit_code == 0 and report["ok"] is True
    assert [tool["tool"] for tool in report["tools"]] == ["Honeycomb", "AWS X-Ray", "CloudWatch Logs", "Rollbar"]
    assert all(tool["state"] == "ok" for tool in report["tools"])


def test_a_new_users_bad_day_on_one_screen(make_app, aws, rollbar_api):
    """A wrong Honeycomb key, a stopped daemon and a valid Rollbar token: what works, what does not, what to change."""
    wrong_key = RecordingServer(routes={"/1/auth": (401, {"error": "unknown API key"})})
    try:
        config = {
            "HONEYCOMB_API_KEY": "hcaik_wrong_key_for_tests_000000aaaa",
            "HONEYCOMB_API_ENDPOINT": wrong_key.url,
            "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{free_port()}",
            "ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-2222",
            "ROLLBAR_ENDPOINT": rollbar_api.endpoint,
        }
        result, output = run(make_app, config, "check")
    finally:
        wrong_key.close()
    assert result.exit_code == 1
    assert "[FAIL] Honeycomb" in output and "Honeycomb rejected the key (401)" in output
    assert "fix: set HONEYCOMB_API_KEY" in output
    assert "[FAIL] AWS X-Ray" in output and "nothing answers on TCP" in output
    assert "fix: start the X-Ray daemon" in output
    assert "[ok ] Rollbar" in output and "accepted for environment" in output
    assert "Some checks failed" in output


def test_missing_cloudwatch_permission_is_named(make_app, aws, monkeypatch):
    denied = RecordingServer(
        status=400,
        reply={
            "__type": "AccessDeniedException",
            "message": "User is not authorized to perform: logs:DescribeLogGroups",
        },
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", denied.url)
    try:
        result, output = run(make_app, {"AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": denied.url}, "check", "--json")
    finally:
        denied.close()
    assert result.exit_code == 1
    [cloudwatch] = [tool for tool in last_json(output)["tools"] if tool["tool"] == "CloudWatch Logs"]
    [identity, group] = cloudwatch["steps"]
    assert identity["ok"] and not group["ok"]
    assert "missing permission logs:DescribeLogGroups" in group["detail"]
    assert "allow logs:DescribeLogGroups" in group["fix"]


def test_a_rejected_rollbar_token(make_app):
    rejected = RecordingServer(status=401, reply={"err": 1, "message": "invalid access token"})
    try:
        config = {"ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-3333", "ROLLBAR_ENDPOINT": rejected.url + "/api/1/"}
        result, output = run(make_app, config, "check")
    finally:
        rejected.close()
    assert result.exit_code == 1
    assert "Rollbar rejected the token (401)" in output and "post_server_item" in output


def test_an_otlp_endpoint_that_refuses_the_test_span(make_app):
    refusing = RecordingServer(status=400, reply={})
    try:
        result, output = run(make_app, {"OTEL_EXPORTER_OTLP_ENDPOINT": refusing.url}, "check")
    finally:
        refusing.close()
    assert result.exit_code == 1
    assert "[FAIL] OpenTelemetry (OTLP)" in output and "was not accepted" in output
    assert [r.path for r in refusing.requests] == ["/v1/traces"]


def test_spend_scales_what_the_service_emits(make_app):
    emitted = spend.Emitted(spans=4.0, xray_documents=1.0, log_bytes=500.0, error_log_bytes=2000.0)
    settings = TelemetrySettings.from_environ({"CRUDDUR_SAMPLING_RULE": "aws/json/xray.json"}, "development", "1")
    per_day = 10 * spend.SECONDS_PER_DAY  # 10 requests a second: the 5/s reservoir plus 10% of the other 5
    lines, sampling = spend.monthly_volumes(settings, emitted, per_day, error_rate=0.01)
    volume = {line.tool: line.monthly for line in lines}
    month = per_day * 30
    assert volume["X-Ray (recorded)"] == pytest.approx(month * 0.55)
    assert volume["Honeycomb"] == pytest.approx(month * 0.55 * 4)
    assert volume["CloudWatch Logs"] == pytest.approx(month * (500 + 0.01 * 2000) / 1024**3)
    assert volume["Rollbar"] == pytest.approx(month * 0.01)
    rollbar = next(line for line in lines if line.tool == "Rollbar")
    assert rollbar.exhausted_at_per_day == pytest.approx(5000 / 30 / 0.01, rel=1e-6)
    assert "Cruddur" in sampling


def test_spend_command_measures_and_prints_the_table(make_app):
    result, output = run(
        make_app, {"CRUDDUR_SAMPLING_RULE": "aws/json/xray.json"}, "spend", "--requests-per-day", "1000000"
    )
    assert result.exit_code == 0, output
    measured = next(line for line in output.splitlines() if line.startswith("Measured per request:"))
    spans = float(measured.split(":")[1].split("spans")[0])
    assert spans >= 3, "a server span, a service span and query spans per request"
    for tool in ("Honeycomb", "X-Ray (recorded)", "CloudWatch Logs", "Rollbar"):
        assert any(line.startswith(tool) for line in output.splitlines()), tool
    assert "20,000,000 events" in output and "5 GB ingested" in output


def test_spend_counts_metric_events_emf_bytes_and_custom_metrics():
    emitted = spend.Emitted(
        spans=4.0,
        xray_documents=1.0,
        log_bytes=500.0,
        error_log_bytes=0.0,
        metric_series=20,
        emf_route_line_bytes=400,
        emf_worker_line_bytes=500,
        routes_served=8,
        routes=12,
    )
    per_day = 1 * spend.SECONDS_PER_DAY  # 60 requests a minute: every route served each minute
    intervals = 30 * 24 * 60
    month = per_day * 30
    settings = TelemetrySettings.from_environ({}, "development", "1")
    volume = {line.tool: line.monthly for line in spend.monthly_volumes(settings, emitted, per_day, 0.0, 2)[0]}
    emf_bytes = 2 * intervals * (8 * (400 + 26) + 500 + 26)
    assert volume["Honeycomb"] == pytest.approx(month * 4 + 2 * intervals * 20), "spans, and each process's series"
    assert volume["CloudWatch Logs"] == pytest.approx((month * 500 + emf_bytes) / 1024**3)
    assert volume["CloudWatch metrics"] == emitted.custom_metrics == 3 * 12 + 3 + 6
    assert spend.custom_metrics_price(emitted) == pytest.approx((45 - 10) * 0.30)
    quiet = spend.metric_volumes(settings, emitted, 10.0, 1)[1]
    assert quiet == pytest.approx(intervals * (10 / 1440 * (400 + 26) + 500 + 26)), "a line per route served"

    off = TelemetrySettings.from_environ(
        {"OTEL_METRICS_EXPORTER": "none", "CRUDDUR_METRICS_EMF": "false"}, "development", "1"
    )
    volume = {line.tool: line.monthly for line in spend.monthly_volumes(off, emitted, per_day, 0.0, 2)[0]}
    assert volume["Honeycomb"] == pytest.approx(month * 4)
    assert volume["CloudWatch Logs"] == pytest.approx(month * 500 / 1024**3)
    assert volume["CloudWatch metrics"] == 0


def test_spend_command_measures_metrics_from_the_probe(make_app):
    app = make_app()
    result = app.test_cli_runner().invoke(args=["telemetry", "spend", "--requests-per-day", "100000"])
    assert result.exit_code == 0, result.output
    [metrics] = [line for line in result.output.splitlines() if line.startswith("Metrics per process")]
    points = int(metrics.split(": ", 1)[1].split(" OTLP data points")[0])
    assert points > 0 and "GB of EMF" in metrics
    rules = {r.rule for r in app.url_map.iter_rules() if r.endpoint != "static" and r.rule != "/api/health"}
    custom = 3 * (len(rules) + 1) + 9
    assert f"CloudWatch custom metrics: {custom} " in result.output
    assert any(line.startswith("CloudWatch metrics") for line in result.output.splitlines())


def test_status_in_a_shell_calls_no_one_and_prints_one_json_document(tmp_path):
    """With every tool configured, `telemetry status` reaches none of them: not AWS (no log group,
    no start-up lines shipped), not Honeycomb, not Rollbar, not the X-Ray daemon."""
    everything = RecordingServer()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as daemon:
        daemon.bind(("127.0.0.1", 0))
        daemon.settimeout(0.5)
        env = {
            "DATABASE_URL": str(tmp_path / "cruddur.sqlite3"),
            "HONEYCOMB_API_KEY": HONEYCOMB_KEY,
            "HONEYCOMB_API_ENDPOINT": everything.url,
            "AWS_XRAY_DAEMON_ADDRESS": "{}:{}".format(*daemon.getsockname()),
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "fake-access-key-id",
            "AWS_SECRET_ACCESS_KEY": "fake-secret-for-tests",
            "AWS_ENDPOINT_URL": everything.url,
            "ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-5555",
            "ROLLBAR_ENDPOINT": f"{everything.url}/api/1/",
        }
        try:
            completed = flask_command("telemetry", "status", "--json", env=env)
            with pytest.raises(TimeoutError):
                daemon.recv(65_535)
        finally:
            everything.close()
    assert completed.returncode == 0, completed.stderr
    status = json.loads(completed.stdout)
    assert set(status) == {"opentelemetry", "xray", "sampling", "cloudwatch", "rollbar", "metrics"}
    assert "CloudWatch EMF lines in the log stream" in status["metrics"]
    assert "CloudWatch Logs: on, log group 'cruddur' in us-east-1" in status["cloudwatch"]
    assert everything.requests == []


def test_status_does_not_look_up_credentials_that_need_the_network(make_app, tmp_path, monkeypatch):
    """A profile that assumes a role would call STS: status says what it cannot know instead."""
    config = tmp_path / "aws-config"
    config.write_text("[profile dev]\nrole_arn = arn:aws:iam::123456789012:role/dev\nsource_profile = base\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "dev")
    monkeypatch.setattr(socket.socket, "connect", lambda *a: pytest.fail("status made a network call"))
    result, output = run(make_app, {"AWS_REGION": "eu-west-1"}, "status", "--json")
    assert result.exit_code == 0, output
    assert "on only if a role, SSO or credential process gives AWS credentials" in last_json(output)["cloudwatch"]


def test_check_ships_no_start_up_lines_and_prints_one_json_document(aws, tmp_path):
    env = {"DATABASE_URL": str(tmp_path / "cruddur.sqlite3"), "CLOUDWATCH_LOG_GROUP": "cruddur-quiet"}
    completed = flask_command("telemetry", "check", "--json", env=env)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert json.loads(completed.stdout)["ok"] is True
    messages = log_messages("cruddur-quiet")
    assert messages and all("cruddur-telemetry-check" in message for message in messages), messages
