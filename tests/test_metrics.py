"""RED metrics: OTLP/HTTP to a local receiver and CloudWatch EMF lines in moto's log stream."""

from __future__ import annotations

import json
import math
import os
import time
import uuid

import boto3
import pytest
import requests
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

from cruddur.config import ConfigError
from cruddur.telemetry import emf
from cruddur.telemetry.metrics import EmfExporter
from tests.support.cloudwatch import log_records
from tests.support.emf import emf_errors
from tests.support.server import Gunicorn

#: Tests read an interval's metrics within a second, not a minute.
FAST = {"OTEL_METRIC_EXPORT_INTERVAL": "200"}
HONEYCOMB_KEY = "hcaik_fake_key_for_tests_0000wxyz"


def emf_documents(group: str) -> list[dict]:
    return [document for document in log_records(group) if "_aws" in document]


def wait_for_emf(group: str, timeout: float = 15) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if found := emf_documents(group):
                return found
        except boto3.client("logs").exceptions.ResourceNotFoundException:
            pass
        time.sleep(0.2)
    return []


def test_traffic_becomes_valid_emf_lines_per_route_in_the_log_stream(make_app, aws, capsys, monkeypatch):
    group = f"cruddur-{uuid.uuid4().hex[:8]}"
    app = make_app({"CLOUDWATCH_LOG_GROUP": group, **FAST})
    client = app.test_client()
    for _ in range(3):
        assert client.get("/api/activities/home").status_code == 200
    assert client.get("/api/activities/@andrewbrown").status_code == 200
    assert client.get("/wp-login.php").status_code == 404

    def broken(*args):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(app.extensions["cruddur"].deps.store, "home_activities", broken)
    assert client.get("/api/activities/home").status_code == 500
    assert wait_for_emf(group), "EMF lines arrive every interval, before any shutdown"
    app.extensions["cruddur"].telemetry.shutdown()

    documents = emf_documents(group)
    for document in documents:
        assert emf_errors(document) == [], document
        [directive] = document["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "Cruddur"
        assert abs(document["_aws"]["Timestamp"] - time.time() * 1000) < 120_000
        assert document["Service"] == "backend-flask"
    routes = [d for d in documents if "Route" in d]
    for document in routes:
        assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Service", "Route"], ["Service"]]
        assert sum(document["Latency"]["Counts"]) == document["Requests"] == document["Latency"]["Count"]
        assert document["Latency"]["Min"] <= min(document["Latency"]["Values"])
        assert max(document["Latency"]["Values"]) <= document["Latency"]["Max"]

    def total(route: str, metric: str) -> int:
        return sum(d[metric] for d in routes if d["Route"] == route)

    assert total("/api/activities/home", "Requests") == 4
    assert total("/api/activities/home", "Errors5xx") == 1
    assert total("/api/activities/@<handle>", "Requests") == 1
    assert total(emf.UNMATCHED_ROUTE, "Requests") == 1, "unknown URLs share one Route value"
    assert {d["Route"] for d in routes} == {"/api/activities/home", "/api/activities/@<handle>", "unmatched"}

    workers = [d for d in documents if "Route" not in d]
    assert workers
    for document in workers:
        assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Service"]]
        assert document["MemoryRss"] > 0 and document["Threads"] >= 1
        assert 0 <= document["CpuUtilization"] <= 100 * (os.cpu_count() or 1)
        assert document["TelemetryDropped"] == 0
    assert "_aws" not in capsys.readouterr().out, "EMF documents go to CloudWatch only, never to stdout"


def test_emf_lines_are_flushed_at_shutdown_within_the_interval(make_app, aws):
    group = f"cruddur-{uuid.uuid4().hex[:8]}"
    app = make_app({"CLOUDWATCH_LOG_GROUP": group})
    for _ in range(5):
        app.test_client().get("/api/activities/home")
    app.extensions["cruddur"].telemetry.shutdown()
    [route] = [d for d in emf_documents(group) if "Route" in d]
    assert route["Requests"] == 5 and route["Errors5xx"] == 0


@pytest.mark.parametrize(
    ("extra", "dataset"),
    [({}, "backend-flask-metrics"), ({"HONEYCOMB_METRICS_DATASET": "cruddur-metrics"}, "cruddur-metrics")],
)
def test_otlp_metrics_go_to_honeycomb_with_the_dataset_header(make_app, otlp_receiver, extra, dataset):
    app = make_app({"HONEYCOMB_API_KEY": HONEYCOMB_KEY, "HONEYCOMB_API_ENDPOINT": otlp_receiver.url, **FAST, **extra})
    client = app.test_client()
    client.get("/api/activities/home")
    client.open("/api/activities/home", method="FOO")
    exports = otlp_receiver.wait_for_metrics(1)
    app.extensions["cruddur"].telemetry.shutdown()

    assert exports, "an export every interval, before any shutdown"
    for export in otlp_receiver.metric_exports:
        assert export.path == "/v1/metrics"
        assert export.headers["x-honeycomb-team"] == HONEYCOMB_KEY
        assert export.headers["x-honeycomb-dataset"] == dataset
        assert export.headers["content-type"] == "application/x-protobuf"
        assert export.resource_attributes()["service.name"] == "backend-flask"
    points = [
        {kv.key: kv.value for kv in point.attributes}
        for export in otlp_receiver.metric_exports
        for metric in export.metrics().get("http.server.request.duration", [])
        for point in metric.histogram.data_points
        if point.count
    ]
    seen = {(p["http.request.method"].string_value, p["http.response.status_code"].int_value) for p in points}
    assert ("GET", 200) in seen and ("_OTHER", 405) in seen
    routes = {
        (p["http.request.method"].string_value, p["http.route"].string_value if "http.route" in p else None)
        for p in points
    }
    assert routes == {("GET", "/api/activities/home"), ("_OTHER", None)}, "a method no route allows matches no route"
    names = set().union(*(export.metrics() for export in otlp_receiver.metric_exports))
    assert {"process.cpu.time", "process.memory.usage", "process.thread.count", "cpython.gc.pause.time"} <= names


def test_standard_otlp_metrics_settings_are_honoured(make_app, otlp_receiver):
    app = make_app(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9/never",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": otlp_receiver.url + "/custom/metrics",
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "x-collector-token=fake%20token",
            "HONEYCOMB_API_KEY": HONEYCOMB_KEY,
        }
    )
    app.test_client().get("/api/activities/home")
    app.extensions["cruddur"].telemetry.shutdown(timeout=5)
    [export] = otlp_receiver.metric_exports
    assert export.path == "/custom/metrics", "a signal endpoint is used as given"
    assert export.headers["x-collector-token"] == "fake token"
    assert "x-honeycomb-team" not in export.headers and "x-honeycomb-dataset" not in export.headers


