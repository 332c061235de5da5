"""Where the next call of a payment goes. Routing is one small interface so policies can change.

`choose` returns the processor to call now, or None to let the payment wait. A payment pinned by
an earlier call with an unknown outcome must go back to that processor: any router honours this.
"""

from __future__ import annotations

from typing import Protocol

from rinha.worker.processors import Outcome, ProcessorClient
from rinha.worker.queue import Payment


class Router(Protocol):
    def choose(self, payment: Payment) -> ProcessorClient | None: ...

    def report(self, processor: ProcessorClient, outcome: Outcome, elapsed_s: float) -> None: ...


class DefaultFirstRouter:
    """Every payment goes to `default`, and waits for it (with the senders' backoff) while it fails."""

    def __init__(self, default: ProcessorClient, fallback: ProcessorClient) -> None:
        self.by_name = {default.name: default, fallback.name: fallback}
        self.default = default

    def choose(self, payment: Payment) -> ProcessorClient | None:
        if payment.processor is not None:
            return self.by_name[payment.processor]
        return self.default

    def report(self, processor: ProcessorClient, outcome: Outcome, elapsed_s: float) -> None:
        pass
