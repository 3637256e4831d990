"""CloudWatch Logs loses nothing it was given: checked on what moto's CloudWatch Logs received.

Lines logged while the sender creates its stream arrive; a line over the event limit arrives as
valid JSON with its trace ids; what CloudWatch did not take is counted and said in the app's log.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid

import pytest
from watchtower import WatchtowerWarning

from cruddur.telemetry import cloudwatch, logs
from cruddur.telemetry.cloudwatch import MAX_LINE_BYTES, BoundedCloudWatchHandler
from cruddur.telemetry.settings import CloudWatchSettings
from tests.support.cloudwatch import log_messages, log_records
from tests.support.failing import CLOUDWATCH_LOGS, FailingHttpBackend

HOME = "/api/activities/home"
TRACE = {
    "trace_id": "6a1b2c3d" + "0" * 23 + "1",
    "xray_trace_id": "1-6a1b2c3d-" + "0" * 23 + "1",
    "span_id": "0" * 15 + "2",
}


def stdout_records(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


@pytest.fixture
def handler(aws):
    """A handler on its own group in moto, with the app's JSON format; closed at the end."""
    group = f"cruddur-cw-{uuid.uuid4().hex[:8]}"
    handler = logs.json_handler(BoundedCloudWatchHandler(CloudWatchSettings("us-east-1", group, None, aws)), "test")
    yield handler
    handler.flush_and_close(time.monotonic() + 10)


def record(message: str, created: float | None = None, exc_info=None) -> logging.LogRecord:
    entry = logging.LogRecord("cruddur.test", logging.ERROR, __file__, 1, message, (), exc_info)
    entry.__dict__.update(TRACE)
    if created is not None:
        entry.created = created
    return entry


def test_lines_logged_while_the_stream_is_created_all_arrive(make_app, aws):
    group = f"cruddur-cw-{uuid.uuid4().hex[:8]}"
    app = make_app({"CLOUDWATCH_LOG_GROUP": group})
    telemetry = app.extensions["cruddur"].telemetry
    creating, created = threading.Event(), threading.Event()

    def hold_stream_creation(**_: object) -> None:
        creating.set()
        created.wait(10)

    telemetry.cloudwatch.cwl_client.meta.events.register(
        "before-call.cloudwatch-logs.CreateLogStream", hold_stream_creation
    )
    assert creating.wait(10), "the sender never created its stream"
    client = app.test_client()
    answers = [client.get(HOME) for _ in range(20)]
    created.set()
    telemetry.shutdown()

    lines = log_records(group)
    access = [line["xray_trace_id"] for line in lines if line.get("logger") == "cruddur.access"]
    assert access == [a.headers["X-Amzn-Trace-Id"].split(";")[0].removeprefix("Root=") for a in answers]
    assert telemetry.tool_counts()["cloudwatch"] == {"queued": len(lines), "sent": len(lines), "dropped": 0}


def test_a_line_over_the_event_limit_arrives_as_valid_json_with_its_trace_ids(handler):
    message = "début " + "é" * 700_000  # 1.4 MB of UTF-8: over the limit in bytes, not in characters
    try:
        raise ValueError("the last line of the traceback says what failed")
    except ValueError:
        exc_info = sys.exc_info()
    handler.handle(record(message, exc_info=exc_info))
    handler.flush()

    [sent] = log_messages(handler.log_group_name)
    assert len(sent.encode()) <= MAX_LINE_BYTES
    line = json.loads(sent)
    assert list(line)[:6] == ["trace_id", "xray_trace_id", "span_id", "time", "level", "logger"]
    assert {name: line[name] for name in TRACE} == TRACE
    assert line["truncated"] is True and line["level"] == "ERROR"
    assert line["message"].startswith("début éé") and line["message"].endswith("bytes cut]")
    assert line["exception"].endswith("ValueError: the last line of the traceback says what failed")
    assert handler.counts.snapshot() == {"queued": 1, "sent": 1, "dropped": 0}


def test_a_line_at_the_limit_arrives_whole_and_one_byte_more_is_shortened(handler):
    empty = json.dumps(json.loads(handler.format(record(""))), ensure_ascii=False)
    at_limit = "x" * (MAX_LINE_BYTES - len(empty.encode()))
    handler.handle(record(at_limit))
    handler.handle(record(at_limit + "y"))
    handler.flush()

    whole, shortened = log_messages(handler.log_group_name)
    assert len(whole.encode()) == MAX_LINE_BYTES and json.loads(whole)["message"] == at_limit
    assert "truncated" not in json.loads(whole)
    assert len(shortened.encode()) <= MAX_LINE_BYTES and json.loads(shortened)["truncated"] is True


def test_extra_fields_that_do_not_fit_are_named_not_cut(handler):
    big = logging.LogRecord("cruddur.test", logging.INFO, __file__, 1, "a request with a huge field", (), None)
    big.__dict__.update(TRACE, payload={"blob": "z" * (MAX_LINE_BYTES + 10)})
    handler.handle(big)
    handler.flush()
    [sent] = log_messages(handler.log_group_name)
    line = json.loads(sent)
    assert line["omitted"] == ["payload"] and "payload" not in line
    assert line["message"] == "a request with a huge field" and line["trace_id"] == TRACE["trace_id"]


def test_events_cloudwatch_rejects_are_counted_as_dropped(handler):
    handler.handle(record("fifteen days old", created=time.time() - 15 * 24 * 3600))
    handler.handle(record("fresh"))
    handler.flush()
    assert [json.loads(m)["message"] for m in log_messages(handler.log_group_name)] == ["fresh"]
    assert handler.counts.snapshot() == {"queued": 2, "sent": 1, "dropped": 1}


def test_a_batch_lost_after_its_retries_is_counted_and_said_in_the_apps_log(
    make_app, aws, monkeypatch, capsys, recwarn
):
    fake = FailingHttpBackend(CLOUDWATCH_LOGS, "error")
    try:
        monkeypatch.setattr(cloudwatch, "SEND_INTERVAL_SECONDS", 60)
        app = make_app({"AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": fake.url})
        telemetry = app.extensions["cruddur"].telemetry
        client = app.test_client()
        for _ in range(5):
            client.get(HOME)
        capsys.readouterr()
        telemetry.shutdown()
        counts = telemetry.tool_counts()["cloudwatch"]
    finally:
        fake.close()

    puts = [a for a in fake.attempts if a.target.endswith("PutLogEvents")]
    assert puts, "the sender tried to send"
    assert counts["sent"] == 0 and counts["dropped"] == counts["queued"] >= 5
    records = stdout_records(capsys)
    [lost] = [r for r in records if r["logger"] == "cruddur.telemetry.cloudwatch" and "not delivered" in r["message"]]
    assert lost["level"] == "WARNING" and f"{counts['queued']} lines not delivered after 2 attempts" in lost["message"]
    [stop] = [r for r in records if r["message"].startswith("telemetry stopped")]
    assert stop["telemetry"]["cloudwatch"] == counts
    assert [w for w in recwarn if issubclass(w.category, WatchtowerWarning)] == []


def test_a_line_that_is_not_valid_utf8_arrives_and_the_sender_goes_on(handler):
    handler.handle(record(json.loads('"a lone surrogate: \\ud800"')))
    handler.handle(record("the next line"))
    handler.flush()
    assert [json.loads(m)["message"] for m in log_messages(handler.log_group_name)] == [
        "a lone surrogate: ?",
        "the next line",
    ]
    assert handler.counts.snapshot() == {"queued": 2, "sent": 2, "dropped": 0}
