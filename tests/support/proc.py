"""What a running process looks like from /proc: its children, its resident memory, its threads."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessStatus:
    pid: int
    rss_kib: int
    threads: int


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (gunicorn's workers, for its master)."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may itself contain spaces or parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def wait_for_children(pid: int, count: int, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(found := children(pid)) == count:
            return found
        time.sleep(0.05)
    raise TimeoutError(f"process {pid} has children {children(pid)}, not {count}")


def status(pid: int) -> ProcessStatus:
    """`VmRSS` and `Threads` from /proc/PID/status."""
    values = {}
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        name, _, value = line.partition(":")
        values[name] = value.split()
    return ProcessStatus(pid=pid, rss_kib=int(values["VmRSS"][0]), threads=int(values["Threads"][0]))
