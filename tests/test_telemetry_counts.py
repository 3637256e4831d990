"""What each tool was given, sent and dropped: `Telemetry.tool_counts()` against what the fake
backends received, the periodic counts line while the app runs, and the stop line."""

from __future__ import annotations

import json
import threading
import time

from cruddur.telemetry.xray import QuietUDPEmitter
from tests.support.otlp import FakeOtlpReceiver

HOME = "/api/activities/home"


def telemetry_of(app):
    return app.extensions["cruddur"].telemetry


def stdout_records(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def counts_lines(records: list[dict]) -> list[dict]:
    return [r for r in records if r["logger"] == "cruddur.telemetry.counts"]


def test_opentelemetry_counts_what_the_receiver_got(make_app, otlp_receiver):
    app = make_app({"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url})
    client = app.test_client()
    for _ in range(3):
        client.get(HOME)
    telemetry_of(app).shutdown()
    received = len(otlp_receiver.spans())
    assert received >= 3
    assert telemetry_of(app).tool_counts() == {"opentelemetry": {"queued": received, "sent": received, "dropped": 0}}


def test_opentelemetry_counts_spans_dropped_by_a_full_queue_and_a_failed_export(make_app):
    receiver = FakeOtlpReceiver(mode="hang")
    try:
        app = make_app(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
                "OTEL_BSP_MAX_QUEUE_SIZE": "4",
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2",
            }
        )
        client = app.test_client()
        for _ in range(20):
            client.get(HOME)
        counts = telemetry_of(app).tool_counts()["opentelemetry"]
        assert counts["queued"] >= 20 and counts["sent"] == 0
        # At most a full queue (4) and one batch in the hanging export (2) are still on their way.
        assert counts["queued"] - counts["dropped"] <= 6, counts
        telemetry_of(app).shutdown(timeout=2)
    finally:
        receiver.close()


def test_xray_counts_the_documents_the_daemon_got(make_app, xray_daemon):
    app = make_app({"AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address})
    client = app.test_client()
    for _ in range(3):
        client.get(HOME)
    xray_daemon.wait_for_segments(3)
    documents = len(xray_daemon.documents)
    assert telemetry_of(app).tool_counts() == {"xray": {"queued": documents, "sent": documents, "dropped": 0}}


def test_xray_counts_a_document_too_large_to_send_as_dropped(xray_daemon):
    class Oversize:
        """A document no split can bring under the 64 KB datagram limit."""

        name = "oversize"

        def serialize(self) -> str:
            return json.dumps(self.to_dict())

        def to_dict(self) -> dict:
            return {"name": self.name, "metadata": {"blob": "x" * 70_000}}

    emitter = QuietUDPEmitter(xray_daemon.address)
    emitter.send_entity(Oversize())
    assert emitter.counts.snapshot() == {"queued": 1, "sent": 0, "dropped": 1}


def test_rollbar_counts_what_its_api_took(make_app, rollbar_api):
    app = make_app({"ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-0101", "ROLLBAR_ENDPOINT": rollbar_api.endpoint})
    client = app.test_client()
    client.get("/rollbar/test")
    client.get("/rollbar/test")
    telemetry_of(app).shutdown()
    assert len(rollbar_api.requests) == 2
    assert telemetry_of(app).tool_counts() == {"rollbar": {"queued": 2, "sent": 2, "dropped": 0}}


def test_rollbar_counts_items_its_api_refused_and_says_so_in_the_apps_log(make_app, rollbar_api, capsys):
    rollbar_api.routes = {"/api/1/item/": (500, {"err": 1, "message": "Internal server error"})}
    app = make_app({"ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-0102", "ROLLBAR_ENDPOINT": rollbar_api.endpoint})
    client = app.test_client()
    client.get("/rollbar/test")
    client.get("/rollbar/test")
    telemetry_of(app).shutdown()
    assert len(rollbar_api.requests) == 2
    assert telemetry_of(app).tool_counts() == {"rollbar": {"queued": 2, "sent": 0, "dropped": 2}}
    records = stdout_records(capsys)
    assert any(r["level"] == "WARNING" and "Rollbar: an item was not sent" in r["message"] for r in records)


def test_rollbar_counts_a_throttled_item_as_dropped(make_app, rollbar_api):
    rollbar_api.routes = {"/api/1/item/": (429, {"err": 1, "message": "rate limit reached"})}
    app = make_app({"ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-0103", "ROLLBAR_ENDPOINT": rollbar_api.endpoint})
    app.test_client().get("/rollbar/test")
    telemetry_of(app).shutdown()
    assert len(rollbar_api.requests) == 1
    assert telemetry_of(app).tool_counts() == {"rollbar": {"queued": 1, "sent": 0, "dropped": 1}}


def test_no_tool_on_counts_nothing_and_logs_no_counts(make_app, capsys):
    app = make_app({"CRUDDUR_TELEMETRY_COUNTS_INTERVAL": "0.05"})
    app.test_client().get(HOME)
    time.sleep(0.2)
    telemetry_of(app).shutdown()
    assert telemetry_of(app).tool_counts() == {}
    assert counts_lines(stdout_records(capsys)) == []


def wait_for_counts_line(capsys, timeout: float = 5) -> list[dict]:
    deadline = time.monotonic() + timeout
    lines: list[dict] = []
    while not lines and time.monotonic() < deadline:
        time.sleep(0.02)
        lines = counts_lines(stdout_records(capsys))
    return lines


def lines_until_current(capsys, telemetry, timeout: float = 5) -> list[dict]:
    """Counts lines until one reports the counts as they are now (a tick may fall mid-request)."""
    deadline = time.monotonic() + timeout
    lines: list[dict] = []
    while time.monotonic() < deadline and not (lines and lines[-1]["telemetry"] == telemetry.tool_counts()):
        time.sleep(0.02)
        lines += counts_lines(stdout_records(capsys))
    return lines


def test_a_counts_line_is_logged_while_running_only_when_something_changed(
    make_app, span_exporter, xray_daemon, capsys
):
    app = make_app(
        {
            "TELEMETRY_SPAN_EXPORTER": span_exporter,
            "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address,
            "CRUDDUR_TELEMETRY_COUNTS_INTERVAL": "0.05",
        }
    )
    telemetry = telemetry_of(app)
    client = app.test_client()
    client.get(HOME)
    lines = lines_until_current(capsys, telemetry)
    line = lines[-1]
    assert line["level"] == "INFO" and line["message"].startswith("telemetry counts: opentelemetry ")
    assert line["telemetry"] == telemetry.tool_counts()
    assert set(line["telemetry"]) == {"opentelemetry", "xray"}
    assert line["telemetry"]["xray"]["sent"] == len(xray_daemon.documents) > 0
    assert line["telemetry"]["opentelemetry"]["sent"] == len(span_exporter.get_finished_spans()) > 0
    assert len({json.dumps(line["telemetry"]) for line in lines}) == len(lines), "no line repeats the one before"

    time.sleep(0.3)  # six intervals in which nothing happens
    assert counts_lines(stdout_records(capsys)) == []

    client.get(HOME)
    line = lines_until_current(capsys, telemetry)[-1]
    assert line["telemetry"]["opentelemetry"]["sent"] == len(span_exporter.get_finished_spans())
    telemetry.shutdown()


def test_a_counts_line_warns_when_more_was_dropped(make_app, rollbar_api, capsys):
    rollbar_api.routes = {"/api/1/item/": (500, {"err": 1, "message": "Internal server error"})}
    app = make_app(
        {
            "ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-0105",
            "ROLLBAR_ENDPOINT": rollbar_api.endpoint,
            "CRUDDUR_TELEMETRY_COUNTS_INTERVAL": "0.05",
        }
    )
    app.test_client().get("/rollbar/test")
    deadline = time.monotonic() + 5
    warnings: list[dict] = []
    while not warnings and time.monotonic() < deadline:
        warnings = [r for r in wait_for_counts_line(capsys, timeout=0.2) if r["level"] == "WARNING"]
    assert [w["telemetry"] for w in warnings] == [{"rollbar": {"queued": 1, "sent": 0, "dropped": 1}}]
    telemetry_of(app).shutdown()


def test_the_stop_line_reports_every_tool_and_counts_what_was_left_unsent_as_dropped(make_app, rollbar_api, capsys):
    rollbar_api.hang = True
    app = make_app(
        {
            "ROLLBAR_ACCESS_TOKEN": "fake-rollbar-token-0104",
            "ROLLBAR_ENDPOINT": rollbar_api.endpoint,
        }
    )
    client = app.test_client()
    for _ in range(3):
        client.get("/rollbar/test")
    capsys.readouterr()
    telemetry_of(app).shutdown(timeout=1)
    for thread in threading.enumerate():
        if thread.name == "shutdown-Rollbar":
            thread.join(1)  # its last warning belongs to this test's output
    [stop] = [r for r in counts_lines(stdout_records(capsys)) if r["message"].startswith("telemetry stopped")]
    assert stop["telemetry"] == {"rollbar": {"queued": 3, "sent": 0, "dropped": 3}}
    assert stop["level"] == "WARNING"
    assert "rollbar 3 queued, 0 sent, 3 dropped" in stop["message"]
