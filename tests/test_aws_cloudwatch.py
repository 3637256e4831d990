"""aws/cloudwatch.yaml: a valid template whose alarms, dashboard and saved queries read exactly the
metrics and fields the backend writes (EMF lines, access lines)."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import pytest
import yaml
from cfnlint.api import lint
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

from cruddur.telemetry import emf
from cruddur.telemetry.metrics import CpuSince, EmfExporter, GcPauses, _observe_worker

TEMPLATE = Path(__file__).resolve().parents[1] / "aws" / "cloudwatch.yaml"
EMITTED = {
    **{name: (unit, [set(d) for d in emf.ROUTE_DIMENSIONS]) for name, unit in emf.ROUTE_METRICS},
    **{name: (unit, [set(d) for d in emf.WORKER_DIMENSIONS]) for name, unit in emf.WORKER_METRICS},
}
SEARCH = re.compile(r"SEARCH\('\{(?P<schema>[^}]*)\} MetricName=\\?\"(?P<name>\w+)\\?\"")


def template() -> dict:
    return yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))


def resources(kind: str) -> dict[str, dict]:
    return {name: r["Properties"] for name, r in template()["Resources"].items() if r["Type"] == kind}


def dashboard_body() -> dict:
    [dashboard] = resources("AWS::CloudWatch::Dashboard").values()
    body = dashboard["DashboardBody"]["Fn::Sub"]
    return json.loads(re.sub(r"\$\{[^}]+\}", "x", body))


def emitted_documents() -> list[dict]:
    """What the EMF exporter writes for one interval with a route and the worker's own metrics."""
    lines: list[str] = []
    reader = PeriodicExportingMetricReader(EmfExporter("backend-flask", lambda line, _: lines.append(line)), math.inf)
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("t").create_histogram(emf.DURATION, unit="s").record(0.01, {"http.route": "/api/x"})
    _observe_worker(provider, GcPauses(), CpuSince(), lambda: {"cloudwatch": {"queued": 1, "sent": 1, "dropped": 0}})
    reader.collect()
    provider.shutdown()
    return [json.loads(line) for line in lines]


def test_the_template_passes_cfn_lint():
    assert lint(TEMPLATE.read_text(encoding="utf-8"), regions=["us-east-1"]) == []


def test_cfn_lint_does_catch_a_broken_template():
    broken = TEMPLATE.read_text(encoding="utf-8").replace(
        "ComparisonOperator: GreaterThanThreshold", "Comparison: >", 1
    )
    assert lint(broken, regions=["us-east-1"]), "the linter really runs"


def test_every_alarm_reads_a_metric_the_backend_emits_with_its_dimensions_and_unit():
    alarms = resources("AWS::CloudWatch::Alarm")
    assert len(alarms) == 3
    for name, alarm in alarms.items():
        stats = [query["MetricStat"] for query in alarm.get("Metrics", []) if "MetricStat" in query]
        metrics = [stat["Metric"] for stat in stats] or [alarm]
        for metric in metrics:
            assert metric["Namespace"] == emf.NAMESPACE, name
            unit, dimension_sets = EMITTED[metric["MetricName"]]
            assert {d["Name"] for d in metric["Dimensions"]} in dimension_sets, name
            assert alarm.get("Unit", unit) == unit, name


def test_the_alarms_fire_where_the_issue_says():
    alarms = resources("AWS::CloudWatch::Alarm")
    rate = alarms["ErrorRateAlarm"]
    assert (rate["Threshold"], rate["EvaluationPeriods"], rate["DatapointsToAlarm"]) == (1, 5, 5)
    assert {q["MetricStat"]["Period"] for q in rate["Metrics"] if "MetricStat" in q} == {60}, "5 one-minute periods"
    [expression] = [q["Expression"] for q in rate["Metrics"] if q.get("ReturnData")]
    assert "100 * errors / requests" in expression
    latency = alarms["LatencyAlarm"]
    assert (latency["ExtendedStatistic"], latency["Threshold"], latency["Unit"]) == ("p99", 1000, "Milliseconds")
    dropped = alarms["TelemetryDroppedAlarm"]
    assert (dropped["MetricName"], dropped["Statistic"], dropped["Threshold"]) == ("TelemetryDropped", "Sum", 0)
    for alarm in alarms.values():
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert alarm["TreatMissingData"] == "notBreaching", "no traffic is not an outage"


def test_every_dashboard_metric_is_one_the_backend_emits():
    widgets = dashboard_body()["widgets"]
    seen = set()
    for widget in widgets:
        for row in widget["properties"].get("metrics", []):
            for item in row:
                if isinstance(item, dict) and "expression" in item and "SEARCH" in item["expression"]:
                    match = SEARCH.search(item["expression"])
                    schema = match["schema"].split(",")
                    assert schema[0] == emf.NAMESPACE
                    assert set(schema[1:]) in EMITTED[match["name"]][1]
                    seen.add(match["name"])
            if isinstance(row[0], str):
                namespace, name, *rest = row
                dimensions = {key for key in rest[0:-1:2] if isinstance(key, str)}
                assert namespace == emf.NAMESPACE and dimensions in EMITTED[name][1], row
                seen.add(name)
    assert {"Requests", "Latency", "Errors5xx", "TelemetryDropped"} <= seen
    titles = " ".join(widget["properties"]["title"] for widget in widgets)
    for wanted in ("Requests per route", "p99 latency per route", "5xx rate per route", "Telemetry dropped"):
        assert wanted in titles


def _query_fields(query: str) -> set[str]:
    without_strings = re.sub(r"\"[^\"]*\"|'[^']*'", "", query)
    words = set(re.findall(r"(?<![@\w.])[A-Za-z_][\w.]*", without_strings))
    keywords = {"fields", "filter", "stats", "sort", "limit", "by", "as", "and", "or", "desc", "asc", "sum"}
    keywords |= {"ispresent", "bin", "SOURCE", "m", "errors", "requests", "error_rate"}
    return {word for word in words if word not in keywords and not word.startswith("TRACE_ID")}


def test_saved_queries_and_the_log_widget_read_fields_the_backend_writes(make_app, capsys):
    make_app().test_client().get("/api/activities/home")
    [access] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"cruddur.access"' in line]
    flat = {f"http.{key}" for key in access["http"]} | set(access)
    for document in emitted_documents():
        assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == emf.NAMESPACE
        flat |= set(document)
    queries = {name: q["QueryString"] for name, q in resources("AWS::Logs::QueryDefinition").items()}
    assert {"TraceByIdQuery", "SlowestRequestsQuery", "ErrorsByRouteQuery"} <= set(queries)
    widget_queries = [w["properties"]["query"] for w in dashboard_body()["widgets"] if w["type"] == "log"]
    for query in [*queries.values(), *widget_queries]:
        code = "\n".join(line for line in query.splitlines() if not line.lstrip().startswith("#"))
        assert _query_fields(code) <= flat, query


@pytest.fixture(autouse=True)
def _quiet() -> None:
    logging.getLogger("cfnlint").setLevel(logging.ERROR)
