"""`make bench` in a tiny quick mode: it runs end to end and writes a well-formed report.

No assertion is made on the numbers' values: performance is measured by the benchmark, never by
a timed test. Also: wrk's output is read correctly, and the stand-ins speak each tool's protocol.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import boto3
import botocore.config
import pytest
from botocore.credentials import Credentials
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from bench import run as bench_run
from bench import stand_ins
from bench.load import parse_wrk
from bench.run import AUTH_NAME, END_MARKER, START_MARKER, TOOL_NAMES, BenchToken
from cruddur import create_app
from cruddur.telemetry.xray_otlp import SigV4Session

REPO = Path(__file__).resolve().parents[1]

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:4567/api/activities/home
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.14ms    6.20ms  80.10ms   95.12%
    Req/Sec   633.92    124.16   797.00     74.40%
  Latency Distribution
     50%  812.00us
     75%    5.30ms
     90%    9.81ms
     99%    1.05s
  6339 requests in 10.00s, 9.91MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:    633.90
Transfer/sec:      0.99MB
"""


def test_wrk_output_is_read_with_its_units() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.requests == 6339
    assert result.seconds == pytest.approx(10.0)
    assert result.rps == pytest.approx(633.9)
    assert result.p50_ms == pytest.approx(0.812)
    assert result.p99_ms == pytest.approx(1050.0)
    assert result.errors == 7


def test_wrk_output_without_a_latency_distribution_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot read"):
        parse_wrk("Running 1s test @ http://127.0.0.1:1/\n  0 requests in 1.00s, 0B read\n")


@pytest.fixture
def backends():
    addresses, stop = stand_ins.serve()
    yield addresses
    stop.set()


def test_stand_ins_answer_the_otlp_exporter(backends) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{backends['http']}/v1/traces", timeout=5)
    provider = TracerProvider()
    results = []

    class Recording(SimpleSpanProcessor):
        def on_end(self, span) -> None:
            results.append(exporter.export([span]))

    provider.add_span_processor(Recording(exporter))
    with provider.get_tracer("bench-test").start_as_current_span("one"):
        pass
    assert results == [SpanExportResult.SUCCESS]


def test_stand_ins_answer_cloudwatch_logs_as_boto3_expects(backends, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "fake")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake")
    client = boto3.client(
        "logs",
        region_name="us-east-1",
        endpoint_url=backends["http"],
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )
    assert client.describe_log_groups(logGroupNamePrefix="cruddur")["logGroups"] == []
    client.create_log_group(logGroupName="cruddur")
    client.create_log_stream(logGroupName="cruddur", logStreamName="s")
    reply = client.put_log_events(
        logGroupName="cruddur", logStreamName="s", logEvents=[{"timestamp": 1, "message": "x"}]
    )
    assert reply["nextSequenceToken"] == "1"


def test_stand_ins_answer_rollbar_and_count_what_they_got(backends) -> None:
    item = urllib.request.Request(f"{backends['http']}/api/1/item/", data=b'{"data": {}}', method="POST")
    with urllib.request.urlopen(item, timeout=5) as reply:
        assert json.loads(reply.read()) == {"err": 0, "result": {}}
    with urllib.request.urlopen(f"{backends['http']}/stats", timeout=5) as reply:
        stats = json.loads(reply.read())
    assert stats["rollbar"] == {"requests": 1, "bytes": 12}


def test_stand_ins_serve_the_benchmarks_key_set_and_the_app_accepts_its_token(make_app, tmp_path) -> None:
    token = BenchToken.create()
    addresses, stop = stand_ins.serve(jwks=token.jwks.encode())
    try:
        env = bench_run.server_env(bench_run.Variant(frozenset({bench_run.AUTH}), "100%"), addresses, tmp_path / "db")
        app = make_app({name: value for name, value in env.items() if name.startswith("COGNITO_")})
        client = app.test_client()
        assert client.get("/api/message_groups", headers=token.headers).status_code == 200
        assert client.get("/api/message_groups", headers={"Authorization": "Bearer x.y.z"}).status_code == 401
    finally:
        stop.set()


