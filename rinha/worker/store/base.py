"""What the worker needs from wherever its state is kept, and the in-memory parts every backend shares.

The worker owns a payment from the batch that brings it until a processor has stored it. The
store is told each step, in the order the worker takes it:

  accept(batch)      new payments of an API node's batch (a repeat of a known correlationId is
                     dropped); durable on return, so the batch may be ACKed
  intent(payment)    about to call `payment.processor` with `payment.requested_at`; durable on
                     return, so a crash can never forget where a payment may already be stored
  stored(payment)    the processor of its intent has it: it counts in the summary
  failed(payment)    the last call surely did not store it: free to go anywhere, stamped afresh
  purge()            the summary is emptied and stored correlationIds forgotten; owed ones stay

`open()` gives back only what is still owed (oldest first, pins included), never the history, so
start-up costs what the backlog costs. A lost `stored` or `failed` (a crash before it reached
the disk) is harmless: the payment comes back pinned, goes again to the same processor with the
same requestedAt, and a 422 there means stored.

Summaries are exact over any inclusive [from, to] in ms. The auditor's recent window is answered
from `RecentWindow`, in memory; anything older or wider by the backend.
"""

from __future__ import annotations

import abc
from collections import deque

from rinha.worker.ledger import Ledger
from rinha.worker.queue import Payment

PROCESSORS = ("default", "fallback")

# Bucket widths of the backend's pre-summed totals, widest first: an hour and a second. A window
# is cut into whole hours, whole seconds at its edges and single payments within its two edge
# seconds, so any window costs at most a few thousand rows whatever the history.
BUCKET_WIDTHS_MS = (3_600_000, 1_000)
# Stands for "no bound" in bucket arithmetic: later than any real requestedAt, exact in a double.
FAR_FUTURE_MS = 2 ** 52


def window_parts(lo: int, hi: int, widths: tuple[int, ...] = BUCKET_WIDTHS_MS) -> list[tuple[int, int, int]]:
    """Cuts the half-open ms range [lo, hi) into (width, lo, hi) pieces: whole buckets of the
    widest width that fits, then narrower ones at the edges; width 0 is single payments."""
    for i, width in enumerate(widths):
        first, last = -(-lo // width) * width, hi // width * width
        if first < last:
            narrower = widths[i + 1:]
            return [*window_parts(lo, first, narrower), (width, first, last), *window_parts(last, hi, narrower)]
    return [(0, lo, hi)] if lo < hi else []


def summary_body(totals: dict[str, tuple[int, int]]) -> dict:
    """The body of `/payments-summary` from exact (count, cents) per processor."""
    return {name: {"totalRequests": count, "totalAmount": cents / 100} for name, (count, cents) in totals.items()}


class RecentIds:
    """The newest correlationIds accepted, at most `size` of them: a repeat that comes soon (a
    resent batch, a client posting twice) is dropped without asking the backend."""

    __slots__ = ("size", "ids", "order")

    def __init__(self, size: int) -> None:
        self.size = size
        self.ids: set[str] = set()
        self.order: deque[str] = deque()

    def __contains__(self, correlation_id: str) -> bool:
        return correlation_id in self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, correlation_id: str) -> None:
        self.ids.add(correlation_id)
        self.order.append(correlation_id)
        if len(self.order) > self.size:
            self.ids.discard(self.order.popleft())

    def clear(self) -> None:
        self.ids.clear()
        self.order.clear()


