"""The client of one payment processor: one pooled aiohttp session, one call per payment.

A call ends in one of a few outcomes, and each tells whether the processor has stored the payment:
  STORED     200: stored now.
  DUPLICATE  422: it already holds this correlationId (an earlier call of ours stored it).
  FAILED     5xx or 429: the processor refused before storing; free to send anywhere.
  UNREACHABLE the connection was refused: nothing was sent.
  UNKNOWN    timed out or the connection broke after sending: it may or may not be stored,
             so the payment stays pinned to this processor and its requestedAt.
  REJECTED   another 4xx: the processor dislikes the request itself (logged; retried later).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time

import aiohttp
import orjson

from rinha import clock
from rinha.worker.queue import Payment

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    UNKNOWN = "unknown"
    REJECTED = "rejected"

    @property
    def stored(self) -> bool:
        return self is Outcome.STORED or self is Outcome.DUPLICATE

    @property
    def maybe_stored(self) -> bool:
        return self is Outcome.UNKNOWN


JSON_HEADERS = {"Content-Type": "application/json"}


def payment_body(payment: Payment) -> bytes:
    whole, cents = divmod(payment.cents, 100)
    # Written by hand: the amount must be the exact decimal, never a float's rendering.
    return b'{"correlationId":"%s","amount":%d.%02d,"requestedAt":"%s"}' % (
        payment.correlation_id.encode(), whole, cents, clock.format_ms(payment.requested_at).encode())


class ProcessorClient:
    def __init__(self, name: str, base_url: str, *, connections: int, timeout_s: float) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.connections = connections
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.connections, keepalive_timeout=30, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(connector=connector, timeout=self.timeout,
                                             json_serialize=lambda o: orjson.dumps(o).decode(),
                                             skip_auto_headers=("User-Agent",))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def pay(self, payment: Payment, timeout_s: float | None = None) -> tuple[Outcome, float]:
        """One POST /payments; returns the outcome and the seconds it took."""
        started = time.monotonic()
        timeout = self.timeout if timeout_s is None else aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self.session.post(self.base_url + "/payments", data=payment_body(payment),
                                         headers=JSON_HEADERS, timeout=timeout) as response:
                await response.read()
                status = response.status
        except aiohttp.ClientConnectorError:
            return Outcome.UNREACHABLE, time.monotonic() - started
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            log.debug("call ended without an answer", extra={"processor": self.name,
                                                              "correlation_id": payment.correlation_id, "error": repr(exc)})
            return Outcome.UNKNOWN, time.monotonic() - started
        elapsed = time.monotonic() - started
        if status < 300:
            return Outcome.STORED, elapsed
        if status == 422:
            return Outcome.DUPLICATE, elapsed
        if status >= 500 or status == 429:
            return Outcome.FAILED, elapsed
        log.error("processor rejected a payment", extra={"event": "payment_rejected", "processor": self.name,
                                                         "status": status, "correlation_id": payment.correlation_id})
        return Outcome.REJECTED, elapsed