def test_no_configuration_measures_the_development_trace_file(tmp_path) -> None:
    """The local span file is a development convenience, on when no exporter is set: a row that
    turns on metrics or X-Ray over OTLP alone would otherwise pay for writing it too."""
    addresses = {"http": "http://127.0.0.1:9", "xray": "127.0.0.1:9"}
    for tools in bench_run._tool_sets():
        env = bench_run.server_env(bench_run.Variant(frozenset(tools), "100%"), addresses, tmp_path / "db")
        # Exactly the server's settings: the suite's own CRUDDUR_LOCAL_TRACES=false is not the bench's.
        overrides = {"CRUDDUR_LOCAL_TRACES": None, **{k: v for k, v in env.items() if k != "WEB_CONCURRENCY"}}
        app = create_app({"TESTING": True, **overrides})
        try:
            assert app.extensions["cruddur"].telemetry.settings.otel.local_traces is None, tools
        finally:
            app.extensions["cruddur"].telemetry.shutdown(timeout=1)


def _tables(text: str) -> list[list[list[str]]]:
    """Every markdown table in `text`, as rows of cells, the header first and the rule dropped."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def _number(cell: str) -> float:
    """A number as the report writes it: `1,234.5`, `**0.61**`, `3.20x`, `+120`."""
    return float(cell.strip("*").rstrip("x").lstrip("+").replace(",", ""))


def test_quick_benchmark_writes_a_well_formed_report(tmp_path) -> None:
    output = tmp_path / "benchmarks.md"
    env = {
        **os.environ,
        "BENCH_SECONDS": "1",
        "BENCH_ROUNDS": "1",
        "BENCH_WARMUP": "0.2",
        "BENCH_SETTLE": "0.2",
        "BENCH_CPU_REQUESTS": "30",
        "BENCH_CPU_ROUNDS": "1",
        "BENCH_LOAD": "python",
        "BENCH_OUTPUT": str(output),
    }
    completed = subprocess.run(
        [sys.executable, "-m", "bench"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    text = output.read_text()
    assert text.startswith("# Benchmarks")
    assert START_MARKER in text
    assert END_MARKER in text
    assert "- Date: " in text
    assert "- Machine: " in text

    pairs, targets, tools, rounds = _tables(text)
    postgres_skipped = "100% sampling, PostgreSQL: not measured: no PostgreSQL at" in text
    measured = ["100% sampling", "production rule (aws/json/xray.json)"]
    measured += [] if postgres_skipped else ["100% sampling, PostgreSQL"]
    assert pairs[0] == ["sampling", "tools", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "errors"]
    assert [row[1] for row in pairs[1:]] == ["all on", "all off", "**ratio on/off**"] * len(measured)
    assert [row[0] for row in pairs[1::3]] == measured
    for row in pairs[1:]:
        for cell in row[2:6]:
            _number(cell)

    assert targets[0][:6] == [
        "sampling",
        "throughput ratio",
        "target",
        "p99 ratio",
        "target",
        "CPU-bound ratio (off/on CPU)",
    ]
    assert len(targets) == 3
    for row in targets[1:]:
        _number(row[1])
        _number(row[3])
        assert row[-1] in {"yes", "no"}

    assert tools[0][0] == "tool"
    labels = [row[0] for row in tools[1:]]
    for name in [*TOOL_NAMES.values(), AUTH_NAME]:
        assert f"+ {name}" in labels
    for row in tools[1:-1]:
        for cell in row[1:3]:
            _number(cell)

    assert [row[0] for row in rounds[1:]] == measured
    assert "The stand-ins received" in text


def test_a_new_report_keeps_the_text_written_around_the_generated_part(tmp_path, monkeypatch) -> None:
    output = tmp_path / "benchmarks.md"
    output.write_text(f"# Benchmarks\n\nWritten by hand.\n\n{START_MARKER}\nold numbers\n{END_MARKER}\n\nAfter.\n")
    monkeypatch.setattr(bench_run, "render", lambda results: f"{START_MARKER}\nnew numbers\n{END_MARKER}")
    bench_run.write_report(None, output)
    assert output.read_text() == (
        f"# Benchmarks\n\nWritten by hand.\n\n{START_MARKER}\nnew numbers\n{END_MARKER}\n\nAfter.\n"
    )
    output.unlink()
    bench_run.write_report(None, output)
    assert output.read_text().startswith("# Benchmarks: what observability costs")


def test_stand_ins_count_xray_otlp_apart_by_its_signature(backends, monkeypatch) -> None:
    """The benchmark's X-Ray OTLP row is real only if signed exports reach the stand-in."""
    session = SigV4Session(Credentials("bench-fake-access-key-id", "bench-fake-secret"), "us-east-1")
    exporter = OTLPSpanExporter(endpoint=f"{backends['http']}/v1/traces", timeout=5, session=session)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("bench-test").start_as_current_span("one"):
        pass
    with urllib.request.urlopen(f"{backends['http']}/stats", timeout=5) as response:
        stats = json.load(response)
    assert stats["xray_otlp"]["requests"] == 1 and stats["otlp"]["requests"] == 0