def test_metrics_exporter_none_keeps_traces_and_sends_no_metrics(make_app, otlp_receiver):
    app = make_app({"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url, "OTEL_METRICS_EXPORTER": "none"})
    app.test_client().get("/api/activities/home")
    app.extensions["cruddur"].telemetry.shutdown()
    assert otlp_receiver.spans() and otlp_receiver.metric_exports == []
    assert app.extensions["cruddur"].telemetry.metrics is None


def test_metrics_are_off_unless_configured_and_say_so_once(make_app, capsys):
    app = make_app()
    assert app.extensions["cruddur"].telemetry.metrics is None
    lines = [json.loads(line)["message"] for line in capsys.readouterr().out.splitlines() if "Metrics:" in line]
    assert len(lines) == 1 and lines[0].startswith("telemetry: Metrics: off")


@pytest.mark.parametrize(
    ("name", "value"), [("OTEL_METRICS_EXPORTER", "prometheus"), ("OTEL_METRIC_EXPORT_INTERVAL", "0")]
)
def test_unusable_metrics_settings_stop_the_start_with_a_clear_error(make_app, name, value):
    with pytest.raises(ConfigError, match=name):
        make_app({name: value})


def test_a_route_line_has_at_most_100_values_however_spread_the_latencies():
    lines: list[str] = []
    exporter = EmfExporter("backend-flask", lambda line, _ms: lines.append(line))
    reader = PeriodicExportingMetricReader(exporter, math.inf)
    provider = MeterProvider(metric_readers=[reader])
    histogram = provider.get_meter("test").create_histogram(emf.DURATION, unit="s")
    latencies = [10 ** (-6 + 9 * i / 4999) for i in range(5000)] + [0.0] * 3
    for index, seconds in enumerate(latencies):
        status = 500 if index % 10 == 0 else 200
        histogram.record(seconds, {"http.route": "/api/x", "http.response.status_code": status})
    reader.collect()
    provider.shutdown()
    [document] = [json.loads(line) for line in lines if "Route" in line]
    assert emf_errors(document) == []
    latency = document["Latency"]
    assert len(latency["Values"]) <= 100
    assert sum(latency["Counts"]) == document["Requests"] == len(latencies)
    assert document["Errors5xx"] == len(range(0, len(latencies), 10))
    assert latency["Min"] == 0 and latency["Max"] == pytest.approx(1000 * 1000)
    assert latency["Values"] == sorted(latency["Values"])
    median = latency["Values"][_index_of_rank(latency["Counts"], len(latencies) // 2)]
    assert median == pytest.approx(10 ** (-6 + 4.5) * 1000, rel=0.5), "buckets keep the shape of the distribution"


def _index_of_rank(counts: list[int], rank: int) -> int:
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen > rank:
            return index
    return len(counts) - 1


def test_requests_in_flight_are_observed_and_unknown_methods_are_one_value():
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from cruddur.telemetry.metrics import RequestMetrics

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    requests = RequestMetrics(provider)
    requests.started()
    requests.started()
    requests.finished("GET", "/api/x", 200, 0.01)
    for index in range(1010):
        requests.started()
        requests.finished(f"M{index}", None, 200 + index % 300, 0.01)
    data = reader.get_metrics_data()
    provider.shutdown()
    points = {
        metric.name: list(metric.data.data_points)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    [active] = points[emf.ACTIVE_REQUESTS]
    assert active.value == 1, "two started, one finished"
    methods = {p.attributes["http.request.method"] for p in points[emf.DURATION]}
    assert methods == {"GET", "_OTHER"}, "unknown methods are one value"


def _duration_counts(reader) -> dict[str, int]:
    """Requests counted by the duration histogram in what `reader` collects now, by route."""
    data = reader.get_metrics_data()
    return {
        point.attributes["http.route"]: point.count
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == emf.DURATION
        for point in metric.data.data_points
    }


def test_every_duration_reaches_each_reader_once_whenever_each_collects():
    """Durations wait for a collection; the first reader's must not take them from the other."""
    from opentelemetry.sdk.metrics import Histogram
    from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader

    from cruddur.telemetry.metrics import RequestMetrics

    cumulative = InMemoryMetricReader()
    delta = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    provider = MeterProvider(metric_readers=[cumulative, delta])
    requests = RequestMetrics(provider)
    for _ in range(5):
        requests.started()
        requests.finished("GET", "/api/a", 200, 0.01)
    assert _duration_counts(cumulative) == {"/api/a": 5}
    for _ in range(2):
        requests.started()
        requests.finished("GET", "/api/b", 200, 0.02)
    assert _duration_counts(delta) == {"/api/a": 5, "/api/b": 2}
    assert _duration_counts(cumulative) == {"/api/a": 5, "/api/b": 2}
    assert _duration_counts(delta) == {}, "nothing twice"
    provider.shutdown()


def test_durations_held_between_collections_are_bounded(monkeypatch):
    """Past the bound, each request records its own duration at once, so memory stays flat however
    long the export interval, and no request waits for a whole batch."""
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from cruddur.telemetry import metrics

    monkeypatch.setattr(metrics, "MAX_PENDING_DURATIONS", 3)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    requests = metrics.RequestMetrics(provider)
    handed_over: list[float] = []
    record = requests._duration.record

    def spy(seconds: float, attributes: dict) -> None:
        handed_over.append(seconds)
        record(seconds, attributes)

    monkeypatch.setattr(requests._duration, "record", spy)
    for index in range(7):
        requests.started()
        requests.finished("GET", "/api/a", 200, index)
    assert handed_over == [3, 4, 5, 6], "the first three wait for the collection, the rest go at once"
    assert _duration_counts(reader) == {"/api/a": 7}, "the waiting three join them at the collection"
    requests.started()
    requests.finished("GET", "/api/a", 200, 7)
    assert handed_over == [3, 4, 5, 6, 0, 1, 2], "after a collection, durations wait again"
    assert _duration_counts(reader) == {"/api/a": 8}
    provider.shutdown()


def test_when_log_lines_are_dropped_the_metrics_still_arrive_and_say_so(make_app, aws, monkeypatch):
    from cruddur.telemetry import cloudwatch

    monkeypatch.setattr(cloudwatch, "SEND_INTERVAL_SECONDS", 60)
    group = f"cruddur-{uuid.uuid4().hex[:8]}"
    app = make_app({"CLOUDWATCH_LOG_GROUP": group})
    telemetry = app.extensions["cruddur"].telemetry
    [backlog] = telemetry.cloudwatch.queues.values()
    backlog.limit = 0  # AWS "cannot keep up": no room for one more log line
    for _ in range(20):
        app.test_client().get("/api/activities/home")
    telemetry.shutdown()

    documents = emf_documents(group)
    [route] = [d for d in documents if "Route" in d]
    assert route["Requests"] == 20
    [worker] = [d for d in documents if "Route" not in d]
    assert worker["TelemetryDropped"] >= 20, "each access line, and any other"
    assert worker["Telemetry"]["cloudwatch"]["dropped"] == worker["TelemetryDropped"]


def test_a_metrics_endpoint_that_hangs_makes_the_metrics_closer_give_up_without_raising(make_app, otlp_receiver, aws):
    otlp_receiver.mode = "hang"
    app = make_app({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": otlp_receiver.url + "/v1/metrics"})
    app.test_client().get("/api/activities/home")
    metrics = app.extensions["cruddur"].telemetry.metrics
    assert metrics.otlp_reader is not None and metrics.emf_reader is not None
    started = time.monotonic()
    metrics.shutdown(started + 0.5)  # the OTLP reader uses up the deadline; the EMF reader then misses it
    assert time.monotonic() - started < 15, "a generous bound: the exporter's own timeout is 10 s"


def test_each_preloaded_worker_exports_its_own_metrics_from_zero(tmp_path, otlp_receiver):
    env = {"DATABASE_URL": str(tmp_path / "db.sqlite3"), "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url}
    with Gunicorn(env, tmp_path / "gunicorn.log", workers=2, extra_args=("--preload",)) as server:
        for _ in range(4):
            assert requests.get(f"{server.url}/api/activities/home", timeout=5).status_code == 200
    exports = otlp_receiver.metric_exports
    assert len(exports) >= 2, "a last export from each worker at the stop (and the master's own, preloaded)"
    served = 0
    for export in exports:
        metrics = export.metrics()
        served += sum(p.count for m in metrics.get(emf.DURATION, []) for p in m.histogram.data_points)
        cpu = [p.as_double for m in metrics[emf.CPU_TIME] for p in m.sum.data_points]
        assert all(0 <= seconds < 60 for seconds in cpu), "the worker's own CPU, not the master's"
    assert served == 4
