"""X-Ray without its SDK or daemon: spans over OTLP/HTTP to `https://xray.<region>.amazonaws.com/v1/traces`.

Requests are signed SigV4 (service `xray`) with botocore, from boto3's credential chain; the
credentials object is asked for current keys on every request, so assumed, instance and task
roles refresh as they do for boto3 itself.

Encoding a batch into OTLP protobuf is the largest single cost of tracing, so `SharedBytesExporter`
encodes each batch once and posts the same bytes to every destination (Honeycomb or any OTLP
endpoint, and X-Ray), each with its own headers or signature, compression, timeout, retries and
failure count. It runs in the BatchSpanProcessor's thread: nothing here is on the request path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import boto3
import botocore.exceptions
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from cruddur.telemetry.settings import XRaySettings

log = logging.getLogger(__name__)

SIGNING_SERVICE = "xray"
#: What X-Ray's OTLP endpoint refuses whole (CloudWatch "OTLP Endpoints", limits for traces):
#: requests over 5 MB before compression, or with more than 10,000 spans.
XRAY_MAX_REQUEST_BYTES = 5 * 1024 * 1024
XRAY_MAX_SPANS = 10_000
#: The only headers an X-Ray request carries besides its signature. The OTLP exporter adds
#: `OTEL_EXPORTER_OTLP_HEADERS` to every request it makes, and those are meant for the other
#: endpoint (they can hold its API key).
XRAY_HEADERS = frozenset({"content-type", "content-encoding", "user-agent"})


def encode(spans: Sequence[ReadableSpan]) -> bytes:
    """One batch as an OTLP `ExportTraceServiceRequest`, exactly as `OTLPSpanExporter` encodes it."""
    return encode_spans(spans).SerializePartialToString()


def resolve_credentials(region: str) -> tuple[Credentials | None, str | None]:
    """boto3's credential chain, or why it has nothing: resolved once, refreshed by botocore on use."""
    try:
        credentials = boto3.Session(region_name=region).get_credentials()
    except botocore.exceptions.BotoCoreError as error:
        return None, f"AWS credentials could not be read for X-Ray: {error}"
    if credentials is None:
        return None, (
            "CRUDDUR_XRAY_MODE=otlp found no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE or an instance or task role"
        )
    return credentials, None


class SigV4Session(requests.Session):
    """A requests session that signs each request it sends (each retry too) with current credentials."""

    def __init__(self, credentials: Credentials, region: str, service: str = SIGNING_SERVICE) -> None:
        super().__init__()
        self.credentials = credentials
        self.region = region
        self.service = service

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        headers = {
            name: value for name, value in (kwargs.pop("headers", None) or {}).items() if name.lower() in XRAY_HEADERS
        }
        signed = AWSRequest(method=method, url=url, data=kwargs.get("data"), headers=headers)
        SigV4Auth(self.credentials.get_frozen_credentials(), self.service, self.region).add_auth(signed)
        return super().request(method, url, headers=dict(signed.headers.items()), **kwargs)


class Destination:
    """One endpoint a batch goes to, with its own client (headers, compression, timeout, retries)
    and its own count of what it could not deliver."""

    def __init__(
        self, name: str, exporter: OTLPSpanExporter, max_bytes: int | None = None, max_spans: int | None = None
    ) -> None:
        self.name = name
        self.exporter = exporter
        self.max_bytes = max_bytes
        self.max_spans = max_spans
        self.sent_batches = 0
        self.failed_batches = 0
        self.failed_spans = 0

    def fits(self, data: bytes, count: int) -> bool:
        return (self.max_bytes is None or len(data) <= self.max_bytes) and (
            self.max_spans is None or count <= self.max_spans
        )

    def send(self, data: bytes, spans: Sequence[ReadableSpan]) -> bool:
        """Post `data` (the encoding of `spans`); a batch over this endpoint's limits goes in halves."""
        if not self.fits(data, len(spans)):
            if len(spans) == 1:
                log.warning(
                    "%s: dropped a span of %d bytes, over its limit of %s", self.name, len(data), self.max_bytes
                )
                return self._failed(1)
            half = len(spans) // 2
            first, second = spans[:half], spans[half:]
            return all([self.send(encode(first), first), self.send(encode(second), second)])
        # The one use of the exporter's internals: `_client` is its HTTP client (retries with
        # backoff on 429/502/503/504 and Retry-After, compression, timeout, shutdown aborting the
        # waits). `OTLPSpanExporter.export` would encode the batch again; this posts encoded bytes.
        result = self.exporter._client.export(data)
        if result.success:
            self.sent_batches += 1
            return True
        log.warning(
            "%s did not take a batch of %d spans: %s",
            self.name,
            len(spans),
            f"HTTP {result.status_code} {result.reason or ''}".strip() if result.status_code else result.error,
        )
        return self._failed(len(spans))

    def _failed(self, spans: int) -> bool:
        self.failed_batches += 1
        self.failed_spans += spans
        return False

    def shutdown(self) -> None:
        self.exporter.shutdown()


class SharedBytesExporter(SpanExporter):
    """Encodes each batch once and posts the same bytes to every destination, one after the other."""

    def __init__(self, destinations: Sequence[Destination]) -> None:
        self.destinations = list(destinations)
        self._shutdown = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            data = encode(spans)
        except Exception:  # a span the encoder refuses must not stop the export thread
            log.exception("could not encode a batch of %d spans", len(spans))
            return SpanExportResult.FAILURE
        delivered = [destination.send(data, spans) for destination in self.destinations]
        return SpanExportResult.SUCCESS if all(delivered) else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        for destination in self.destinations:
            destination.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing is buffered here; the processor holds the queue."""
        return True


def xray_destination(settings: XRaySettings, credentials: Credentials, timeout: float | None) -> Destination:
    """X-Ray's OTLP endpoint, signed with `credentials`; compression as `OTEL_EXPORTER_OTLP_*COMPRESSION` says
    (X-Ray takes gzip or none)."""
    exporter = OTLPSpanExporter(
        endpoint=settings.otlp_endpoint,
        timeout=timeout,
        session=SigV4Session(credentials, settings.region),
    )
    return Destination("AWS X-Ray", exporter, XRAY_MAX_REQUEST_BYTES, XRAY_MAX_SPANS)


def start(settings: XRaySettings, timeout: float | None) -> tuple[Destination | None, str | None]:
    """The X-Ray destination when credentials resolve, or why X-Ray stays off (one start-up line)."""
    credentials, missing = resolve_credentials(settings.region)
    if credentials is None:
        return None, missing
    return xray_destination(settings, credentials, timeout), None
