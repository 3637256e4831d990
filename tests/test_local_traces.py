"""A trace without Docker or accounts: `OTEL_TRACES_EXPORTER`, the local trace file, `telemetry trace`."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import pytest
import requests

from cruddur.config import ConfigError
from cruddur.telemetry.ids import find_trace_id
from cruddur.telemetry.local_traces import LocalTraceFile
from cruddur.telemetry.settings import OtelSettings
from tests.support.server import Gunicorn, run_in_backend

FLASK = Path(sys.executable).with_name("flask")
TRACE_HEX = "6b0fe86d9547dfb65b37682889b5260a"


def settings(environ: dict, environment: str = "development", instance: Path = Path("/instance")) -> OtelSettings:
    return OtelSettings.from_environ(environ, environment, instance)


# --- OTEL_TRACES_EXPORTER ----------------------------------------------------------------------


def test_unset_in_development_keeps_spans_in_the_local_file_only(tmp_path):
    otel = settings({}, instance=tmp_path)
    assert otel.enabled and otel.local_traces == tmp_path / "traces.jsonl"
    assert otel.endpoint is None and not otel.console
    assert "traces.jsonl" in otel.describe() and "telemetry trace" in otel.describe()


def test_no_local_file_in_production_or_when_an_exporter_is_set(tmp_path):
    assert not settings({}, "production").enabled
    assert settings({"HONEYCOMB_API_KEY": "hcaik_fake"}, instance=tmp_path).local_traces is None
    assert settings({"OTEL_TRACES_EXPORTER": "console"}, instance=tmp_path).local_traces is None


def test_an_explicit_local_file_is_kept_beside_other_exporters(tmp_path):
    path = tmp_path / "spans.jsonl"
    otel = settings({"HONEYCOMB_API_KEY": "hcaik_fake", "CRUDDUR_LOCAL_TRACES": str(path)}, "production")
    assert otel.local_traces == path and otel.endpoint == "https://api.honeycomb.io/v1/traces"
    assert settings({"CRUDDUR_LOCAL_TRACES": "true"}, "production", tmp_path).local_traces == tmp_path / "traces.jsonl"
    assert settings({"CRUDDUR_LOCAL_TRACES": "false"}, instance=tmp_path).enabled is False


def test_a_local_file_in_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"CRUDDUR_LOCAL_TRACES=.*does not exist"):
        settings({"CRUDDUR_LOCAL_TRACES": str(tmp_path / "no" / "such" / "traces.jsonl")})


def test_otlp_alone_sends_to_the_standard_default_endpoint():
    otel = settings({"OTEL_TRACES_EXPORTER": "otlp"})
    assert otel.endpoint == "http://localhost:4318/v1/traces"
    assert settings({"OTEL_TRACES_EXPORTER": "otlp_proto_http"}).endpoint == "http://localhost:4318/v1/traces"


def test_none_turns_off_even_with_a_key():
    otel = settings({"OTEL_TRACES_EXPORTER": "none", "HONEYCOMB_API_KEY": "hcaik_fake"})
    assert not otel.enabled and otel.describe() == "OpenTelemetry: off (OTEL_TRACES_EXPORTER=none)"


def test_console_without_otlp_sends_nothing_to_the_configured_endpoint():
    otel = settings({"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert otel.console and otel.endpoint is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, r"OTEL_TRACES_EXPORTER='zipkin': zipkin is not available.*console"),
        ({"OTEL_TRACES_EXPORTER": "otlp,jaeger"}, r"jaeger is not available"),
        ({"OTEL_TRACES_EXPORTER": "none,console"}, r"none is not available"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            r"OTEL_EXPORTER_OTLP_PROTOCOL='grpc'.*http/protobuf",
        ),
    ],
)
def test_names_this_build_cannot_honour_are_refused_with_what_it_accepts(environ, message):
    with pytest.raises(ConfigError, match=message):
        settings(environ)


def test_console_prints_one_json_line_per_span_on_stdout(make_app, capsys):
    app = make_app({"OTEL_TRACES_EXPORTER": "console"})
    header = app.test_client().get("/api/activities/home").headers["X-Amzn-Trace-Id"]
    app.extensions["cruddur"].telemetry.shutdown()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    spans = [line for line in lines if "context" in line]
    assert {span["name"] for span in spans} >= {"GET /api/activities/home", "home-activities"}
    assert {span["context"]["trace_id"] for span in spans} == {"0x" + find_trace_id(header)}


def test_a_comma_list_sends_to_each_exporter(make_app, otlp_receiver, capsys):
    app = make_app({"OTEL_TRACES_EXPORTER": "otlp, console", "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url})
    app.test_client().get("/api/activities/home")
    app.extensions["cruddur"].telemetry.shutdown()
    assert "GET /api/activities/home" in {span.name for span in otlp_receiver.spans()}
    assert '"name": "GET /api/activities/home"' in capsys.readouterr().out


def test_none_sends_nowhere(make_app, otlp_receiver, capsys):
    app = make_app({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url})
    response = app.test_client().get("/api/activities/home")
    app.extensions["cruddur"].telemetry.shutdown()
    assert response.status_code == 200 and "X-Amzn-Trace-Id" in response.headers
    assert otlp_receiver.exports == []


# --- the local trace file ----------------------------------------------------------------------


def test_the_file_is_bounded_and_drops_the_oldest_first(tmp_path):
    file = LocalTraceFile(tmp_path / "traces.jsonl", max_bytes=2_000)
    for index in range(500):
        file.append([json.dumps({"span": {"trace_id": f"{index:032x}", "n": index}})])
    sizes = [path.stat().st_size for path in (file.path, file.previous)]
    assert sum(sizes) <= 2 * 2_000 + 100
    kept = [record["span"]["n"] for record in file.records()]
    assert kept == sorted(kept) and kept[-1] == 499 and kept[0] > 0


def _append_many(path: str, writer: int, batches: int, max_bytes: int) -> None:
    file = LocalTraceFile(Path(path), max_bytes=max_bytes)
    for batch in range(batches):
        file.append([json.dumps({"span": {"writer": writer, "batch": batch, "pad": "x" * 300}})] * 5)


@pytest.mark.parametrize("max_bytes", [10**9, 40_000])
def test_several_processes_write_whole_lines(tmp_path, max_bytes):
    """Four writers (gunicorn workers) at once: no line is torn or interleaved, with or without
    a new generation starting meanwhile; with room for all, nothing is lost."""
    path = tmp_path / "traces.jsonl"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_append_many, args=(str(path), w, 200, max_bytes)) for w in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    files = [p for p in (path.with_name("traces.jsonl.1"), path) if p.exists()]
    lines = [line for p in files for line in p.read_text().splitlines()]
    records = [json.loads(line) for line in lines]  # every line parses
    if max_bytes == 10**9:
        assert len(records) == 4 * 200 * 5
    else:
        assert len(records) < 4 * 200 * 5 and path.stat().st_size < 2 * max_bytes


def test_an_unwritable_file_is_one_warning_and_requests_still_succeed(make_app, tmp_path, caplog):
    folder = tmp_path / "read-only"
    folder.mkdir()
    (folder / "traces.jsonl").mkdir()  # a folder where the file should be: every write fails
    app = make_app({"CRUDDUR_LOCAL_TRACES": str(folder / "traces.jsonl")})
    client = app.test_client()
    for _ in range(3):
        assert client.get("/api/activities/home").status_code == 200
    app.extensions["cruddur"].telemetry.shutdown()
    warnings = [r for r in caplog.records if "local trace file cannot be written" in r.getMessage()]
    assert len(warnings) == 1


def test_the_default_file_goes_in_the_instance_folder_even_before_it_exists(tmp_path):
    """The database may live elsewhere (DATABASE_URL): the instance folder is made for the file."""
    from flask import Flask

    from cruddur import telemetry
    from cruddur.config import Settings

    app = Flask("probe", instance_path=str(tmp_path / "instance"))
    started = telemetry.init_app(app, Settings.from_environ({}), "1")
    started.shutdown()
    assert started.settings.otel.local_traces == tmp_path / "instance" / "traces.jsonl"
    assert (tmp_path / "instance").is_dir()


def served(make_app, tmp_path, requests_to_make=("/api/activities/home",)):
    path = tmp_path / "traces.jsonl"
    app = make_app({"CRUDDUR_LOCAL_TRACES": str(path)})
    client = app.test_client()
    responses = [client.get(url) for url in requests_to_make]
    app.extensions["cruddur"].telemetry.shutdown()
    return app, responses, path


def test_spans_and_their_log_lines_reach_the_file(make_app, tmp_path):
    _, [response], path = served(make_app, tmp_path)
    trace_id = find_trace_id(response.headers["X-Amzn-Trace-Id"])
    records = [json.loads(line) for line in path.read_text().splitlines()]
    spans = [r["span"] for r in records if "span" in r]
    logs = [r["log"] for r in records if "log" in r]
    assert {span["trace_id"] for span in spans} == {trace_id}
    server = next(span for span in spans if span["kind"] == "SERVER")
    assert server["name"] == "GET /api/activities/home" and server["attributes"]["http.response.status_code"] == 200
    assert [log["message"] for log in logs if log["trace_id"] == trace_id] == ["GET /api/activities/home 200"]


@pytest.mark.parametrize(
    "form",
    [
        "Root=1-{a}-{b};Sampled=1",
        "X-Amzn-Trace-Id: Root=1-{a}-{b};Parent=53995c3f42cd8ad8;Sampled=1",
        "{a}{b}",
        "{A}{B}",
        '{{"status": 500, "error": "internal_error", "trace_id": "{a}{b}"}}',
        "00-{a}{b}-53995c3f42cd8ad8-01",
        '{{"level": "INFO", "trace_id": "{a}{b}", "xray_trace_id": "1-{a}-{b}", "span_id": "53995c3f42cd8ad8"}}',
    ],
)
def test_a_trace_id_is_found_in_whatever_was_copied(form):
    a, b = TRACE_HEX[:8], TRACE_HEX[8:]
    assert find_trace_id(form.format(a=a, b=b, A=a.upper(), B=b.upper())) == TRACE_HEX


def test_no_trace_id_in_text_without_one():
    assert find_trace_id("53995c3f42cd8ad8") is None
    assert find_trace_id(TRACE_HEX + "0") is None


def trace_cli(app, *args):
    return app.test_cli_runner().invoke(args=["telemetry", "trace", *args])


def test_the_waterfall_of_a_request_from_its_response_header(make_app, tmp_path):
    app, [response], _ = served(make_app, tmp_path)
    header = response.headers["X-Amzn-Trace-Id"]
    result = trace_cli(app, header)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"trace {find_trace_id(header)}")
    [server] = [line for line in lines if line.startswith("GET /api/activities/home ") and "█" in line]
    assert "█" * 40 in server and server.rstrip().endswith(" ms"), "the root span spans the whole bar"
    assert any(line.startswith("  home-activities ") and "█" in line for line in lines)
    assert any(line.strip().startswith("SELECT ") and "█" in line for line in lines), "query spans, nested"
    assert any(line.strip() == "http.response.status_code = 200" for line in lines)
    assert any("INFO" in line and "cruddur.access: GET /api/activities/home 200" in line for line in lines)


def test_last_n_and_json(make_app, tmp_path):
    app, responses, _ = served(make_app, tmp_path, ("/api/activities/home", "/api/activities/@andrewbrown"))
    result = trace_cli(app, "--last", "2", "--json")
    assert result.exit_code == 0
    document = json.loads(result.output)
    ids = [trace["trace_id"] for trace in document["traces"]]
    assert ids == [find_trace_id(r.headers["X-Amzn-Trace-Id"]) for r in responses]
    latest = trace_cli(app, "--last", "1").output.splitlines()[0]
    assert latest.startswith(f"trace {ids[-1]}")
    assert trace_cli(app).output.splitlines()[0] == latest


def test_a_failed_request_shows_its_error_and_its_traceback(make_app, tmp_path, monkeypatch):
    path = tmp_path / "traces.jsonl"
    app = make_app({"CRUDDUR_LOCAL_TRACES": str(path)})

    def broken(*args):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(app.extensions["cruddur"].deps.store, "home_activities", broken)
    body = app.test_client().get("/api/activities/home").get_json()
    app.extensions["cruddur"].telemetry.shutdown()
    output = trace_cli(app, json.dumps(body)).output
    assert "✗ ERROR RuntimeError" in output
    assert "exception: RuntimeError: the disk caught fire" in output
    assert "cruddur.access: GET /api/activities/home 500" in output
    assert "ERROR   cruddur.telemetry: unhandled RuntimeError in GET /api/activities/home" in output


def test_what_the_command_says_when_there_is_nothing_to_show(make_app, tmp_path):
    app = make_app({"CRUDDUR_LOCAL_TRACES": str(tmp_path / "traces.jsonl")})
    empty = trace_cli(app, "--last", "1")
    assert empty.exit_code == 1 and "no trace in" in empty.output
    unknown = trace_cli(app, TRACE_HEX)
    assert unknown.exit_code == 1 and f"trace {TRACE_HEX} is not in" in unknown.output
    assert trace_cli(app, "not-an-id").exit_code == 2
    off = trace_cli(make_app({"CRUDDUR_LOCAL_TRACES": "false"}))
    assert off.exit_code == 1 and "CRUDDUR_LOCAL_TRACES=true" in off.output


def test_make_run_one_curl_and_the_waterfall(tmp_path):
    """The README's first screen: gunicorn as `make run` starts it (two workers, one file),
    one request, then `flask --app app telemetry trace --last 1` in another shell."""
    env = {
        "DATABASE_URL": str(tmp_path / "cruddur.sqlite3"),
        "CRUDDUR_LOCAL_TRACES": str(tmp_path / "traces.jsonl"),
    }
    with Gunicorn(env, tmp_path / "gunicorn.log", workers=2) as server:
        response = requests.get(f"{server.url}/api/activities/home", timeout=10)
        trace_id = find_trace_id(response.headers["X-Amzn-Trace-Id"])
        command_env = {k: v for k, v in os.environ.items() if not k.startswith("CRUDDUR_")} | env
        deadline = time.monotonic() + 20  # the spans are written within a second; generous on a busy machine
        while True:
            shown = run_in_backend([str(FLASK), "--app", "app", "telemetry", "trace", "--last", "1"], command_env, 60)
            if shown.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"trace {trace_id}"), "the command's own output, and nothing before it"
    assert any(line.startswith("GET /api/activities/home ") and "█" in line for line in lines)
    assert shown.stderr == ""
