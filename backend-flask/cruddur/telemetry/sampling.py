"""One sampling decision for every tracer, made from the X-Ray rule in `aws/json/xray.json`.

OpenTelemetry makes the decision with this sampler; the X-Ray segment copies it from the server
span, so both tools keep exactly the same requests. The rule is read in the shape
`aws xray create-sampling-rule --cli-input-json` takes, so the file that configures X-Ray's
console is the one the service follows: a reservoir of `ReservoirSize` requests each second,
then `FixedRate` of the rest. Requests the rule does not match get X-Ray's default rule.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from cruddur.config import ConfigError


@lru_cache(maxsize=64)
def _wildcard(pattern: str) -> re.Pattern[str]:
    """X-Ray's matching: `*` any run of characters, `?` one character, case-insensitive."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.IGNORECASE)


@dataclass(frozen=True)
class SamplingRule:
    name: str
    fixed_rate: float
    reservoir_size: int
    service_name: str = "*"
    host: str = "*"
    http_method: str = "*"
    url_path: str = "*"

    @classmethod
    def load(cls, path: Path) -> SamplingRule:
        """Read a `create-sampling-rule` input file, refusing at start-up anything X-Ray would refuse."""
        try:
            rule = json.loads(path.read_text())["SamplingRule"]
            loaded = cls(
                name=str(rule["RuleName"]),
                fixed_rate=float(rule["FixedRate"]),
                reservoir_size=int(rule["ReservoirSize"]),
                service_name=str(rule.get("ServiceName", "*")),
                host=str(rule.get("Host", "*")),
                http_method=str(rule.get("HTTPMethod", "*")),
                url_path=str(rule.get("URLPath", "*")),
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"CRUDDUR_SAMPLING_RULE: cannot read a sampling rule from {path}: {error!r}") from None
        if not 0 <= loaded.fixed_rate <= 1 or loaded.reservoir_size < 0:
            raise ConfigError(f"CRUDDUR_SAMPLING_RULE: {path} needs 0 <= FixedRate <= 1 and ReservoirSize >= 0")
        return loaded

    def matches(self, service: str, host: str, method: str, path: str) -> bool:
        return all(
            _wildcard(pattern).fullmatch(value or "") is not None
            for pattern, value in (
                (self.service_name, service),
                (self.host, host),
                (self.http_method, method),
                (self.url_path, path),
            )
        )


#: What X-Ray applies to requests no rule matches: one a second, then 5%.
XRAY_DEFAULT_RULE = SamplingRule(name="Default", fixed_rate=0.05, reservoir_size=1)


class _Reservoir:
    """Up to `size` yeses in each wall-clock second, shared by the threads of one process."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._second = 0
        self._taken = 0

    def take(self) -> bool:
        now = int(time.time())
        with self._lock:
            if now != self._second:
                self._second, self._taken = now, 0
            if self._taken < self.size:
                self._taken += 1
                return True
            return False


class XRayRuleSampler(Sampler):
    """An OpenTelemetry root sampler that applies an X-Ray sampling rule."""

    def __init__(self, rule: SamplingRule, service_name: str, rng: random.Random | None = None) -> None:
        self.rule = rule
        self.service_name = service_name
        self._random = rng or random.Random()
        self._reservoirs = {rule.name: _Reservoir(rule.reservoir_size), "Default": _Reservoir(1)}

    def decide(self, host: str, method: str, path: str) -> bool:
        rule = self.rule if self.rule.matches(self.service_name, host, method, path) else XRAY_DEFAULT_RULE
        return self._reservoirs[rule.name].take() or self._random.random() < rule.fixed_rate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        attributes = attributes or {}
        keep = self.decide(
            host=str(attributes.get("http.host") or attributes.get("server.address") or ""),
            method=str(attributes.get("http.method") or attributes.get("http.request.method") or ""),
            path=str(attributes.get("http.target") or attributes.get("url.path") or "").split("?", 1)[0],
        )
        parent_state = get_current_span(parent_context).get_span_context().trace_state
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE if keep else Decision.DROP,
            attributes if keep else None,
            parent_state,
        )

    def get_description(self) -> str:
        rule = self.rule
        return f"X-Ray rule {rule.name!r}: {rule.reservoir_size}/s, then {rule.fixed_rate:.0%}"


#: `OTEL_TRACES_SAMPLER` values, with their standard meanings.
STANDARD_SAMPLERS = {
    "always_on": lambda arg: ALWAYS_ON,
    "always_off": lambda arg: ALWAYS_OFF,
    "traceidratio": lambda arg: TraceIdRatioBased(arg),
    "parentbased_always_on": lambda arg: ParentBased(ALWAYS_ON),
    "parentbased_always_off": lambda arg: ParentBased(ALWAYS_OFF),
    "parentbased_traceidratio": lambda arg: ParentBased(TraceIdRatioBased(arg)),
}


class Sampling(NamedTuple):
    sampler: Sampler
    description: str


def build_sampler(
    otel_sampler: str | None, otel_sampler_arg: str | None, rule_path: Path | None, service_name: str
) -> Sampling:
    """`OTEL_TRACES_SAMPLER` when set (explicit standard settings win), else the X-Ray rule, else all.

    Parent-based unless the standard setting says otherwise: a caller's decision stands.
    """
    if otel_sampler:
        if otel_sampler not in STANDARD_SAMPLERS:
            raise ConfigError(f"OTEL_TRACES_SAMPLER={otel_sampler!r} is not one of {', '.join(STANDARD_SAMPLERS)}")
        try:
            ratio = float(otel_sampler_arg) if otel_sampler_arg else 1.0
        except ValueError:
            raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG={otel_sampler_arg!r} is not a number") from None
        sampler = STANDARD_SAMPLERS[otel_sampler](ratio)
        return Sampling(sampler, f"OTEL_TRACES_SAMPLER={otel_sampler} ({sampler.get_description()})")
    if rule_path:
        rule_sampler = XRayRuleSampler(SamplingRule.load(rule_path), service_name)
        return Sampling(ParentBased(rule_sampler), f"{rule_sampler.get_description()} from {rule_path}")
    return Sampling(ParentBased(ALWAYS_ON), "every request (set CRUDDUR_SAMPLING_RULE=aws/json/xray.json to sample)")
