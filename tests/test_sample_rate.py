"""Honeycomb counts are right under sampling: every span says how many it stands for (`SampleRate`).

Honeycomb multiplies each event by its `SampleRate` (a whole number, 1 when absent) to estimate what
was not kept, and expects it on every span of a trace. Read from the OTLP bytes the exporter sends.
"""

from __future__ import annotations

import pytest
import requests
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from cruddur.telemetry import sampling, spend
from cruddur.telemetry.sampling import SamplingRule, sample_rate
from cruddur.telemetry.settings import REPO_ROOT, TelemetrySettings
from tests.support.recording import RecordingServer
from tests.support.stores import query_span_name

HOME = "/api/activities/home"
FROZEN_SECOND = 1_800_000_000.0


def attributes(span) -> dict:
    return {kv.key: kv.value for kv in span.attributes}


def rate_of(span) -> int | None:
    value = attributes(span).get("SampleRate")
    return value.int_value if value is not None else None


def flush(app) -> None:
    app.extensions["cruddur"].telemetry.shutdown()


@pytest.fixture
def downstream():
    server = RecordingServer()
    yield server
    server.close()


def with_outgoing_call(app, downstream: RecordingServer):
    """A route that calls another service with `requests`, as a service would."""

    @app.get("/test/outgoing")
    def outgoing():
        requests.get(f"{downstream.url}/downstream", timeout=2)
        return {"ok": True}

    return app


def by_trace(spans) -> dict[bytes, list]:
    traces: dict[bytes, list] = {}
    for span in spans:
        traces.setdefault(span.trace_id, []).append(span)
    return traces


def test_under_the_production_rule_every_span_carries_its_traces_rate(make_app, otlp_receiver, monkeypatch, downstream):
    """The reservoir's 5 requests of a second carry 1; the fixed rate's carry 10, on every span."""
    monkeypatch.setattr(sampling.time, "time", lambda: FROZEN_SECOND)
    app = with_outgoing_call(
        make_app({"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url, "CRUDDUR_SAMPLING_RULE": "aws/json/xray.json"}),
        downstream,
    )
    client = app.test_client()
    for _ in range(150):  # 5 from the reservoir, then 10% of 145: none at all has odds of 2 in 10 million
        assert client.get("/test/outgoing").status_code == 200
    flush(app)

    traces = by_trace(otlp_receiver.spans())
    rates = []
    for spans in traces.values():
        [server] = [span for span in spans if span.kind == Span.SPAN_KIND_SERVER]
        kinds = {span.kind for span in spans}
        assert Span.SPAN_KIND_CLIENT in kinds and Span.SPAN_KIND_INTERNAL not in kinds
        assert {rate_of(span) for span in spans} == {rate_of(server)}, "every span of the trace, the same"
        rates.append(rate_of(server))
    assert rates.count(1) == 5, "the reservoir: 5 a second"
    assert rates.count(10) == len(rates) - 5 > 0, "the fixed rate: 1/0.1"


def test_service_and_query_spans_carry_the_rate_of_their_request(make_app, otlp_receiver, monkeypatch):
    monkeypatch.setattr(sampling.time, "time", lambda: FROZEN_SECOND)
    app = make_app({"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url, "CRUDDUR_SAMPLING_RULE": "aws/json/xray.json"})
    client = app.test_client()
    for _ in range(150):
        client.get(HOME)
    flush(app)
    for spans in by_trace(otlp_receiver.spans()).values():
        names = {span.name: rate_of(span) for span in spans}
        assert {"GET /api/activities/home", "home-activities", query_span_name(app)} <= set(names)
        assert len(set(names.values())) == 1 and None not in names.values()
    assert {rate_of(span) for span in otlp_receiver.spans()} == {1, 10}


def test_keeping_everything_carries_1_on_every_span(make_app, otlp_receiver, downstream):
    app = with_outgoing_call(make_app({"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url}), downstream)
    app.test_client().get("/test/outgoing")
    app.test_client().get(HOME)
    flush(app)
    spans = otlp_receiver.spans()
    assert len(spans) >= 5
    assert {rate_of(span) for span in spans} == {1}


def test_a_caller_who_decided_gives_rate_1_and_an_open_decision_gets_ours(make_app, otlp_receiver, monkeypatch):
    monkeypatch.setattr(sampling.time, "time", lambda: FROZEN_SECOND)
    app = make_app(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
        }
    )
    client = app.test_client()
    decided = "5759e988bd862e3fe1be46a994272793"
    client.get(HOME, headers={"traceparent": f"00-{decided}-53995c3f42cd8ad8-01"})
    for _ in range(60):
        client.get(HOME)
    flush(app)
    traces = by_trace(otlp_receiver.spans())
    assert {rate_of(span) for span in traces.pop(bytes.fromhex(decided))} == {1}
    assert traces, "about a quarter of 60 kept"
    assert {rate_of(span) for spans in traces.values() for span in spans} == {4}


@pytest.mark.parametrize(("fixed_rate", "rate"), [(0.1, 10), (0.05, 20), (0.5, 2), (1.0, 1), (0.3, 3), (0.0, 1)])
def test_the_sample_rate_is_the_whole_number_1_over_the_fixed_rate(fixed_rate, rate):
    assert sample_rate(fixed_rate) == rate


def test_the_rules_arithmetic_weighted_by_sample_rate_counts_every_request():
    """What the sampler keeps each second (each process's reservoir, then the fixed rate), each kept
    request counted `SampleRate` times, is every request: the arithmetic `telemetry spend` uses."""
    rule = SamplingRule.load(REPO_ROOT / "aws" / "json" / "xray.json")
    for arriving, processes in [(3, 1), (10, 1), (100, 1), (100, 4), (30, 6)]:
        reservoir = min(arriving, rule.reservoir_size * processes)
        by_rate = rule.kept_per_second(arriving, processes) - reservoir
        assert reservoir * 1 + by_rate * rule.sample_rate == pytest.approx(arriving)


def test_telemetry_spend_counts_each_processs_reservoir():
    settings = TelemetrySettings.from_environ({"CRUDDUR_SAMPLING_RULE": "aws/json/xray.json"}, "development", "1")
    emitted = spend.Emitted(spans=4.0, xray_documents=1.0, log_bytes=500.0, error_log_bytes=2000.0)
    per_day = 30 * spend.SECONDS_PER_DAY
    month = per_day * spend.DAYS_PER_MONTH
    for processes, kept in [(1, 5 + 0.1 * 25), (2, 10 + 0.1 * 20), (6, 30)]:
        lines, sampling = spend.monthly_volumes(settings, emitted, per_day, 0.01, processes)
        volume = {line.tool: line.monthly for line in lines}
        assert volume["X-Ray (recorded)"] == pytest.approx(month * kept / 30)
        assert volume["Honeycomb"] == pytest.approx(month * kept / 30 * 4)
        assert f"{processes} process" in sampling and "SampleRate 10" in sampling
