"""One sampling decision: over any run of requests, OpenTelemetry and X-Ray keep the same ones."""

from __future__ import annotations

import json
import random

import pytest
from opentelemetry.trace import SpanKind

from cruddur.config import ConfigError
from cruddur.telemetry import sampling
from cruddur.telemetry.sampling import SamplingRule, XRayRuleSampler
from cruddur.telemetry.settings import REPO_ROOT

PRODUCTION_RULE = REPO_ROOT / "aws" / "json" / "xray.json"


def xray_id(trace_id: int) -> str:
    hex_id = format(trace_id, "032x")
    return f"1-{hex_id[:8]}-{hex_id[8:]}"


def test_the_production_rule_is_read_from_the_aws_file():
    rule = SamplingRule.load(PRODUCTION_RULE)
    assert (rule.name, rule.fixed_rate, rule.reservoir_size, rule.service_name) == ("Cruddur", 0.1, 5, "backend-flask")


def test_a_reservoir_per_second_then_the_fixed_rate(monkeypatch):
    clock = [1_800_000_000.0]
    monkeypatch.setattr(sampling.time, "time", lambda: clock[0])
    sampler = XRayRuleSampler(SamplingRule.load(PRODUCTION_RULE), "backend-flask", random.Random(7))
    first_second = [sampler.decide("localhost", "GET", "/api/activities/home") for _ in range(1000)]
    assert first_second[:5] == [True] * 5
    assert 70 < sum(first_second[5:]) < 130, "about 10% of the rest"
    clock[0] += 1
    assert [sampler.decide("localhost", "GET", "/") for _ in range(5)] == [True] * 5


def test_requests_the_rule_does_not_match_get_the_xray_default(monkeypatch):
    monkeypatch.setattr(sampling.time, "time", lambda: 1_800_000_000.0)
    rule = SamplingRule(name="Posts", fixed_rate=1.0, reservoir_size=0, http_method="POST", url_path="/api/*")
    sampler = XRayRuleSampler(rule, "backend-flask", random.Random(1))
    assert all(sampler.decide("h", "post", "/api/activities") for _ in range(50))
    gets = [sampler.decide("h", "GET", "/api/activities") for _ in range(1000)]
    assert gets[0] is True and 20 < sum(gets) < 90, "1/s reservoir, then 5%"


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [("*", "", True), ("/api/*", "/api/x", True), ("/api/?", "/api/xy", False), ("*4567*", "localhost:4567", True)],
)
def test_xray_wildcards(pattern, value, matches):
    assert SamplingRule("r", 0, 0, url_path=pattern).matches("s", "h", "GET", value) is matches


def test_both_tools_keep_exactly_the_same_requests(make_app, span_exporter, xray_daemon):
    app = make_app(
        {
            "TELEMETRY_SPAN_EXPORTER": span_exporter,
            "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address,
            "CRUDDUR_SAMPLING_RULE": "aws/json/xray.json",
        }
    )
    client = app.test_client()
    headers = [client.get("/api/activities/home").headers["X-Amzn-Trace-Id"] for _ in range(300)]
    kept_by_header = {h.split(";")[0].removeprefix("Root=") for h in headers if h.endswith("Sampled=1")}
    kept_by_otel = {
        xray_id(s.context.trace_id) for s in span_exporter.get_finished_spans() if s.kind == SpanKind.SERVER
    }
    kept_by_xray = {segment["trace_id"] for segment in xray_daemon.wait_for_segments(len(kept_by_otel))}
    assert kept_by_otel == kept_by_xray == kept_by_header
    assert 5 <= len(kept_by_otel) < 150, "the reservoir, then about 10%"
    assert len({h.split(";")[0] for h in headers}) == 300, "every request has its own trace id, kept or not"


def test_without_opentelemetry_xray_follows_the_same_rule(make_app, xray_daemon):
    app = make_app(
        {
            "OTEL_SDK_DISABLED": "true",
            "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address,
            "CRUDDUR_SAMPLING_RULE": str(PRODUCTION_RULE),
        }
    )
    client = app.test_client()
    headers = [client.get("/api/activities/home").headers["X-Amzn-Trace-Id"] for _ in range(200)]
    kept = {h.split(";")[0].removeprefix("Root=") for h in headers if h.endswith("Sampled=1")}
    assert 5 <= len(kept) < 100
    assert {segment["trace_id"] for segment in xray_daemon.wait_for_segments(len(kept))} == kept


def test_the_standard_sampler_setting_wins_for_both(make_app, span_exporter, xray_daemon):
    app = make_app(
        {
            "TELEMETRY_SPAN_EXPORTER": span_exporter,
            "AWS_XRAY_DAEMON_ADDRESS": xray_daemon.address,
            "CRUDDUR_SAMPLING_RULE": "aws/json/xray.json",
            "OTEL_TRACES_SAMPLER": "always_off",
        }
    )
    for _ in range(20):
        assert app.test_client().get("/api/activities/home").headers["X-Amzn-Trace-Id"].endswith("Sampled=0")
    assert span_exporter.get_finished_spans() == ()
    assert xray_daemon.wait_for_segments(1, timeout=0.3) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{}", "cannot read"),
        (json.dumps({"SamplingRule": {"RuleName": "x", "FixedRate": 2, "ReservoirSize": 1}}), "FixedRate"),
    ],
)
def test_a_broken_rule_file_is_refused_at_start(make_app, tmp_path, content, message):
    path = tmp_path / "rule.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        make_app({"CRUDDUR_SAMPLING_RULE": str(path)})


def test_an_unknown_standard_sampler_is_refused_at_start(make_app):
    with pytest.raises(ConfigError, match="OTEL_TRACES_SAMPLER"):
        make_app({"OTEL_TRACES_SAMPLER": "sometimes"})
