"""The senders: a fixed number of tasks that take payments off the queue and pay them.

A payment leaves the worker only through the ledger: a stored outcome records it; any other
outcome puts it back at the front of the queue (pinned to its processor if it may be stored).
Calls in flight are tracked by requestedAt, so a summary can wait for the ones inside its window.
"""

from __future__ import annotations

import asyncio
import logging

from rinha import clock
from rinha.worker.ledger import Ledger
from rinha.worker.processors import Outcome
from rinha.worker.queue import Payment, PaymentQueue
from rinha.worker.router import Router

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, queue: PaymentQueue, router: Router, ledger: Ledger, *, senders: int,
                 backoff_s: float, backoff_max_s: float) -> None:
        self.queue = queue
        self.router = router
        self.ledger = ledger
        self.senders = senders
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.in_flight: set[Payment] = set()
        self.done: set[str] = set()        # correlationIds the ledger holds
        self._settled = asyncio.Event()     # set whenever a call ends, for summary waits
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._sender(n)) for n in range(self.senders)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _sender(self, number: int) -> None:
        pause = 0.0
        while True:
            if pause:
                await asyncio.sleep(pause)
            payment = await self.queue.get()
            processor = self.router.choose(payment)
            if processor is None:
                self.queue.put_front(payment)
                pause = min(max(pause * 2, self.backoff_s), self.backoff_max_s)
                continue
            if payment.processor is None:
                payment.processor = processor.name
                payment.requested_at = clock.now_ms()
            payment.attempts += 1
            self.in_flight.add(payment)
            try:
                outcome, elapsed = await processor.pay(payment)
            except asyncio.CancelledError:
                self.in_flight.discard(payment)
                self.queue.put_front(payment)  # stopping: keep it for whoever drains the queue
                raise
            self.in_flight.discard(payment)
            self.router.report(processor, outcome, elapsed)
            if outcome.stored:
                self.ledger.record(processor.name, payment.requested_at, payment.cents)
                self.done.add(payment.correlation_id)
                pause = 0.0
            else:
                if not outcome.maybe_stored:
                    payment.unpin()
                self.queue.put_front(payment)
                pause = min(max(pause * 2, self.backoff_s), self.backoff_max_s)
            self._settled.set()
            self._settled.clear()

    async def settle(self, start: int | None, end: int | None, timeout_s: float) -> int:
        """Waits until no call in flight has a requestedAt inside [start, end], or the timeout.

        A processor stores a payment just before it answers, so a call whose answer is on its way
        is already in the processor's books; waiting for those keeps our summary equal to theirs.
        Returns how many such calls were still in flight at the deadline.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            inside = sum(1 for p in self.in_flight
                         if (start is None or p.requested_at >= start) and (end is None or p.requested_at <= end))
            remaining = deadline - loop.time()
            if not inside or remaining <= 0:
                return inside
            try:
                await asyncio.wait_for(self._settled.wait(), remaining)
            except asyncio.TimeoutError:
                pass
