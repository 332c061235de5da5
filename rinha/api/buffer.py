"""The API node's local payment buffer: accepted payments wait here until the worker has them.

A payment is held from `add` until the worker ACKs the batch that carried it. Batches are cut
on a short timer (or when full), sent at once if the link is up, and resent in order after a
reconnect; the worker ignores correlationIds it has seen, so resending never charges twice.
What a killed API node loses is exactly what is held here: at most one flush interval of
unsent payments plus the batches in flight to the worker.
"""

from __future__ import annotations

import asyncio
import logging

from rinha.link import frames
from rinha.link.client import LinkClient

log = logging.getLogger(__name__)

# A full buffer refuses every POST; one log line per this many seconds says so, with the count.
FULL_LOG_INTERVAL_S = 5.0


class PaymentBuffer:
    __slots__ = ("loop", "link", "flush_interval_s", "batch_max", "capacity",
                 "unsent", "unsent_waiters", "unacked", "held", "next_seq", "flush_timer",
                 "refused", "refused_logged", "full_logged_at")

    def __init__(self, *, flush_interval_s: float, batch_max: int, capacity: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.link: LinkClient | None = None
        self.flush_interval_s = flush_interval_s
        self.batch_max = batch_max
        self.capacity = capacity
        self.unsent: list[tuple[str, int]] = []
        # Ack mode: futures of callers waiting for the worker to have their payment, by batch.
        self.unsent_waiters: list[asyncio.Future] = []
        self.unacked: dict[int, tuple[bytes, int, list[asyncio.Future]]] = {}  # seq -> (frame, payments, waiters)
        self.held = 0
        self.next_seq = 1
        self.flush_timer: asyncio.TimerHandle | None = None
        self.refused = 0                 # payments refused because the buffer was full
        self.refused_logged = 0          # ... as of the last log line
        self.full_logged_at = float("-inf")

    def add(self, correlation_id: str, cents: int) -> bool:
        """Holds one payment; False when the buffer is full (the caller answers 503)."""
        if self.held >= self.capacity:
            self._refuse()
            return False
        self.unsent.append((correlation_id, cents))
        self.held += 1
        if len(self.unsent) >= self.batch_max:
            self.flush()
        elif self.flush_timer is None:
            self.flush_timer = self.loop.call_later(self.flush_interval_s, self.flush)
        return True

    def add_acknowledged(self, correlation_id: str, cents: int) -> asyncio.Future | None:
        """Ack mode: holds one payment and returns a future done once the worker has it
        (None when the buffer is full)."""
        if not self.add(correlation_id, cents):
            return None
        waiter = self.loop.create_future()
        self.unsent_waiters.append(waiter)
        return waiter

    def flush(self) -> None:
        """Cuts the unsent payments into batches and sends them, if the link is up."""
        if self.flush_timer is not None:
            self.flush_timer.cancel()
            self.flush_timer = None
        link = self.link
        if link is None or not link.connected:
            return  # on_connected flushes
        unsent, self.unsent = self.unsent, []
        waiters, self.unsent_waiters = self.unsent_waiters, []
        for start in range(0, len(unsent), self.batch_max):
            batch = unsent[start:start + self.batch_max]
            seq = self.next_seq
            self.next_seq += 1
            frame = frames.encode(frames.BATCH, {"seq": seq, "payments": batch})
            # Waiters ride on the last batch: the worker handles a link's batches in order.
            last = start + self.batch_max >= len(unsent)
            self.unacked[seq] = (frame, len(batch), waiters if last else [])
            link.send(frame)

    def _refuse(self) -> None:
        self.refused += 1
        now = self.loop.time()
        if now - self.full_logged_at >= FULL_LOG_INTERVAL_S:
            log.warning("payment buffer full: answering 503", extra={
                "event": "buffer_full", "held": self.held, "capacity": self.capacity,
                "refused": self.refused - self.refused_logged, "link_up": self.link is not None and self.link.connected})
            self.full_logged_at = now
            self.refused_logged = self.refused

    def on_ack(self, seq: int) -> None:
        entry = self.unacked.pop(seq, None)
        if entry is not None:
            self.held -= entry[1]
            for waiter in entry[2]:
                if not waiter.done():
                    waiter.set_result(None)

    def on_connected(self) -> None:
        """A new connection: resend every unacknowledged batch in order, then what is unsent."""
        for frame, _, _ in self.unacked.values():
            self.link.send(frame)
        self.flush()

    @property
    def unacked_payments(self) -> int:
        return self.held - len(self.unsent)
