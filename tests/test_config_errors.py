"""A setting the app cannot use stops it with one line that names the setting, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import run_in_backend

BIN = Path(sys.executable).parent
BAD_SETTINGS = [
    ({"CRUDDUR_MAX_BODY_BYTES": "lots"}, "CRUDDUR_MAX_BODY_BYTES='lots' is not a whole number"),
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER='zipkin': zipkin is not available"),
    ({"DATABASE_URL": "/no/such/folder/cruddur.db"}, "DATABASE_URL='/no/such/folder/cruddur.db': the folder"),
]


def started(command: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess:
    return run_in_backend(command, {**os.environ, **environ})


def assert_one_clear_line(completed: subprocess.CompletedProcess, message: str) -> None:
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0
    assert "Traceback" not in output
    lines = [line for line in completed.stderr.splitlines() if message in line]
    assert lines and all(line.startswith("cruddur: configuration error: ") for line in lines), output


@pytest.mark.parametrize(("environ", "message"), BAD_SETTINGS)
def test_under_flask(environ, message):
    assert_one_clear_line(started([str(BIN / "flask"), "--app", "app", "telemetry", "status"], environ), message)


@pytest.mark.parametrize(("environ", "message"), BAD_SETTINGS[:1])
def test_under_gunicorn_the_master_stops_instead_of_restarting_workers(environ, message):
    completed = started([str(BIN / "gunicorn"), "app:app", "-b", "127.0.0.1:0", "-w", "1"], environ)
    assert completed.returncode == 4, "gunicorn's 'App failed to load.'"
    assert_one_clear_line(completed, message)
