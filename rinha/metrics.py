"""Metrics in the Prometheus text exposition format (version 0.0.4), without a dependency.

Why not prometheus_client's writer: its Counter.inc() and Histogram.observe() take a lock and
walk the buckets in Python, and the API node answers a payment in tens of microseconds; measured
against this one on the API node's hot path (bench/api_throughput.py --compare-metrics, figures in
the README's Metrics section) it cost about 7x as much per call and some 10 µs of CPU per request
in a node under load. Here a child is resolved once, up front (`family.labels(...)`), and counting
is plain arithmetic on it (`child.value += 1`, `histogram.observe(s)`); nothing is formatted until
a scrape. A value the code keeps anyway (a
queue's length, a counter on the router) is read by a callable at scrape time instead of being
counted twice. One event loop per process, so no locks.

Every registry starts with the standard process and Python metrics (rinha/runtime_metrics.py),
read at scrape time: whatever node serves a page serves them.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable

from rinha import runtime_metrics
from rinha.http import responses

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class Value:
    """One sample of a counter or a gauge: add to `value`, or give `fn` to read at scrape time."""

    __slots__ = ("value", "fn")

    def __init__(self) -> None:
        self.value: float = 0
        self.fn: Callable[[], float] | None = None

    def read(self) -> float:
        return self.fn() if self.fn is not None else self.value


class HistogramValue:
    """Counts per bucket (not cumulative: one add per observation) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (`le`, less or equal).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class Family:
    """A metric name with its HELP, TYPE and label names; one child per label-value combination."""

    __slots__ = ("name", "help", "kind", "labelnames", "children", "buckets", "header", "prefixes")

    def __init__(self, name: str, help: str, kind: str, labelnames: tuple[str, ...],
                 buckets: tuple[float, ...] = ()) -> None:
        self.name = name
        self.help = help
        self.kind = kind
        self.labelnames = labelnames
        self.buckets = buckets
        self.children: dict[tuple[str, ...], Value | HistogramValue] = {}
        # What a scrape writes that never changes, formatted once: the HELP and TYPE lines, and
        # for each child the start of each of its lines (name and labels), up to the value.
        self.header = f"# HELP {name} {_escape_help(help)}\n# TYPE {name} {kind}"
        self.prefixes: dict[tuple[str, ...], tuple[str, ...]] = {}
        if not labelnames:
            self.labels()  # an unlabelled metric shows 0 before its first increment

    def labels(self, *values: object):
        """The child for these label values, created on first use. Call it once and keep the child:
        this is the lookup the hot path must not pay for."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values!r}")
        key = tuple(str(value) for value in values)
        child = self.children.get(key)
        if child is None:
            child = HistogramValue(self.buckets) if self.kind == "histogram" else Value()
            self.children[key] = child
            self.prefixes[key] = self._prefixes(key)
        return child

    def _prefixes(self, key: tuple[str, ...]) -> tuple[str, ...]:
        """A counter's or gauge's one line start; a histogram's, one per bucket, then _sum, _count."""
        pairs = [f'{name}="{_escape_label(value)}"' for name, value in zip(self.labelnames, key)]
        if self.kind != "histogram":
            return (f"{self.name}{_braces(pairs)} ",)
        les = [f'le="{_number(bound)}"' for bound in (*self.buckets, math.inf)]
        buckets = tuple(f"{self.name}_bucket{_braces([*pairs, le])} " for le in les)
        return (*buckets, f"{self.name}_sum{_braces(pairs)} ", f"{self.name}_count{_braces(pairs)} ")

    def render(self, out: list[str]) -> None:
        out.append(self.header)
        for key, child in self.children.items():
            prefixes = self.prefixes[key]
            if type(child) is Value:
                out.append(prefixes[0] + _number(child.read()))
                continue
            cumulative = 0
            for prefix, count in zip(prefixes, child.counts):
                cumulative += count
                out.append(f"{prefix}{cumulative}")
            out.append(prefixes[-2] + _number(child.sum))
            out.append(f"{prefixes[-1]}{cumulative}")


class Registry:
    """The metrics of one process, rendered in registration order: the process's own first."""

    def __init__(self) -> None:
        self.families: dict[str, Family] = {}
        # Called at the start of every render: a reader that several values share reads once.
        self.before_render: list[Callable[[], None]] = []
        runtime_metrics.register(self)

    def counter(self, name: str, help: str, labels: Iterable[str] = (), fn: Callable[[], float] | None = None) -> Family:
        return self._add(Family(name, help, "counter", tuple(labels)), fn)

    def gauge(self, name: str, help: str, labels: Iterable[str] = (), fn: Callable[[], float] | None = None) -> Family:
        return self._add(Family(name, help, "gauge", tuple(labels)), fn)

    def histogram(self, name: str, help: str, buckets: Iterable[float], labels: Iterable[str] = ()) -> Family:
        bounds = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        return self._add(Family(name, help, "histogram", tuple(labels), bounds), None)

    def _add(self, family: Family, fn: Callable[[], float] | None) -> Family:
        if family.name in self.families:
            raise ValueError(f"metric {family.name} registered twice")
        if fn is not None:
            family.labels().fn = fn  # only an unlabelled family takes `fn` here
        self.families[family.name] = family
        return family

    def render(self) -> bytes:
        for refresh in self.before_render:
            refresh()
        out: list[str] = []
        for family in self.families.values():
            family.render(out)
        out.append("")
        return "\n".join(out).encode()

    def page(self) -> bytes:
        """The whole HTTP answer to `GET /metrics`."""
        return responses.build(200, self.render(), content_type=CONTENT_TYPE)


def _number(value: float) -> str:
    if type(value) is int or type(value) is bool:
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _braces(pairs: list[str]) -> str:
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")
