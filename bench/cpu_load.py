"""How busy the machine was while a benchmark timed something (Linux /proc; None elsewhere).

Benchmarks compare two libraries on a 2-core machine: another process taking a share of it
oversubscribes both thread pools and makes ratios meaningless, so each bench reports that share.
"""

from __future__ import annotations

import os


def cpu_ticks() -> tuple[int, int] | None:
    """(busy ticks of the whole machine, ticks of this process), from /proc; None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, int(own[11]) + int(own[12])  # utime + stime of all our threads


def background_share(before: tuple[int, int] | None, after: tuple[int, int] | None, seconds: float) -> float | None:
    """Share of the machine's CPU time that other processes took between two :func:`cpu_ticks`."""
    if before is None or after is None or seconds <= 0:
        return None
    available = seconds * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)
    return max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / available
