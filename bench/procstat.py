"""CPU seconds and peak RSS of processes, read from /proc (Linux only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    cpu_s: float
    peak_rss_mb: float


def family(pid: int) -> list[int]:
    """`pid` and its descendants (NGINX's master and its workers)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(child) for child in children)
    return pids


def usage(pid: int) -> Usage:
    """CPU (user + system) and VmHWM summed over `pid` and its descendants; 0 for gone processes."""
    cpu = 0.0
    peak_kb = 0
    for member in family(pid):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        cpu += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak_kb += int(line.split()[1])
    return Usage(cpu, peak_kb / 1024)
