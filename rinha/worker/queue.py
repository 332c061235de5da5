"""The worker's queue of payments waiting to be sent, and the payment record that travels in it."""

from __future__ import annotations

import asyncio
import collections
import time


class Payment:
    """One accepted payment and where it stands.

    `processor` and `requested_at` are set when a call is made and kept while its outcome is
    unknown (a timeout): the payment must then go again to the same processor with the same
    `requestedAt`, so that a 422 there means "stored" and the auditor sees one timestamp.
    `stale` marks a pin kept by a shared store after a call that surely stored nothing: the next
    call goes to the same processor with a fresh `requestedAt`.
    """

    __slots__ = ("correlation_id", "cents", "accepted_at", "processor", "requested_at", "attempts", "stale")

    def __init__(self, correlation_id: str, cents: int) -> None:
        self.correlation_id = correlation_id
        self.cents = cents
        self.accepted_at = time.monotonic()
        self.processor: str | None = None
        self.requested_at: int | None = None
        self.attempts = 0
        self.stale = False

    def unpin(self) -> None:
        """The last call definitely did not store the payment: it is free to go anywhere."""
        self.processor = None
        self.requested_at = None
        self.stale = False

    def __repr__(self) -> str:
        return f"Payment({self.correlation_id}, {self.cents}c, {self.processor}, attempts={self.attempts})"


class Waiters:
    """Tasks parked until something happens, woken oldest first: one at a time, or all."""

    __slots__ = ("futures",)

    def __init__(self) -> None:
        self.futures: collections.deque[asyncio.Future] = collections.deque()

    def __len__(self) -> int:
        return len(self.futures)

    async def wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self.futures.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.wake_one()  # woken for something we will not take: pass it on
            raise
        finally:
            if not waiter.done():
                waiter.cancel()  # wake_one skips it

    def wake_one(self) -> None:
        while self.futures:
            waiter = self.futures.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def wake_all(self) -> None:
        futures, self.futures = self.futures, collections.deque()
        for waiter in futures:
            if not waiter.done():
                waiter.set_result(None)


class PaymentQueue:
    """FIFO of waiting payments; a payment coming back from a failed call goes to the front."""

    __slots__ = ("items", "waiters")

    def __init__(self) -> None:
        self.items: collections.deque[Payment] = collections.deque()
        self.waiters = Waiters()

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def put(self, payment: Payment) -> None:
        self.items.append(payment)
        self.waiters.wake_one()

    def put_front(self, payment: Payment) -> None:
        self.items.appendleft(payment)
        self.waiters.wake_one()

    async def get(self) -> Payment:
        while not self.items:
            await self.waiters.wait()
        return self.items.popleft()
