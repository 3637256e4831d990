"""One sampling decision for every tracer, made from the X-Ray rule in `aws/json/xray.json`.

OpenTelemetry makes the decision with this sampler; the X-Ray segment copies it from the server
span, so both tools keep exactly the same requests. The rule is read in the shape
`aws xray create-sampling-rule --cli-input-json` takes, so the file that configures X-Ray's
console is the one the service follows: a reservoir of `ReservoirSize` requests each second,
then `FixedRate` of the rest. Requests the rule does not match get X-Ray's default rule. The rule
is applied locally, in each process (each has its own reservoir), from the file read at start-up:
X-Ray's centralized sampling is not used, so a rule edited in the console does not reach the app.

Honeycomb multiplies each event by its `SampleRate` attribute to count what was not kept, so every
kept span carries one: the integer 1/FixedRate for a trace kept by the fixed rate, 1 for one kept by
the reservoir or by keep-all. Spans below the server span inherit their parent's rate (the sampler
reads it from the parent span's attributes), so a trace counts the same at every level. A trace
whose caller already decided (a sampled `traceparent`, `Sampled=1`) carries 1: the caller's rate is
not known here. A caller who left the decision open (`Sampled=?`, none) gets ours.
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
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from cruddur.config import ConfigError
from cruddur.telemetry.propagation import xray_caller

#: The attribute Honeycomb scales counts by: this span stands for `SampleRate` spans.
SAMPLE_RATE = "SampleRate"


def sample_rate(fixed_rate: float) -> int:
    """Honeycomb's `SampleRate` for spans kept with probability `fixed_rate`: 1/rate, a whole number
    (exact for rates of the form 1/n, such as 0.1 or 0.05)."""
    return max(1, round(1 / fixed_rate)) if fixed_rate > 0 else 1


def _stamped(attributes: Attributes, rate: int) -> dict:
    return {**attributes, SAMPLE_RATE: rate} if attributes else {SAMPLE_RATE: rate}


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

    @property
    def sample_rate(self) -> int:
        """The `SampleRate` of a request kept by the fixed rate."""
        return sample_rate(self.fixed_rate)

    def kept_per_second(self, requests_per_second: float, processes: int = 1) -> float:
        """Requests kept each second when `requests_per_second` arrive, spread over `processes`,
        each with its own reservoir: the arithmetic the sampler follows."""
        reservoir = self.reservoir_size * processes
        return min(requests_per_second, reservoir) + self.fixed_rate * max(0.0, requests_per_second - reservoir)

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

    def keep(self, host: str, method: str, path: str) -> int:
        """0 to drop the request, else the `SampleRate` it is kept at (1 from the reservoir)."""
        rule = self.rule if self.rule.matches(self.service_name, host, method, path) else XRAY_DEFAULT_RULE
        if self._reservoirs[rule.name].take():
            return 1
        return rule.sample_rate if self._random.random() < rule.fixed_rate else 0

    def decide(self, host: str, method: str, path: str) -> bool:
        return self.keep(host, method, path) > 0

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
        rate = self.keep(
            host=str(attributes.get("http.host") or attributes.get("server.address") or ""),
            method=str(attributes.get("http.method") or attributes.get("http.request.method") or ""),
            path=str(attributes.get("http.target") or attributes.get("url.path") or "").split("?", 1)[0],
        )
        parent_state = get_current_span(parent_context).get_span_context().trace_state
        if not rate:
            return SamplingResult(Decision.DROP, None, parent_state)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, _stamped(attributes, rate), parent_state)

    def get_description(self) -> str:
        rule = self.rule
        exact = rule.fixed_rate == 0 or abs(1 / rule.sample_rate - rule.fixed_rate) < 1e-9
        note = "" if exact else ", not 1/n: Honeycomb's counts are approximate"
        return (
            f"X-Ray rule {rule.name!r}: {rule.reservoir_size}/s per process, then {rule.fixed_rate:.0%} "
            f"(SampleRate {rule.sample_rate}{note})"
        )


class FixedRateSampler(Sampler):
    """A standard root sampler whose kept spans carry the `SampleRate` of its fixed probability."""

    def __init__(self, sampler: Sampler, rate: int) -> None:
        self.sampler = sampler
        self.rate = rate

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
        result = self.sampler.should_sample(parent_context, trace_id, name, kind, attributes, links)
        if not result.decision.is_sampled():
            return result
        return SamplingResult(result.decision, _stamped(attributes, self.rate), result.trace_state)

    def get_description(self) -> str:
        return self.sampler.get_description()


class ContinuingSampler(Sampler):
    """`ParentBased`, extended to X-Ray callers and to `SampleRate`.

    A local parent's decision and rate are the span's. A caller's decision (a `traceparent`'s flag,
    an X-Ray `Sampled=0|1`, with or without `Parent`) stands, at rate 1. With no caller, or an X-Ray
    caller who left it open (`Sampled=?` or none), the root sampler decides.
    """

    def __init__(self, root: Sampler) -> None:
        self.root = root

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
        parent_span = get_current_span(parent_context)
        parent = parent_span.get_span_context()
        if parent.is_valid and not parent.is_remote:
            if not parent.trace_flags.sampled:
                return SamplingResult(Decision.DROP, None, parent.trace_state)
            parent_attributes = getattr(parent_span, "attributes", None) or {}
            rate = parent_attributes.get(SAMPLE_RATE, 1)
            return SamplingResult(Decision.RECORD_AND_SAMPLE, _stamped(attributes, rate), parent.trace_state)
        caller = xray_caller(parent_context)
        if caller is not None:
            decided = caller.sampled
        elif parent.is_valid:
            decided = parent.trace_flags.sampled
        else:
            decided = None
        if decided is None:
            return self.root.should_sample(parent_context, trace_id, name, kind, attributes, links)
        if not decided:
            return SamplingResult(Decision.DROP, None, parent.trace_state)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, _stamped(attributes, 1), parent.trace_state)

    def get_description(self) -> str:
        return f"ParentBased{{root:{self.root.get_description()}}}"


def _ratio(arg: float) -> Sampler:
    return FixedRateSampler(TraceIdRatioBased(arg), sample_rate(arg))


_KEEP_ALL = FixedRateSampler(ALWAYS_ON, 1)

#: `OTEL_TRACES_SAMPLER` values, with their standard meanings (and `SampleRate` on what they keep).
STANDARD_SAMPLERS = {
    "always_on": lambda arg: _KEEP_ALL,
    "always_off": lambda arg: ALWAYS_OFF,
    "traceidratio": _ratio,
    "parentbased_always_on": lambda arg: ContinuingSampler(_KEEP_ALL),
    "parentbased_always_off": lambda arg: ContinuingSampler(ALWAYS_OFF),
    "parentbased_traceidratio": lambda arg: ContinuingSampler(_ratio(arg)),
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
        return Sampling(ContinuingSampler(rule_sampler), f"{rule_sampler.get_description()} from {rule_path}")
    return Sampling(
        ContinuingSampler(_KEEP_ALL), "every request (set CRUDDUR_SAMPLING_RULE=aws/json/xray.json to sample)"
    )
