"""The way in: `make run` installs only the service, `make test` adds the tools, plain `pytest` works."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def dry_run(target: str, tmp_path: Path) -> str:
    """What `make TARGET` would run in a fresh clone (no .venv yet), without running it."""
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    completed = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path / '.venv'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return completed.stdout


def installs(commands: str) -> list[str]:
    return re.findall(r"-r (\S+)", "\n".join(line for line in commands.splitlines() if "pip install" in line))


def test_make_run_installs_only_what_the_service_needs(tmp_path):
    commands = dry_run("run", tmp_path)
    assert installs(commands) == ["backend-flask/requirements.txt"]
    assert "gunicorn app:app" in commands


@pytest.mark.parametrize("target", ["test", "lint"])
def test_make_test_and_lint_add_the_tools(tmp_path, target):
    assert "requirements-dev.txt" in installs(dry_run(target, tmp_path))


def test_the_service_imports_nothing_from_the_test_tools():
    """The runtime lock must be enough: no module of backend-flask imports a test or lint tool."""
    dev_only = {"pytest", "hypothesis", "schemathesis", "moto", "yaml", "openapi_core", "ruff", "piptools"}
    for path in (REPO / "backend-flask").rglob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.match(r"\s*(?:from|import) ([A-Za-z_][A-Za-z0-9_]*)", line)
            assert not (match and match[1] in dev_only), f"{path}: {line.strip()}"


def test_plain_pytest_from_the_repository_root_after_activating():
    """What the README says next to `make test`: `. .venv/bin/activate`, then `pytest`."""
    environ = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "PYTEST_ADDOPTS"}}
    environ["PATH"] = f"{VENV_BIN}{os.pathsep}{environ.get('PATH', '')}"
    environ["VIRTUAL_ENV"] = str(VENV_BIN.parent)
    completed = subprocess.run(
        ["pytest", "-q", "tests/test_health_and_cors.py"],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert " passed" in completed.stdout
