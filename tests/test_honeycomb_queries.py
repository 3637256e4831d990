"""honeycomb/: the course's queries as code, and the script that creates them and a board, against a fake API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.recording import RecordingServer

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "honeycomb" / "create_board.py"
SPEC = json.loads((REPO / "honeycomb" / "queries.json").read_text(encoding="utf-8"))
FAKE_KEY = "hcxik_fake_configuration_key_0000wxyz"
#: Calculation and filter operators of Honeycomb's query specification.
CALCULATION_OPS = {"COUNT", "CONCURRENCY", "SUM", "AVG", "COUNT_DISTINCT", "MAX", "MIN", "HEATMAP", "RATE_AVG"}
CALCULATION_OPS |= {"P001", "P01", "P05", "P10", "P20", "P25", "P50", "P75", "P80", "P90", "P95", "P99", "P999"}
FILTER_OPS = {"=", "!=", ">", ">=", "<", "<=", "starts-with", "does-not-start-with", "exists", "does-not-exist"}
FILTER_OPS |= {"contains", "does-not-contain", "in", "not-in"}
#: Columns Honeycomb derives from every span, whatever the service sends.
HONEYCOMB_COLUMNS = {"duration_ms", "trace.parent_id", "trace.trace_id", "trace.span_id", "name", "error"}


@pytest.fixture
def honeycomb_api():
    server = RecordingServer(reply={"id": "abc123", "links": {"board_url": "https://ui.honeycomb.io/t/b/abc123"}})
    yield server
    server.close()


def run_script(api_url: str | None, key: str | None = FAKE_KEY, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HONEYCOMB_", "OTEL_"))}
    if key:
        env["HONEYCOMB_API_KEY"] = key
    if api_url:
        env["HONEYCOMB_API_ENDPOINT"] = api_url
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_script_creates_each_query_names_it_and_makes_one_board(honeycomb_api):
    result = run_script(honeycomb_api.url)
    assert result.returncode == 0, result.stderr
    requests = honeycomb_api.requests
    paths = [(r.method, r.path) for r in requests]
    assert paths == [
        *[("POST", "/1/queries/backend-flask"), ("POST", "/1/query_annotations/backend-flask")] * len(SPEC["queries"]),
        ("POST", "/1/boards"),
    ]
    for request in requests:
        assert request.headers["x-honeycomb-team"] == FAKE_KEY
        assert request.headers["content-type"] == "application/json"
    heatmap = requests[0].json()
    assert {"op": "HEATMAP", "column": "duration_ms"} in heatmap["calculations"]
    assert {"op": "P90", "column": "duration_ms"} in heatmap["calculations"]
    annotation = requests[1].json()
    assert annotation == {
        "name": "Latency heatmap",
        "description": SPEC["queries"][0]["description"],
        "query_id": "abc123",
    }
    board = requests[-1].json()
    assert board["type"] == "flexible" and board["name"] == SPEC["board"]["name"]
    assert len(board["panels"]) == len(SPEC["queries"])
    for panel in board["panels"]:
        assert panel["type"] == "query"
        assert panel["query_panel"]["query_id"] == panel["query_panel"]["query_annotation_id"] == "abc123"
        assert panel["query_panel"]["query_style"] in {"graph", "table", "combo"}
    assert "https://ui.honeycomb.io/t/b/abc123" in result.stdout
    assert FAKE_KEY not in result.stdout + result.stderr


def test_the_dataset_can_be_named(honeycomb_api):
    assert run_script(honeycomb_api.url, FAKE_KEY, "--dataset", "cruddur dev").returncode == 0
    assert honeycomb_api.requests[0].path == "/1/queries/cruddur%20dev"


def test_a_refusal_stops_the_script_with_the_reason_and_without_the_key(honeycomb_api):
    honeycomb_api.status, honeycomb_api.reply = 401, {"error": "unknown API key - check your credentials"}
    result = run_script(honeycomb_api.url)
    assert result.returncode == 1
    assert "401" in result.stderr and "unknown API key" in result.stderr
    assert len(honeycomb_api.requests) == 1, "nothing more is attempted after a refusal"
    assert FAKE_KEY not in result.stdout + result.stderr


def test_without_a_key_the_script_says_what_to_set():
    result = run_script(None, None)
    assert result.returncode == 2 and "HONEYCOMB_API_KEY" in result.stderr


def test_the_course_queries_are_all_there():
    by_name = {entry["name"]: entry["query"] for entry in SPEC["queries"]}
    assert set(by_name) == {"Latency heatmap", "Latency by user", "Recent traces", "Errors by route"}
    assert by_name["Latency by user"]["breakdowns"] == ["enduser.id"]
    assert by_name["Errors by route"]["breakdowns"] == ["http.route"]


def test_every_query_uses_documented_operators_and_columns_the_spans_carry(make_app, span_exporter):
    client = make_app({"TELEMETRY_SPAN_EXPORTER": span_exporter}).test_client()
    client.get("/api/activities/home")
    span_columns = {key for span in span_exporter.get_finished_spans() for key in span.attributes}
    assert "enduser.id" in span_columns, "latency by user needs the user on the server span"
    known = HONEYCOMB_COLUMNS | span_columns
    for entry in SPEC["queries"]:
        query = entry["query"]
        for calculation in query["calculations"]:
            assert calculation["op"] in CALCULATION_OPS
            assert calculation.get("column", "duration_ms") in known
        for condition in query.get("filters", []):
            assert condition["op"] in FILTER_OPS and condition["column"] in known, condition
        for column in query.get("breakdowns", []):
            assert column in known, column
        for order in query.get("orders", []):
            term = order.get("column") or order["op"]
            assert term in query.get("breakdowns", []) or any(
                c["op"] == order["op"] and c.get("column") == order.get("column") for c in query["calculations"]
            ), f"{entry['name']}: each order must be a breakdown or a calculation"
