"""Which code is running, for `service.version`, Rollbar's code version and `/api/health`."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

PACKAGE_VERSION = "0.1.0"


def git_revision(directory: Path) -> str | None:
    """The commit checked out around `directory`, when this is a git checkout and git is installed."""
    try:
        completed = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            ["git", "-C", str(directory), "rev-parse", "--short=12", "HEAD"],  # noqa: S607 - git from PATH
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    revision = completed.stdout.strip()
    return revision if completed.returncode == 0 and revision else None


def code_version(environ: Mapping[str, str]) -> str:
    """`CRUDDUR_VERSION` (set by the image build), else the git revision, else the package version."""
    return environ.get("CRUDDUR_VERSION") or git_revision(Path(__file__).parent) or PACKAGE_VERSION
