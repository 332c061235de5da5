"""The API node's metrics written by prometheus_client instead of rinha/metrics.py: the other side
of `bench/api_throughput.py --compare-metrics`.

`LibraryApiMetrics` serves the same families as rinha/api/metrics.py and counts the same way,
children resolved up front, so the comparison is of the two writers and nothing else: on the
hot path (a 202 to POST /payments) one `Counter.inc()` and one `Histogram.observe()`, each of
which takes the child's lock.

    python bench/library_metrics.py api [rinha api flags...]

runs an API node with this writer in place of ours (everything else is the node as shipped).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from time import perf_counter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, GCCollector,  # noqa: E402
                               PlatformCollector, ProcessCollector, generate_latest)

from rinha.api.metrics import PAYMENT_BUCKETS  # noqa: E402
from rinha.http import responses  # noqa: E402
from rinha.metrics import CONTENT_TYPE  # noqa: E402


class LibraryApiMetrics:
    """rinha.api.metrics.ApiMetrics's interface (`answered`, `page`) on prometheus_client."""

    __slots__ = ("registry", "requests", "routes", "accepted_answer", "accepted", "payment_seconds")

    def __init__(self, buffer, link, *, routes: Iterable[bytes], accepted: bytes) -> None:
        registry = self.registry = CollectorRegistry(auto_describe=True)
        for collector in (ProcessCollector, GCCollector, PlatformCollector):
            collector(registry=registry)
        self.requests = Counter("rinha_api_requests_total",
                                "Requests answered by this node, by route (the path, or other) and status.",
                                ("route", "status"), registry=registry)
        self.routes = {path: path.decode() for path in routes}
        self.accepted_answer = accepted
        self.accepted = self.requests.labels("/payments", "202")
        self.payment_seconds = Histogram(
            "rinha_api_payment_seconds",
            "Time from the first byte of a request on /payments to its answer handed to the transport.",
            buckets=PAYMENT_BUCKETS, registry=registry)
        Gauge("rinha_api_buffer_payments", "Payments held by this node: accepted, not yet acknowledged by the worker.",
              registry=registry).set_function(lambda: buffer.held)
        Gauge("rinha_api_link_up", "1 while the link to the worker is connected, else 0.",
              registry=registry).set_function(lambda: 1 if link.connected else 0)
        # A library Counter can only count up; a value read at scrape time has to be a Gauge here.
        Gauge("rinha_api_link_reconnects", "Times the link to the worker was lost and dialled again.",
              registry=registry).set_function(lambda: link.reconnects)

    def answered(self, path: bytes, answer: bytes, began: float) -> None:
        if answer is self.accepted_answer:  # the hot path
            self.accepted.inc()
            self.payment_seconds.observe(perf_counter() - began)
            return
        self.requests.labels(self.routes.get(path, "other"), answer[9:12].decode("latin-1")).inc()
        if path == b"/payments":
            self.payment_seconds.observe(perf_counter() - began)

    def page(self) -> bytes:
        return responses.build(200, generate_latest(self.registry), content_type=CONTENT_TYPE)


def main(argv: list[str]) -> int:
    """`rinha ...` with the library's writer in the API node."""
    import rinha.api.server
    from rinha import cli

    rinha.api.server.ApiMetrics = LibraryApiMetrics
    return cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
