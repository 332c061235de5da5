"""Starts the worker node: link server, queue, senders, processor clients, router and ledger."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop

from rinha.config import WorkerConfig, split_host_port
from rinha.link.server import LinkServerProtocol
from rinha.worker.dispatcher import Dispatcher
from rinha.worker.ledger import Ledger
from rinha.worker.processors import ProcessorClient
from rinha.worker.queue import Payment, PaymentQueue
from rinha.worker.router import DefaultFirstRouter

log = logging.getLogger(__name__)


class Worker:
    """Owns every payment from the moment an API node's batch arrives until the ledger has it."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.queue = PaymentQueue()
        self.ledger = Ledger()
        self.default = ProcessorClient("default", config.default_url, connections=config.senders,
                                       timeout_s=config.request_timeout_s)
        self.fallback = ProcessorClient("fallback", config.fallback_url, connections=config.senders,
                                        timeout_s=config.request_timeout_s)
        self.router = DefaultFirstRouter(self.default, self.fallback)
        self.dispatcher = Dispatcher(self.queue, self.router, self.ledger, senders=config.senders,
                                     backoff_s=config.retry_backoff_ms / 1000,
                                     backoff_max_s=config.retry_backoff_max_ms / 1000)
        # Every correlationId accepted and not purged: queued, in flight or recorded.
        self.seen: set[str] = set()

    async def start(self) -> None:
        await self.default.start()
        await self.fallback.start()
        self.dispatcher.start()

    async def stop(self) -> None:
        await self.dispatcher.stop()
        await self.default.close()
        await self.fallback.close()
        if len(self.queue):
            log.error("stopping with %d payments not yet paid", len(self.queue))

    # LinkHandler

    def accept(self, payments: list) -> None:
        seen = self.seen
        for correlation_id, cents in payments:
            if correlation_id in seen:
                continue  # a resent batch, or the same payment posted twice: charge once
            seen.add(correlation_id)
            self.queue.put(Payment(correlation_id, cents))

    async def answer(self, request: dict) -> tuple[int, object]:
        op = request.get("op")
        if op == "summary":
            start, end = request.get("from"), request.get("to")
            await self.dispatcher.settle(start, end, self.config.settle_timeout_ms / 1000)
            return 200, self.ledger.summary(start, end)
        if op == "purge":
            self.purge()
            return 200, {"message": "ledger purged"}
        return 400, {"error": f"unknown operation {op!r}"}

    def purge(self) -> None:
        """Empties the ledger and forgets recorded correlationIds; queued payments stay owed."""
        self.ledger.purge()
        self.seen -= self.dispatcher.done
        self.dispatcher.done.clear()


async def serve(config: WorkerConfig, stop: asyncio.Event) -> None:
    worker = Worker(config)
    await worker.start()
    host, port = split_host_port(config.listen)
    server = await asyncio.get_running_loop().create_server(lambda: LinkServerProtocol(worker), host, port)
    log.info("worker listening on %s:%d; default=%s fallback=%s", host, port, config.default_url, config.fallback_url)
    await stop.wait()
    server.close()
    await worker.stop()


def run(config: WorkerConfig) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    uvloop.run(main())
    return 0
