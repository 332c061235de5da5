"""The standard process and Python runtime metrics, under the names every Prometheus client uses,
so a stock dashboard works on any node: CPU seconds, resident and virtual memory, file
descriptors and start time (read from /proc/self), and the garbage collector's counters.

All of it is read when /metrics is scraped (a few small /proc reads and `gc.get_stats()`), never
counted as the node works: the hot path pays nothing. Registry (rinha/metrics.py) adds them to
every page, so the API nodes and the worker serve them alike.
"""

from __future__ import annotations

import gc
import os
import platform
import resource
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rinha.metrics import Registry

PROC_SELF = "/proc/self"
TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_BYTES = resource.getpagesize()


class ProcStat:
    """The fields of /proc/self/stat (proc(5)) this page needs, read once per scrape: `refresh`
    runs before the page is rendered (Registry.before_render), and the values come from that read.
    One read rather than one per value, since the file costs tens of microseconds to read and an
    API node's scrape runs on its event loop."""

    __slots__ = ("path", "fields")

    def __init__(self, path: str = f"{PROC_SELF}/stat") -> None:
        self.path = path
        self.refresh()

    def refresh(self) -> None:
        """Reads the fields after the command name, which may itself hold spaces and parentheses:
        fields[0] is field 3 of proc(5) (the state)."""
        with open(self.path, "rb") as stat:
            text = stat.read()
        self.fields = text[text.rindex(b")") + 2:].split()

    def cpu_seconds(self) -> float:
        return (int(self.fields[11]) + int(self.fields[12])) / TICKS_PER_S  # utime + stime (fields 14, 15)

    def virtual_bytes(self) -> int:
        return int(self.fields[20])  # vsize (field 23)

    def resident_bytes(self) -> int:
        return int(self.fields[21]) * PAGE_BYTES  # rss in pages (field 24)

    def start_time_s(self) -> float:
        """Since the epoch: starttime (field 22) counts clock ticks from boot."""
        return boot_time_s() + int(self.fields[19]) / TICKS_PER_S


def boot_time_s() -> float:
    with open("/proc/stat", "rb") as stat:
        for line in stat:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def open_fds() -> int:
    return len(os.listdir(f"{PROC_SELF}/fd"))


def max_fds() -> int:
    """The soft limit: what open() runs into first."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def register(registry: Registry) -> None:
    """Adds the process_* and python_* families to `registry`, each read at scrape time."""
    if os.path.exists(f"{PROC_SELF}/stat"):  # Linux; elsewhere there is no /proc to read
        stat = ProcStat()
        registry.before_render.append(stat.refresh)
        start = stat.start_time_s()  # fixed for the process's life: read once
        registry.counter("process_cpu_seconds_total",
                         "CPU time of this process, user and system, in seconds (/proc/self/stat).",
                         fn=stat.cpu_seconds)
        registry.gauge("process_virtual_memory_bytes", "Virtual memory of this process in bytes.",
                       fn=stat.virtual_bytes)
        registry.gauge("process_resident_memory_bytes", "Resident memory (RSS) of this process in bytes.",
                       fn=stat.resident_bytes)
        registry.gauge("process_start_time_seconds", "When this process started, in seconds since the Unix epoch.",
                       fn=lambda: start)
        registry.gauge("process_open_fds", "File descriptors this process holds open.", fn=open_fds)
        registry.gauge("process_max_fds", "Most file descriptors this process may open (the soft RLIMIT_NOFILE).",
                       fn=max_fds)
    collected = registry.counter("python_gc_objects_collected_total",
                                 "Objects the garbage collector freed, by generation.", ("generation",))
    uncollectable = registry.counter("python_gc_objects_uncollectable_total",
                                     "Objects the garbage collector found but could not free, by generation.",
                                     ("generation",))
    collections = registry.counter("python_gc_collections_total", "Collections of each generation.",
                                   ("generation",))
    for generation in range(len(gc.get_stats())):
        collected.labels(generation).fn = lambda g=generation: gc.get_stats()[g]["collected"]
        uncollectable.labels(generation).fn = lambda g=generation: gc.get_stats()[g]["uncollectable"]
        collections.labels(generation).fn = lambda g=generation: gc.get_stats()[g]["collections"]
    version = sys.version_info
    registry.gauge("python_info", "The Python interpreter running this process (always 1).",
                   ("implementation", "major", "minor", "patchlevel", "version")).labels(
        platform.python_implementation(), version.major, version.minor, version.micro,
        platform.python_version()).value = 1
