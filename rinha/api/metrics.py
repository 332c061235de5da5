"""The API node's metrics: what it answered, how fast it answered payments, what it holds.

Served at `GET /metrics` on the node's --metrics-listen (rinha/http/metrics_server.py), never on
the public socket that NGINX proxies.
The hot path is a 202 to `POST /payments`: it is recognised by identity (the prebuilt answer)
and costs one add and one histogram observation on children resolved here, up front.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from time import perf_counter

from rinha.api.buffer import PaymentBuffer
from rinha.link.client import LinkClient
from rinha.metrics import Registry

# From a tenth of a millisecond (an answer from the buffer) to 100 ms (an answer that waited for
# the worker, in ack mode); the official p99 bonus is lost between 1 and 11 ms.
PAYMENT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


class ApiMetrics:
    __slots__ = ("registry", "requests", "routes", "accepted_answer", "accepted", "payment_seconds",
                 "payment_bounds", "payment_counts")

    def __init__(self, buffer: PaymentBuffer, link: LinkClient, *, routes: Iterable[bytes], accepted: bytes) -> None:
        registry = self.registry = Registry()
        self.requests = registry.counter(
            "rinha_api_requests_total", "Requests answered by this node, by route (the path, or other) and status.",
            ("route", "status"))
        self.routes = {path: path.decode() for path in routes}
        self.accepted_answer = accepted
        self.accepted = self.requests.labels("/payments", "202")
        self.payment_seconds = registry.histogram(
            "rinha_api_payment_seconds",
            "Time from the first byte of a request on /payments to its answer handed to the transport.",
            PAYMENT_BUCKETS).labels()
        # The histogram's own lists, for the hot path to update without a method call.
        self.payment_bounds = self.payment_seconds.bounds
        self.payment_counts = self.payment_seconds.counts
        registry.gauge("rinha_api_buffer_payments",
                       "Payments held by this node: accepted, not yet acknowledged by the worker.",
                       fn=lambda: buffer.held)
        registry.gauge("rinha_api_link_up", "1 while the link to the worker is connected, else 0.",
                       fn=lambda: 1 if link.connected else 0)
        registry.counter("rinha_api_link_reconnects_total", "Times the link to the worker was lost and dialled again.",
                         fn=lambda: link.reconnects)

    def answered(self, path: bytes, answer: bytes, began: float) -> None:
        """Called by the HTTP protocol once `answer` is handed to the transport."""
        if answer is self.accepted_answer:  # the hot path: HistogramValue.observe, inlined
            elapsed = perf_counter() - began
            self.accepted.value += 1
            self.payment_counts[bisect_left(self.payment_bounds, elapsed)] += 1
            self.payment_seconds.sum += elapsed
            return
        # Anything else is rare enough to pay for a lookup by label values.
        self.requests.labels(self.routes.get(path, "other"), answer[9:12].decode("latin-1")).value += 1
        if path == b"/payments":
            self.payment_seconds.observe(perf_counter() - began)

    def page(self) -> bytes:
        """The whole `GET /metrics` answer."""
        return self.registry.page()
