"""CPU time of a running process, per thread, from /proc (Linux): no dependency needed.

`/proc/PID/task/TID/schedstat` gives each thread's time on a CPU in nanoseconds; where the
kernel does not provide it, `/proc/PID/task/TID/stat` gives user + system time in clock ticks.
The thread whose id is the process id is the main thread: in a gunicorn sync worker, the one
that serves requests. Every other thread is background work (exporters, senders).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    total_ns: int
    main_ns: int

    def __sub__(self, other: CpuSample) -> CpuSample:
        return CpuSample(self.total_ns - other.total_ns, self.main_ns - other.main_ns)

    @property
    def background_ns(self) -> int:
        return self.total_ns - self.main_ns


def _stat_fields(path: str) -> list[str]:
    with open(path) as stat:
        text = stat.read()
    # The command name, in parentheses, may itself hold spaces and parentheses.
    return text[text.rindex(")") + 2 :].split()


def _thread_ns(pid: int, tid: str) -> int:
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as schedstat:
            return int(schedstat.read().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        fields = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
        return (int(fields[11]) + int(fields[12])) * _TICK_NS


def cpu_sample(pid: int) -> CpuSample:
    """The CPU time of every live thread of `pid`, and of its main thread."""
    total = main = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            spent = _thread_ns(pid, tid)
        except FileNotFoundError:  # the thread ended between listing and reading
            continue
        total += spent
        if tid == str(pid):
            main = spent
    return CpuSample(total, main)


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(f"/proc/{entry}/stat")
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def pin(pid: int, cores: set[int]) -> None:
    """Pin every thread of `pid`; threads it starts later inherit the mask of the one starting them."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
        except ProcessLookupError:
            continue


def process_ns(pid: int | str, with_children: bool = False) -> int:
    """User + system time of a whole process (every thread, live or ended); with `with_children`,
    also of the children it has waited for (wrk runs, for the benchmark itself)."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks * _TICK_NS


def machine_busy_ns() -> tuple[int, int]:
    """CPU time every core of the machine spent busy, and the wall time each core saw, since boot."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy * _TICK_NS, (busy + idle + iowait) * _TICK_NS