class RecentWindow:
    """Every stored payment with requestedAt >= `horizon`, in memory; older ones are let go.

    A summary whose `from` is at or after the horizon is answered here exactly. Once the oldest
    entries are more than `keep_ms` behind the newest, whole chunks of them are dropped and the
    horizon moves past them, so memory follows the payment rate, not the history."""

    __slots__ = ("ledger", "horizon", "keep_ms", "newest")

    def __init__(self, keep_ms: int, horizon: int = 0) -> None:
        self.ledger = Ledger(PROCESSORS)
        self.keep_ms = keep_ms
        self.horizon = horizon
        self.newest = horizon

    def covers(self, start: int | None) -> bool:
        return start is not None and start >= self.horizon

    def add(self, processor: str, requested_at: int, cents: int) -> None:
        if requested_at < self.horizon:
            return  # an old pinned payment stored late: only the backend's totals count it
        self.ledger.record(processor, requested_at, cents)
        if requested_at > self.newest:
            self.newest = requested_at
            if requested_at - self.horizon > 2 * self.keep_ms:
                self.trim()

    def trim(self) -> None:
        cut = self.newest - self.keep_ms
        for series in self.ledger.series.values():
            dropped = series.drop_before(cut)
            if dropped is not None and dropped >= self.horizon:
                self.horizon = dropped + 1
        # A series that kept a chunk older than the cut still answers exactly from the horizon on.

    def totals(self, start: int | None, end: int | None) -> dict[str, tuple[int, int]]:
        return {name: series.totals(start, end) for name, series in self.ledger.series.items()}

    def reset(self, horizon: int) -> None:
        self.ledger.purge()
        self.horizon = self.newest = horizon


# The longest a summary waits for the calls under way in its last `settle_recent_ms`: the call
# timeout's floor (6 s) is longer than the API nodes' wait for a summary (5 s), and a summary
# answered late is no summary at all.
RECENT_WAIT_MAX_S = 3.0


class Store(abc.ABC):
    """The worker's durable state. Every method may wait on I/O; none blocks for long."""

    # A store shared by several workers keeps every pin until the payment is stored: two workers
    # may briefly hold the same payment, and a pin one of them let go of could be claimed for
    # the other processor while the other worker's call is still on its way. `intent` may then
    # hand back an earlier pin (it sets `payment.processor` and `payment.requested_at`).
    keeps_pins = False
    # Counted by `accept` for the metrics: payments new to the store, and repeats it dropped.
    accepted = 0
    duplicates = 0
    # Per processor, the timeout a call started now would get (the worker sets it once its router
    # exists). A store shared by several workers bounds its summary's wait for the others' recent
    # calls with it; a worker's own calls are settled by its dispatcher.
    call_timeouts: dict = {}

    def health_poller(self, name: str, base_url: str, session_factory, **kwargs):
        """The poller of one processor's health: here every poll is this worker's own."""
        from rinha.worker.health import HealthPoller
        return HealthPoller(name, base_url, session_factory, **kwargs)

    @abc.abstractmethod
    async def open(self) -> list[Payment]:
        """Prepares the store; returns the payments still owed, oldest first, pins included."""

    @abc.abstractmethod
    async def accept(self, batch: list) -> list[Payment]:
        """Keeps the new payments of `batch` ([correlationId, cents] pairs); returns them once durable."""

    @abc.abstractmethod
    async def intent(self, payment: Payment) -> None:
        """Records the pin (processor, requestedAt) of a call about to start; returns once durable."""

    @abc.abstractmethod
    async def stored(self, payment: Payment) -> None:
        """Counts a payment its processor stored."""

    @abc.abstractmethod
    async def failed(self, payment: Payment) -> None:
        """Unpins a payment whose last call surely stored nothing."""

    async def restamp(self, payment: Payment) -> None:
        """Stores that keep pins: the pinned payment's last call surely stored nothing, and its next
        call goes to the same processor stamped now; durable on return. The store may hand back
        another holder's newer stamp (it sets `payment.processor` and `payment.requested_at`)."""
        raise NotImplementedError(f"{type(self).__name__} lets pins go: it has nothing to restamp")

    @abc.abstractmethod
    async def summary(self, start: int | None, end: int | None) -> dict[str, tuple[int, int]]:
        """(count, cents) per processor over requestedAt in [start, end], inclusive; None is unbounded."""

    @abc.abstractmethod
    async def purge(self) -> None:
        """Forgets every stored payment (they may be paid again); owed ones stay owed."""

    @abc.abstractmethod
    def stored_count(self, processor: str) -> int:
        """Payments stored by `processor` since the last purge (for the metrics)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Makes everything durable and lets go of the backend."""
