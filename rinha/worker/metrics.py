"""The worker's metrics, served by rinha/http/metrics_server.py on `--metrics-listen`.

Most values are read at scrape time from what the worker keeps anyway (the queue, the calls in
flight, each circuit, the ledger, counters on the router and the worker). Only the calls'
outcomes and durations are counted as they happen: by the dispatcher, once per call, on
children resolved here up front.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rinha.metrics import Family, Registry
from rinha.worker.processors import Outcome

if TYPE_CHECKING:
    from rinha.worker.server import Worker

# From a call that hit a warm connection (~1 ms) to the 10 s ceiling of --request-timeout-s.
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# A payment's wait, from acceptance to the answer that stored it: a service level, up to a long outage.
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 2.5, 5, 10, 20, 30, 60)


class CallMeters:
    """One processor's calls: a counter per outcome and a histogram of their durations."""

    __slots__ = ("outcomes", "seconds")

    def __init__(self, calls: Family, seconds: Family, processor: str) -> None:
        # Keyed by the Outcome member itself: no label tuple is built or hashed per call.
        self.outcomes = {outcome: calls.labels(processor, outcome.name.lower()) for outcome in Outcome}
        self.seconds = seconds.labels(processor)

    def ended(self, outcome: Outcome, elapsed_s: float) -> None:
        self.outcomes[outcome].value += 1
        self.seconds.observe(elapsed_s)


class WorkerMetrics:
    def __init__(self, worker: Worker) -> None:
        registry = self.registry = Registry()
        router = worker.router
        registry.gauge("rinha_worker_queue_payments",
                       "Payments accepted and waiting to be sent: queued, or held by a sender until a route opens.",
                       fn=lambda: waiting(worker))
        in_flight = registry.gauge("rinha_worker_in_flight_calls", "Calls to the processor now in flight.",
                                   ("processor",))
        calls = registry.counter("rinha_worker_calls_total",
                                 "Calls to the processor by outcome: " + ", ".join(o.name.lower() for o in Outcome)
                                 + " (rinha/worker/processors.py).", ("processor", "outcome"))
        seconds = registry.histogram("rinha_worker_call_seconds", "Duration of calls to the processor, any outcome.",
                                     CALL_BUCKETS, ("processor",))
        circuit = registry.gauge("rinha_worker_circuit_state",
                                 "Circuit breaker of the processor: 0 closed; 1 half-open (open, a probe payment "
                                 "in flight); 2 open (waiting for the next probe).", ("processor",))
        failing = registry.gauge("rinha_worker_processor_failing",
                                 "The processor's last health report: 1 failing, 0 healthy, NaN before the first.",
                                 ("processor",))
        ledger = registry.gauge("rinha_worker_ledger_payments", "Payments in the ledger (since the last purge).",
                                ("processor",))
        self.wait = registry.histogram("rinha_worker_payment_wait_seconds",
                                       "Time from a payment's acceptance to the processor's answer that stored it.",
                                       WAIT_BUCKETS).labels()
        self.calls: dict[str, CallMeters] = {}
        for name, view in router.views.items():
            in_flight.labels(name).fn = lambda view=view: len(view.in_flight)
            self.calls[name] = CallMeters(calls, seconds, name)
            circuit.labels(name).fn = view.circuit_state
            failing.labels(name).fn = lambda view=view: math.nan if view.health_failing is None else int(view.health_failing)
            # By name at scrape time.
            ledger.labels(name).fn = lambda name=name: worker.store.stored_count(name)
        registry.counter("rinha_worker_fallback_decisions_total", "Payments the routing policy sent to fallback.",
                         fn=lambda: router.fallback_decisions)
        registry.counter("rinha_worker_accepted_total", "Payments accepted from the API nodes (new correlationIds).",
                         fn=lambda: worker.store.accepted)
        registry.counter("rinha_worker_duplicates_total",
                         "Payments from the API nodes ignored as already seen (resent batches, repeated posts).",
                         fn=lambda: worker.store.duplicates)


def waiting(worker: Worker) -> int:
    """A sender takes a payment off the queue and may then wait for a route (an outage): it waits
    as much as a queued one does. Calls in flight are not waiting."""
    in_flight = sum(len(view.in_flight) for view in worker.router.views.values())
    return len(worker.queue) + len(worker.dispatcher.held) - in_flight
