"""`flask --app app telemetry status|check|spend|trace`: see, verify, cost and read the tools from one command.

The app these commands run in was built for a command (`create_app` knows): no tool started and
no start-up line was written, so stdout carries only the command's own output.
"""

from __future__ import annotations

import json
import sys

import click
from flask import current_app
from flask.cli import AppGroup

from cruddur.telemetry import checks, cloudwatch, spend, waterfall
from cruddur.telemetry.ids import find_trace_id
from cruddur.telemetry.local_traces import LocalTraceFile, latest, read_traces

MARKS = {"ok": "ok ", "failed": "FAIL", "off": "off "}


def _telemetry():  # noqa: ANN202 - the app's Telemetry, typed where it is defined
    return current_app.extensions["cruddur"].telemetry


@click.group("telemetry", cls=AppGroup)
def telemetry_cli() -> None:
    """See, verify and cost Honeycomb, X-Ray, CloudWatch Logs and Rollbar."""


@telemetry_cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(as_json: bool) -> None:
    """Which tools are on, where they send, the sampling in force; no network calls."""
    telemetry = _telemetry()
    settings = telemetry.settings
    cloudwatch_line, cloudwatch_on = cloudwatch.status_line(settings.cloudwatch)
    lines = {
        "opentelemetry": settings.otel.describe(),
        "xray": settings.xray.describe(telemetry.xray_off),
        "sampling": f"Sampling: {telemetry.sampling_description}",
        "cloudwatch": cloudwatch_line,
        "rollbar": settings.rollbar.describe(),
        "metrics": settings.metrics.describe(cloudwatch_on and settings.metrics.emf_wanted),
    }
    if as_json:
        click.echo(json.dumps(lines))
        return
    for line in lines.values():
        click.echo(line)


@telemetry_cli.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON report.")
def check(as_json: bool) -> None:
    """Verify every tool that is on, each within a timeout; exit 1 when any fails."""
    settings = _telemetry().settings
    reports = checks.run_checks(settings, cloudwatch.missing_setting(settings.cloudwatch))
    failed = any(report.state == "failed" for report in reports)
    if as_json:
        click.echo(json.dumps({"ok": not failed, "tools": [report.as_dict() for report in reports]}))
    else:
        for report in reports:
            _print_report(report)
        click.echo("")
        click.echo(
            "Some checks failed: fix what is marked FAIL and run this again." if failed else "All checks passed."
        )
    sys.exit(1 if failed else 0)


def _print_report(report: checks.ToolReport) -> None:
    if report.state == "off":
        click.echo(f"[{MARKS['off']}] {report.tool}: {report.off_because}")
        return
    click.echo(f"[{MARKS[report.state]}] {report.tool}")
    for step in report.steps:
        click.echo(f"       {'✓' if step.ok else '✗'} {step.name}: {step.detail}")
        if step.fix:
            click.echo(f"         fix: {step.fix}")


