"""One trace drawn in a terminal: the span tree, durations as bars, attributes, status, log lines."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cruddur.telemetry.local_traces import Trace

NAME_WIDTH = 38
BAR_WIDTH = 40
VALUE_WIDTH = 100


def _ms(nanoseconds: float) -> str:
    return f"{nanoseconds / 1e6:.2f} ms"


def _short(value: Any, width: int = VALUE_WIDTH) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _tree(spans: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Spans depth first, children by start time; a span whose parent is not here is a root."""
    ids = {span["span_id"] for span in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        parent = span.get("parent_id") if span.get("parent_id") in ids else None
        children.setdefault(parent, []).append(span)
    ordered: list[tuple[int, dict[str, Any]]] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.get("start") or 0):
            ordered.append((depth, span))
            walk(span["span_id"], depth + 1)

    walk(None, 0)
    return ordered


def _log_time(line: dict[str, Any]) -> int | None:
    try:
        return int(datetime.fromisoformat(line["time"]).timestamp() * 1e9)
    except (KeyError, TypeError, ValueError):
        return None


def render(trace: Trace, style: Callable[..., str] | None = None) -> list[str]:
    """The lines of the waterfall; `style` is `click.style` for colour, or None for plain text."""

    def paint(text: str, **kwargs: Any) -> str:
        return style(text, **kwargs) if style else text

    tree = _tree(trace.spans)
    start = min(span["start"] for span in trace.spans)
    end = max(span["end"] for span in trace.spans)
    total = max(end - start, 1)
    root = tree[0][1]
    failed = any(span.get("status") == "ERROR" for span in trace.spans)
    x_ray = f"1-{trace.trace_id[:8]}-{trace.trace_id[8:]}"
    began = datetime.fromtimestamp(start / 1e9, UTC).isoformat(sep=" ", timespec="milliseconds")
    lines = [
        paint(f"trace {trace.trace_id}", bold=True) + f"  (X-Ray {x_ray})",
        f"{root['name']} · {_ms(total)} · {len(trace.spans)} spans · {root.get('service') or '?'} · {began}"
        + (" · " + paint("ERROR", fg="red", bold=True) if failed else ""),
        "",
        f"{'span':<{NAME_WIDTH}} {'0':<{BAR_WIDTH // 2}}{_ms(total):>{BAR_WIDTH // 2}}",
    ]
    for depth, span in tree:
        offset = round((span["start"] - start) / total * BAR_WIDTH)
        length = max(1, round((span["end"] - span["start"]) / total * BAR_WIDTH))
        offset = min(offset, BAR_WIDTH - length)
        error = span.get("status") == "ERROR"
        bar = " " * offset + paint("█" * length, fg="red" if error else "cyan") + " " * (BAR_WIDTH - offset - length)
        name = _short(("  " * depth) + span["name"], NAME_WIDTH)
        status = paint(f"  ✗ ERROR {span.get('status_message') or ''}".rstrip(), fg="red") if error else ""
        lines.append(f"{name:<{NAME_WIDTH}} {bar} {_ms(span['end'] - span['start']):>10}{status}")
        indent = " " * (2 * depth + 4)
        for key, value in sorted((span.get("attributes") or {}).items()):
            lines.append(paint(f"{indent}{key} = {_short(value)}", dim=True))
        for event in span.get("events") or []:
            attributes = event.get("attributes") or {}
            if event.get("name") == "exception":
                kind, message = attributes.get("exception.type", "?"), attributes.get("exception.message", "")
                lines.append(paint(f"{indent}exception: {kind}: {_short(message)}", fg="red"))
            else:
                lines.append(f"{indent}event {event.get('name')}")
    lines.append("")
    if trace.logs:
        lines.append(paint("log lines", bold=True))
        for line in sorted(trace.logs, key=lambda entry: entry.get("time") or ""):
            at = _log_time(line)
            # Log times have millisecond resolution: a line logged as the trace began reads +0.
            when = f"+{max(0, at - start) / 1e6:8.2f} ms" if at is not None else " " * 12
            level = line.get("level", "")
            colour = {"ERROR": "red", "CRITICAL": "red", "WARNING": "yellow"}.get(level)
            lines.append(
                f"{when}  {paint(f'{level:<7}', fg=colour)} {line.get('logger', '')}: {_short(line.get('message'))}"
            )
            if line.get("exception"):
                lines.extend(paint(f"{' ' * 14}{row}", fg="red") for row in str(line["exception"]).splitlines())
    else:
        lines.append("no log lines recorded for this trace")
    return lines
