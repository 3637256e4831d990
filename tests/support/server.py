"""The real service under gunicorn, started from backend-flask/ exactly as `make run` does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import requests

BACKEND = Path(__file__).resolve().parents[2] / "backend-flask"
GUNICORN = Path(sys.executable).with_name("gunicorn")


def run_in_backend(args: Sequence[str], env: Mapping[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """A command run from backend-flask/ with exactly `env`, as a user types it there; output as text."""
    return subprocess.run(
        list(args), cwd=BACKEND, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Gunicorn:
    """`gunicorn app:app` on a free loopback port, with its output captured to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int = 1, extra_args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "HONEYCOMB_", "AWS_", "ROLLBAR_", "CLOUDWATCH_", "CRUDDUR_"))
        }
        self.process = subprocess.Popen(
            [str(GUNICORN), "app:app", "-b", f"127.0.0.1:{self.port}", "-w", str(workers), *extra_args],
            cwd=BACKEND,
            env={
                **clean,
                "PYTHONUNBUFFERED": "1",
                "AWS_EC2_METADATA_DISABLED": "true",
                "CRUDDUR_LOCAL_TRACES": "false",
                **env,
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30) -> Gunicorn:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.output()}")
            try:
                if requests.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"gunicorn did not answer within {timeout}s:\n{self.output()}")

    def stop(self, timeout: float = 60) -> float:
        """Send SIGTERM (a graceful stop) and return how long the server took to exit."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return time.monotonic() - started

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> Gunicorn:
        return self.wait_ready()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
