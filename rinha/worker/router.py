"""Where and when each payment goes: a view of each processor, and a fallback policy.

`ProcessorView` is what the worker believes about one processor. It combines the processor's
health reports (every ~5 s) with what real calls show at once: consecutive failures open a
circuit, which lets through a few probe payments at a short interval until one succeeds; calls in
flight longer than the slow threshold, a slow average, or an announced `minResponseTime` above it
mark the processor slow. After an outage the number of calls in flight restarts low and grows by
one per success (slow start), so the backlog drains fast without a thundering herd.

A `Policy` decides, for a payment that is not pinned, between `default`, `fallback` and waiting.
A pinned payment (its last call timed out, so the processor may have stored it) only ever goes
back to its processor.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from rinha.worker.processors import Outcome, ProcessorClient
from rinha.worker.queue import Payment, Waiters

log = logging.getLogger(__name__)

# A call may take at least this long before we give up on it: a processor that answers late
# may still store the payment, and then the auditor sees it before we do, until a resend's 422
# tells us. Calls made before a processor is seen to be slow get the floor: 6 s is above every
# delay the generated schedules and the official one (5 s) set, so they are recorded as stored.
TIMEOUT_FLOOR_S = 6.0
# Weight of the newest call in the latency average.
LATENCY_WEIGHT = 0.2
# Calls in flight right after an outage; grows by one per success up to the senders.
RESTART_LIMIT = 8


class ProcessorView:
    """Circuit breaker, latency and concurrency limit of one processor."""

    def __init__(self, client: ProcessorClient, *, failure_threshold: int, probe_interval_s: float,
                 max_probes: int, slow_s: float, max_in_flight: int, request_timeout_s: float) -> None:
        self.client = client
        self.name = client.name
        self.failure_threshold = failure_threshold
        self.probe_interval_s = probe_interval_s
        self.max_probes = max_probes
        self.slow_s = slow_s
        self.max_in_flight = max_in_flight
        self.request_timeout_s = request_timeout_s
        # Circuit
        self.open = False
        self.failures = 0
        self.next_probe_at = 0.0
        self.probes: set[Payment] = set()
        self.probe_granted = False  # admit() said yes to a probe; started() files the payment as one
        self.probed = False         # a probe has gone out since the circuit opened (it is half-open)
        # Latency, as announced and as seen
        self.health_failing: bool | None = None
        self.health_min_s = 0.0
        self.latency_s = 0.0
        self.in_flight: dict[Payment, float] = {}  # payment -> start (loop time), oldest first
        self.limit = max_in_flight
        # Since when (loop time) this processor cannot take new payments; None while it can.
        self.out_since: float | None = None
        self.slow = False

    # What the policy asks

    def admit(self, now: float, *, mind_latency: bool) -> bool:
        """May one more call start now? An open (or, when latency matters, slow) processor takes
        only probes: one per interval, so recovery is seen within an interval; a few at a time
        while it fails, one at a time while it is slow: a slow one stores each probe after the
        audit's 1.5 s edge, and a call stored between the auditor's reads is a finding."""
        if not self.open and not (mind_latency and self.slow):
            return len(self.in_flight) < self.limit
        if now >= self.next_probe_at and len(self.probes) < (self.max_probes if self.open else 1):
            self.next_probe_at = now + self.probe_interval_s
            self.probe_granted = True
            return True
        return False

    def out_for(self, now: float) -> float:
        return 0.0 if self.out_since is None else now - self.out_since

    def timeout_s(self) -> float:
        expected = max(self.health_min_s, self.latency_s)
        return min(self.request_timeout_s, max(TIMEOUT_FLOOR_S, 2 * expected + 0.5))

    # What the dispatcher and the health poller tell

    def started(self, payment: Payment, now: float) -> None:
        self.in_flight[payment] = now
        if self.probe_granted:
            self.probe_granted = False
            self.probes.add(payment)
            if not self.probed:  # one line per outage, not one per probe
                self.probed = True
                log.info("circuit half-open: probing", extra={"event": "circuit_half_open", "processor": self.name})

    def finished(self, payment: Payment, outcome: Outcome, elapsed_s: float, now: float) -> bool:
        """Records a call's end; True when the circuit changed state."""
        self.in_flight.pop(payment, None)
        probe = payment in self.probes
        self.probes.discard(payment)
        if outcome.stored:
            if probe:
                # A fast probe shows the processor as it is now: trust it over the average and over
                # an announcement up to 5 s old. A slow one may have started before a recovery.
                self.latency_s = min(self.latency_s, elapsed_s)
                self.health_min_s = min(self.health_min_s, elapsed_s)
            else:
                self.latency_s += LATENCY_WEIGHT * (elapsed_s - self.latency_s)
            self.failures = 0
            if self.open:
                self._close(now, "a call succeeded")
                return True
            self.limit = min(self.max_in_flight, self.limit + 1)
            return False
        self.failures += 1
        self.limit = max(2, self.limit // 2)
        if not self.open and self.failures >= self.failure_threshold:
            self._open(now, f"{self.failures} calls in a row ended {outcome.value}")
            return True
        return False

    def circuit_state(self) -> int:
        """0 closed; 1 open with a probe in flight (half-open); 2 open, waiting for the next probe."""
        if not self.open:
            return 0
        return 1 if self.probes else 2

    def health_report(self, failing: bool, min_response_ms: int, now: float) -> None:
        if failing != self.health_failing:
            if failing:
                log.warning("processor marked down by its health check", extra={
                    "event": "processor_down", "processor": self.name, "min_response_ms": min_response_ms})
            else:
                log.info("processor marked up by its health check", extra={
                    "event": "processor_up", "processor": self.name, "min_response_ms": min_response_ms})
        self.health_failing = failing
        self.health_min_s = min_response_ms / 1000
        # An announcement is fresher than the average of calls we may have stopped making.
        self.latency_s = min(self.latency_s, max(self.health_min_s, 0.001))
        if failing and not self.open:
            self._open(now, "its health check says failing")
        elif not failing and self.open:
            self.next_probe_at = now  # probe at once rather than at the next interval

    def refresh(self, now: float) -> bool:
        """Re-evaluates slowness (in-flight ages, averages, announcements); True if it changed."""
        # Probes are expected to be slow, and may have started before a recovery: they do not count.
        oldest = next((started for payment, started in self.in_flight.items() if payment not in self.probes), now)
        slow = max(now - oldest, self.latency_s, self.health_min_s) > self.slow_s
        changed = slow != self.slow
        if changed:
            self.slow = slow
            if slow:
                log.warning("processor slow: holding new payments", extra={
                    "event": "processor_slow", "processor": self.name, "latency_ms": round(self.latency_s * 1e3, 1),
                    "announced_ms": round(self.health_min_s * 1e3), "oldest_call_ms": round((now - oldest) * 1e3)})
            else:
                log.info("processor fast again", extra={"event": "processor_fast", "processor": self.name})
        usable = not self.open and not self.slow
        if usable and self.out_since is not None:
            self.out_since = None
        elif not usable and self.out_since is None:
            self.out_since = now
        return changed

    def _open(self, now: float, why: str) -> None:
        self.open = True
        self.probed = False
        self.next_probe_at = now + self.probe_interval_s
        log.warning("circuit opened", extra={"event": "circuit_opened", "processor": self.name, "reason": why})

    def _close(self, now: float, why: str) -> None:
        self.open = False
        self.failures = 0
        self.limit = min(self.max_in_flight, RESTART_LIMIT)
        log.info("circuit closed", extra={"event": "circuit_closed", "processor": self.name, "reason": why})


class Policy(Protocol):
    name: str

    def choose(self, default: ProcessorView, fallback: ProcessorView, now: float, waiting: int = 0) -> ProcessorView | None:
        """`waiting`: payments that have no call yet (queued, or held by a sender without a route)."""


class ProfitPolicy:
    """Wait for `default`; once it has been out for `fallback_after_s`, use a healthy `fallback`.

    The fee difference is 10 % of the amount, a payment never processed loses all of it: so waiting
    is right for outages shorter than the budget, and the fallback is used beyond it. Neither is
    used while slow, so every payment is answered well inside the auditor's 1.5 s margin.
    """

    name = "profit"

    def __init__(self, fallback_after_s: float) -> None:
        self.fallback_after_s = fallback_after_s

    def choose(self, default, fallback, now, waiting=0):
        if default.admit(now, mind_latency=True):
            return default
        if default.out_for(now) >= self.fallback_after_s and fallback.admit(now, mind_latency=True):
            return fallback
        return None


class AlwaysDefaultPolicy:
    """Baseline: every payment to `default`, however slow; wait while it fails."""

    name = "always-default"

    def choose(self, default, fallback, now, waiting=0):
        return default if default.admit(now, mind_latency=False) else None


class FallbackOnFailurePolicy:
    """Baseline: `fallback` whenever `default`'s circuit is open."""

    name = "fallback-on-failure"

    def choose(self, default, fallback, now, waiting=0):
        if default.admit(now, mind_latency=False):
            return default
        if default.open and fallback.admit(now, mind_latency=False):
            return fallback
        return None


class RobustPolicy:
    """Default first, but no payment is bet on how long an outage lasts.

    While default is out (open, or slower than the audit allows), a payment is held for it at most
    `hold_s` or until `hold_payments` are waiting, whichever comes first; then a healthy fallback
    takes them. While default is up but its backlog is more than it can carry in `hold_s` (calls in
    flight over its latency), the excess goes to fallback. It knows nothing of when a test ends:
    the worst a long outage costs is the fee premium, never the payment.
    """

    name = "robust"

    def __init__(self, hold_s: float, hold_payments: int) -> None:
        self.hold_s = hold_s
        self.hold_payments = hold_payments

    def choose(self, default, fallback, now, waiting=0):
        if default.admit(now, mind_latency=True):
            return default
        if default.open or default.slow:
            if default.out_for(now) < self.hold_s and waiting < self.hold_payments:
                return None
        elif waiting * max(default.latency_s, 0.001) < self.hold_s * default.max_in_flight:
            return None  # up and busy, but the backlog drains within the bound
        return fallback if fallback.admit(now, mind_latency=True) else None


def make_policy(name: str, fallback_after_s: float, hold_s: float = 2.0, hold_payments: int = 200) -> Policy:
    if name == RobustPolicy.name:
        return RobustPolicy(hold_s, hold_payments)
    if name == ProfitPolicy.name:
        return ProfitPolicy(fallback_after_s)
    if name == AlwaysDefaultPolicy.name:
        return AlwaysDefaultPolicy()
    if name == FallbackOnFailurePolicy.name:
        return FallbackOnFailurePolicy()
    raise ValueError(f"unknown policy {name!r}")




class Router:
    """Routes payments through a policy and wakes the senders that wait for a route."""

    def __init__(self, default: ProcessorView, fallback: ProcessorView, policy: Policy, *, tick_s: float = 0.05,
                 max_calls_per_s: float = 0.0) -> None:
        self.default = default
        self.fallback = fallback
        self.views = {default.name: default, fallback.name: fallback}
        self.policy = policy
        self.tick_s = tick_s
        # Pacing (a token bucket; 0 = off): a backlog drains at this rate rather than in one burst
        # that would take the CPU the API nodes answer with.
        self.max_calls_per_s = max_calls_per_s
        self.burst = max(1.0, 2 * tick_s * max_calls_per_s)
        self.tokens = self.burst
        self.refilled_at = 0.0
        self.waiters = Waiters()  # senders holding a payment that has no route yet
        # Payments with no call yet besides the waiters (the dispatcher plugs in its queue's length).
        self.queued = lambda: 0
        self.fallback_decisions = 0   # payments the policy sent to fallback, ever
        # The current run of policy decisions: on fallback or not, and how many it holds. A line
        # is logged when a run changes side, never per payment.
        self.on_fallback = False
        self.run_length = 0
        self._ticker: asyncio.Task | None = None

    def start(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)

    def route(self, payment: Payment, now: float) -> ProcessorView | None:
        if self.max_calls_per_s:
            self.tokens = min(self.burst, self.tokens + (now - self.refilled_at) * self.max_calls_per_s)
            self.refilled_at = now
            if self.tokens < 1:
                return None
        if payment.processor is not None:
            view = self.views[payment.processor]
            view = view if view.admit(now, mind_latency=False) else None
        else:
            view = self.policy.choose(self.default, self.fallback, now, len(self.waiters) + self.queued())
            if view is self.fallback:
                self.fallback_decisions += 1
                if not self.on_fallback:
                    self._switch_run(True, now)
                self.run_length += 1
            elif view is not None and not view.probe_granted:
                # A probe of an open default is no return to it: the fallback run goes on.
                if self.on_fallback:
                    self._switch_run(False, now)
                self.run_length += 1
        if view is not None and self.max_calls_per_s:
            self.tokens -= 1
        return view

    def _switch_run(self, to_fallback: bool, now: float) -> None:
        if to_fallback:
            log.warning("payments going to fallback", extra={
                "event": "fallback_in_use", "default_before": self.run_length,
                "default_out_s": round(self.default.out_for(now), 3),
                "policy": self.policy.name})
        else:
            log.info("payments back on default", extra={"event": "fallback_ended", "fallback_payments": self.run_length})
        self.on_fallback = to_fallback
        self.run_length = 0

    def finished(self, view: ProcessorView, payment: Payment, outcome: Outcome, elapsed_s: float, now: float) -> None:
        if view.finished(payment, outcome, elapsed_s, now):
            view.refresh(now)
            self.wake_all()
        else:
            self.wake_one()  # a slot is free

    def health_report(self, name: str, failing: bool, min_response_ms: int) -> None:
        now = asyncio.get_running_loop().time()
        view = self.views[name]
        view.health_report(failing, min_response_ms, now)
        view.refresh(now)
        self.wake_all()

    async def wait(self) -> None:
        """Until something changes that may open a route: a call ends, a state flips, a tick."""
        await self.waiters.wait()

    def wake_one(self) -> None:
        self.waiters.wake_one()

    def wake_all(self) -> None:
        self.waiters.wake_all()

    async def _tick(self) -> None:
        """Time alone changes routes (probe due, budget spent, a call running long): look again."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            self.default.refresh(now)
            self.fallback.refresh(now)
            if self.waiters:
                self.wake_all()