def test_only_a_run_asked_to_write_writes_a_report(monkeypatch) -> None:
    """A quick look must not replace the real numbers in docs/benchmarks.md."""
    monkeypatch.delenv("BENCH_OUTPUT", raising=False)
    for name in ("BENCH_SECONDS", "BENCH_ROUNDS", "BENCH_WARMUP", "BENCH_SETTLE", "BENCH_CPU_REQUESTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("BENCH_CPU_ROUNDS", raising=False)
    assert bench_run.Options.parse([]).output is None
    assert bench_run.Options.parse(["--quick"]).output is None
    assert bench_run.Options.parse(["--write"]).output == bench_run.DEFAULT_OUTPUT
    assert bench_run.Options.parse(["--output", "/tmp/x.md"]).output == Path("/tmp/x.md")
    monkeypatch.setenv("BENCH_OUTPUT", "/tmp/y.md")
    assert bench_run.Options.parse([]).output == Path("/tmp/y.md")
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^bench: install\n\t\$\(BIN\)/python -m bench --write$", makefile, re.MULTILINE)
    assert re.search(r"^bench-quick: install\n\t\$\(BIN\)/python -m bench --quick$", makefile, re.MULTILINE)


def test_the_quick_look_is_short(monkeypatch) -> None:
    """--quick: one short round per comparison (a minute on 2 cores); an explicit setting still wins."""
    for name in ("BENCH_SECONDS", "BENCH_ROUNDS", "BENCH_WARMUP", "BENCH_SETTLE", "BENCH_CPU_REQUESTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("BENCH_CPU_ROUNDS", raising=False)
    quick, full = bench_run.Options.parse(["--quick"]), bench_run.Options.parse([])
    assert (quick.rounds, quick.cpu_rounds) == (1, 1)

    def fixed_seconds(options) -> float:
        """The run's timed phases: warm-up per server, the on/off pairs, the settling after them."""
        servers = len(bench_run.SAMPLINGS) * len(bench_run._tool_sets())
        pairs = len(bench_run.SAMPLINGS) * options.rounds * (2 * options.seconds + options.settle)
        return servers * options.warmup + pairs + 2 * options.settle

    assert fixed_seconds(quick) < 30 < 300 < fixed_seconds(full)
    assert quick.cpu_requests * 12 <= 2400, "a few seconds of requests at a few hundred a second"
    assert bench_run.Options.parse(["--quick", "--seconds", "5"]).seconds == 5
