"""The four observability tools, set up together per process and shut down under one deadline."""

from __future__ import annotations

import logging

from flask import Flask

from cruddur.config import Settings
from cruddur.telemetry.tracing import Tracing

log = logging.getLogger(__name__)


class Telemetry:
    """Per-app telemetry state, kept in `app.extensions["cruddur"].telemetry`."""

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    def current_trace_id(self) -> str | None:
        return None

    def report_failure(self, error: BaseException) -> None:
        log.error("unhandled exception", exc_info=error)

    def shutdown(self, timeout: float | None = None) -> None:
        return None


def init_app(app: Flask, settings: Settings, version: str) -> Telemetry:
    return Telemetry(Tracing())
