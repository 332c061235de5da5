"""The senders: a pool of tasks that take payments off the queue and pay them.

The pool starts at `senders` and grows, one task at a time up to `max_senders`, while every
sender is busy and payments are still queued: a slow processor (1.2 s a call) that takes
800 calls at once then carries ~650 payments/s instead of the ~53/s of 64 senders. Slow is not down.
A sender holding a pinned payment whose processor takes no call counts as busy too: it cannot
hand the payment elsewhere, and the payments queued behind it may go to the other processor.

A payment leaves the worker only through the store: a stored outcome records it; any other
outcome puts it back at the front of the queue (pinned to its processor if it may be stored).
A sender holding a payment that has no route yet waits for the router to change its mind.
The pin is durable in the store before the call; the outcome is told to the store after it.
"""

from __future__ import annotations

import asyncio
import logging

from rinha import clock
from rinha.worker.metrics import CallMeters
from rinha.worker.queue import Payment, PaymentQueue
from rinha.worker.router import ProcessorView, Router
from rinha.worker.store import Store
from rinha.worker.store.base import RECENT_WAIT_MAX_S

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, queue: PaymentQueue, router: Router, store: Store, *, senders: int,
                 max_senders: int | None = None, call_meters: dict[str, CallMeters] | None = None,
                 wait_meter=None) -> None:
        self.queue = queue
        self.router = router
        router.queued = queue.__len__
        self.store = store
        self.senders = senders
        self.max_senders = max(senders, max_senders or senders)
        self.calling = 0                  # senders inside a processor call right now
        self.pinned_waiting = 0           # senders holding a pinned payment its processor does not take yet
        self.wait_meter = wait_meter      # observe(seconds) from acceptance to a processor's answer
        self.call_meters = call_meters    # by processor name; None counts nothing
        self.held: set[Payment] = set()     # taken off the queue by a sender, not yet recorded
        self._settled = asyncio.Event()      # pulsed whenever a call ends, for summary waits
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._sender()) for _ in range(self.senders)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # What senders held goes back to the queue, oldest first, for whoever drains it.
        for payment in sorted(self.held, key=lambda p: p.accepted_at, reverse=True):
            self.queue.put_front(payment)
        self.held.clear()

    async def _sender(self) -> None:
        loop = asyncio.get_running_loop()
        router = self.router
        meters = self.call_meters
        while True:
            payment = await self.queue.get()
            self.held.add(payment)
            view = router.route(payment, loop.time())
            if view is None:
                pinned = payment.processor is not None
                if pinned:
                    self.pinned_waiting += 1
                    self._grow()
                try:
                    while view is None:
                        await router.wait()
                        view = router.route(payment, loop.time())
                finally:
                    if pinned:
                        self.pinned_waiting -= 1
            if payment.processor is None:
                payment.processor = view.name
                payment.requested_at = clock.now_ms()
                await self.store.intent(payment)  # durable before the call: a crash remembers the pin
                if payment.processor != view.name:  # a shared store handed back another worker's pin
                    view = router.views[payment.processor]
            elif payment.stale:
                # A shared store kept the pin through a call that stored nothing: the same processor,
                # stamped now. The old stamp could lie in a window the auditor is reading when a
                # recovered processor stores the resend.
                payment.stale = False
                await self.store.restamp(payment)
                if payment.processor != view.name:
                    view = router.views[payment.processor]
            payment.attempts += 1
            view.started(payment, loop.time())
            self.calling += 1
            self._grow()
            try:
                outcome, elapsed = await view.client.pay(payment, view.timeout_s())
            finally:
                self.calling -= 1
            if self.wait_meter is not None and outcome.stored:
                self.wait_meter.observe(loop.time() - payment.accepted_at)
            if meters is not None:
                meters[view.name].ended(outcome, elapsed)
            router.finished(view, payment, outcome, elapsed, loop.time())
            self.held.discard(payment)
            if outcome.stored:
                await self.store.stored(payment)
            else:
                if not outcome.maybe_stored:
                    if self.store.keeps_pins:
                        payment.stale = True
                    else:
                        await self.store.failed(payment)
                        payment.unpin()
                self.queue.put_front(payment)
            self._settled.set()
            self._settled.clear()

    def _grow(self) -> None:
        """One more sender when none is free to take a queued payment."""
        if (self.calling + self.pinned_waiting >= len(self._tasks) and self.queue.items
                and len(self._tasks) < self.max_senders):
            self._tasks.append(asyncio.get_running_loop().create_task(self._sender()))

    def in_flight_within(self, start: int | None, end: int | None) -> int:
        return sum(1 for view in self.router.views.values() for p in view.in_flight if _within(p, start, end))

    async def settle(self, start: int | None, end: int | None, timeout_s: float, recent_since: int | None = None) -> int:
        """Waits until no call in flight has a requestedAt inside [start, end], or the timeout.

        A processor stores a payment just before it answers, so a call whose answer is on its way
        is already in the processor's books; waiting for those keeps our summary equal to theirs.
        Calls stamped after `recent_since` (epoch ms) are waited for until they end, each at
        most its own timeout and all at most RECENT_WAIT_MAX_S: a window that reaches the present
        then counts the calls already under way in it, which no audit can have read yet (the
        audit stops 1.5 s short of now).
        Returns how many calls inside the window were still in flight at the deadline.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        recent: dict[Payment, ProcessorView] = {}
        recent_deadline = 0.0
        if recent_since is not None:
            for view in self.router.views.values():
                for payment, started in view.in_flight.items():
                    if payment.requested_at > recent_since and _within(payment, start, end):
                        recent[payment] = view
                        recent_deadline = max(recent_deadline, started + view.timeout_s())
            recent_deadline = min(recent_deadline, loop.time() + RECENT_WAIT_MAX_S)
        while True:
            inside = self.in_flight_within(start, end)
            if not inside:
                return 0
            recent = {p: view for p, view in recent.items() if p in view.in_flight}
            now = loop.time()
            if recent and now < recent_deadline:
                until = recent_deadline
            elif inside > len(recent) and now < deadline:
                until = deadline
            else:
                return inside
            try:
                await asyncio.wait_for(self._settled.wait(), until - now)
            except asyncio.TimeoutError:
                pass


def _within(payment: Payment, start: int | None, end: int | None) -> bool:
    return (start is None or payment.requested_at >= start) and (end is None or payment.requested_at <= end)