@telemetry_cli.command("spend")
@click.option("--requests-per-day", type=click.FloatRange(min=0), required=True, help="Expected traffic.")
@click.option("--error-rate", type=click.FloatRange(0, 1), default=0.01, show_default=True, help="Share that fail.")
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Serving processes (gunicorn workers times tasks); each has its own sampling reservoir.",
)
def spend_command(requests_per_day: float, error_rate: float, processes: int) -> None:
    """Monthly volume per tool against its free tier, from what this service really emits."""
    telemetry = _telemetry()
    emitted = spend.measure_emitted()
    lines, sampling = spend.monthly_volumes(telemetry.settings, emitted, requests_per_day, error_rate, processes)
    click.echo(
        f"Measured per request: {emitted.spans:.1f} spans, {emitted.xray_documents:.1f} X-Ray documents, "
        f"{emitted.span_bytes:.0f} span bytes (OTLP), {emitted.log_bytes:.0f} log bytes; "
        f"a failure adds {emitted.error_log_bytes:.0f} log bytes."
    )
    events, emf_bytes = spend.metric_volumes(telemetry.settings, emitted, requests_per_day, processes)
    click.echo(
        f"Metrics per process every {telemetry.settings.metrics.interval_seconds:g} s: "
        f"{emitted.metric_series:.0f} OTLP data points, EMF lines of {emitted.emf_route_line_bytes:.0f} bytes "
        f"for each route served and {emitted.emf_worker_line_bytes:.0f} for the worker; per month "
        f"{events:,.0f} metric events, {emf_bytes / spend.GIGABYTE:,.3f} GB of EMF."
    )
    click.echo(
        f"CloudWatch custom metrics: {emitted.custom_metrics} ({len(spend.emf.ROUTE_METRICS)} per route for "
        f"{emitted.routes} routes, and the service's own), ${spend.custom_metrics_price(emitted):,.2f}/month "
        f"at ${spend.CLOUDWATCH_METRIC_PRICE:.2f} each beyond the free {spend.FREE_TIERS['CloudWatch metrics'][0]:.0f}."
    )
    click.echo(
        f"At {requests_per_day:,.0f} requests/day ({requests_per_day / spend.SECONDS_PER_DAY:.2f}/s "
        f"over {processes} process(es)), "
        f"{error_rate:.1%} failing; sampling: {sampling}."
    )
    click.echo("")
    click.echo(f"{'tool':<18} {'per month':>14} {'free tier':>28} {'share':>8}  free tier runs out at")
    for line in lines:
        monthly = f"{line.monthly:,.2f}" if line.unit == "GB ingested" else f"{line.monthly:,.0f}"
        if line.free is None:
            click.echo(f"{line.tool:<18} {monthly:>14} {f'no free tier ({line.unit})':>28} {'-':>8}  -")
            continue
        limit = f"{line.exhausted_at_per_day:,.0f} requests/day" if line.exhausted_at_per_day is not None else "never"
        click.echo(f"{line.tool:<18} {monthly:>14} {f'{line.free:,.0f} {line.unit}':>28} {line.share:>8.1%}  {limit}")
    click.echo("")
    click.echo(
        "Free tiers as stated in cruddur/telemetry/spend.py FREE_TIERS (per month); X-Ray scanned assumes each "
        "recorded trace is read once. Volumes are what each tool receives when it is on."
    )
    indexed = (
        f"counts the {spend.INDEXED_SHARE:.0%} of traces Transaction Search indexes by default"
        if telemetry.settings.xray.mode == "otlp"
        else "is classic X-Ray (SDK and daemon)"
    )
    click.echo(
        f"{spend.TRANSACTION_SEARCH}: the spans X-Ray's OTLP endpoint stores in CloudWatch (aws/spans), as "
        f"OTLP bytes, billed per GB of spans ingested; X-Ray above {indexed}."
    )


@telemetry_cli.command("trace")
@click.argument("trace", required=False)
@click.option("--last", "last", type=click.IntRange(min=1), help="The N traces that finished last.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document with the spans and log lines.")
def trace_command(trace: str | None, last: int | None, as_json: bool) -> None:
    """Draw a trace from the local trace file: TRACE is its id in any form (the X-Amzn-Trace-Id
    header, a 32-hex id, an error body, a log line); without it, the latest trace."""
    settings = _telemetry().settings.otel
    if trace is not None and last is not None:
        raise click.UsageError("give a trace id or --last N, not both")
    if settings.local_traces is None:
        raise click.ClickException(
            f"no local trace file is written ({settings.describe()}); "
            "set CRUDDUR_LOCAL_TRACES=true (or a path) to keep spans here as well"
        )
    traces = read_traces(LocalTraceFile(settings.local_traces))
    if trace is not None:
        trace_id = find_trace_id(trace)
        if trace_id is None:
            raise click.UsageError(f"no trace id in {trace!r}: give 32 hex digits or the 1-xxxxxxxx-… X-Ray form")
        if trace_id not in traces:
            raise click.ClickException(
                f"trace {trace_id} is not in {settings.local_traces}: it may not have been sampled, "
                "or it is older than what the file keeps"
            )
        chosen = [traces[trace_id]]
    else:
        chosen = latest(traces, last or 1)
        if not chosen:
            raise click.ClickException(
                f"no trace in {settings.local_traces} yet: serve a request (make run, then curl) and try again"
            )
    if as_json:
        click.echo(json.dumps({"file": str(settings.local_traces), "traces": [t.as_dict() for t in chosen]}))
        return
    for index, item in enumerate(chosen):
        if index:
            click.echo("")
        for line in waterfall.render(item, click.style):
            click.echo(line)
