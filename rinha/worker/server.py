"""Starts the worker node: link server, queue, senders, processor clients, health, router, ledger."""

from __future__ import annotations

import asyncio
import logging

from rinha.config import WorkerConfig, split_host_port
from rinha.lifecycle import run_until_signalled
from rinha.http.metrics_server import MetricsServer
from rinha.link.server import LinkServer
from rinha.worker.dispatcher import Dispatcher
from rinha.worker.health import HealthPoller
from rinha.worker.journal import Journal, NullJournal
from rinha.worker.ledger import Ledger
from rinha.worker.metrics import WorkerMetrics
from rinha.worker.processors import ProcessorClient
from rinha.worker.queue import Payment, PaymentQueue
from rinha.worker.router import ProcessorView, Router, make_policy

log = logging.getLogger(__name__)

# A health answer slower than this is not worth waiting for: the next poll comes anyway.
HEALTH_TIMEOUT_S = 3.0
# How often the journal's size is looked at (compaction runs on the event loop, so rarely).
COMPACTION_CHECK_S = 10.0


class Worker:
    """Owns every payment from the moment an API node's batch arrives until the ledger has it."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.queue = PaymentQueue()
        self.ledger = Ledger()
        self.clients = [ProcessorClient(name, url, connections=config.senders, timeout_s=config.request_timeout_s)
                        for name, url in (("default", config.default_url), ("fallback", config.fallback_url))]
        views = [ProcessorView(client, failure_threshold=config.failure_threshold,
                               probe_interval_s=config.probe_interval_ms / 1000, max_probes=config.max_probes,
                               slow_s=config.slow_ms / 1000, max_in_flight=config.senders,
                               request_timeout_s=config.request_timeout_s) for client in self.clients]
        self.router = Router(*views, make_policy(config.policy, config.fallback_after_s),
                             max_calls_per_s=config.max_calls_per_s)
        self.health = [HealthPoller(client.name, client.base_url, lambda client=client: client.session,
                                    interval_s=config.health_interval_s, timeout_s=HEALTH_TIMEOUT_S,
                                    on_report=lambda failing, ms, name=client.name: self.router.health_report(name, failing, ms))
                       for client in self.clients]
        # Counted in accept(); read by the metrics at scrape time.
        self.accepted = 0
        self.duplicates = 0
        self.metrics = WorkerMetrics(self)
        self.journal = (Journal(config.data_dir, fsync=config.fsync, fsync_interval_ms=config.fsync_interval_ms,
                                compact_bytes=int(config.compact_mb * 1024 * 1024))
                        if config.data_dir else NullJournal())
        self.dispatcher = Dispatcher(self.queue, self.router, self.ledger, senders=config.senders,
                                     journal=self.journal, call_meters=self.metrics.calls)
        # Every correlationId accepted and not purged: queued, in flight or recorded.
        self.seen: set[str] = set()
        self._compactor: asyncio.Task | None = None

    async def start(self) -> None:
        if not self.config.data_dir:
            log.warning("no --data-dir: the queue and the ledger live in memory only; a crash loses them",
                        extra={"event": "journal_off"})
        self.restore()
        if self.config.data_dir:
            log.info("worker restored", extra={"event": "worker_restored", "owed": len(self.queue),
                                               "pinned": sum(1 for p in self.queue if p.processor),
                                               "stored": len(self.dispatcher.done)})
            self._compactor = asyncio.get_running_loop().create_task(self._compact_when_large())
        for client in self.clients:
            await client.start()
        self.router.start()
        for poller in self.health:
            poller.start()
        self.dispatcher.start()

    def restore(self) -> None:
        """Replays the journal: the ledger as it was, and every payment still owed, pins included."""
        state = self.journal.open()
        for correlation_id, processor, requested_at, cents in state.stored:
            self.ledger.record(processor, requested_at, cents)
            self.dispatcher.done[correlation_id] = (processor, requested_at, cents)
            self.seen.add(correlation_id)
        for payment in state.owed:
            self.seen.add(payment.correlation_id)
            self.queue.put(payment)

    async def _compact_when_large(self) -> None:
        while True:
            await asyncio.sleep(COMPACTION_CHECK_S)
            if self.journal.needs_compaction():
                stored = [(cid, *entry) for cid, entry in self.dispatcher.done.items()]
                self.journal.compact(self.dispatcher.owed_payments(), stored)

    async def stop(self) -> None:
        if self._compactor is not None:
            self._compactor.cancel()
            await asyncio.gather(self._compactor, return_exceptions=True)
        await self.dispatcher.stop()
        for poller in self.health:
            await poller.stop()
        await self.router.stop()
        for client in self.clients:
            await client.close()
        await self.journal.close()
        if len(self.queue):
            log.log(logging.INFO if self.config.data_dir else logging.ERROR, "worker stopped with payments not yet paid",
                    extra={"event": "worker_stopped_owing", "owed": len(self.queue),
                           "kept_in_journal": bool(self.config.data_dir)})

    # LinkHandler

    def accept(self, payments: list):
        """Queues the new payments of a batch; the ACK may go once the returned awaitable is done."""
        seen = self.seen
        fresh = []
        for correlation_id, cents in payments:
            if correlation_id in seen:
                continue  # a resent batch, or the same payment posted twice: charge once
            seen.add(correlation_id)
            fresh.append(Payment(correlation_id, cents))
        self.accepted += len(fresh)
        self.duplicates += len(payments) - len(fresh)
        if fresh:
            self.journal.accepted(fresh)
            for payment in fresh:
                self.queue.put(payment)
        return self.journal.durable() if self.journal.fsync == "always" else None

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
        """Empties the ledger and forgets recorded correlationIds; payments still owed stay owed."""
        self.journal.purged()
        self.ledger.purge()
        self.seen.difference_update(self.dispatcher.done)
        self.dispatcher.done.clear()


async def serve(config: WorkerConfig, stop: asyncio.Event) -> None:
    worker = Worker(config)
    # Before anything starts: a worker without the secret would serve anyone who reaches the port.
    link = LinkServer(worker, config.link_secret)
    await worker.start()
    # Before the link: once the link port answers (the launcher's and the HEALTHCHECK's sign of
    # life), so do the metrics.
    metrics = MetricsServer(worker.metrics.registry.page, config.metrics_listen) if config.metrics_listen else None
    metrics_up = metrics is not None and await metrics.start()
    host, port = split_host_port(config.listen)
    server = await asyncio.get_running_loop().create_server(link.protocol, host, port)
    log.info("worker started", extra={"event": "worker_started", "listen": f"{host}:{port}",
                                      "metrics_listen": config.metrics_listen if metrics_up else None,
                                      "default_url": config.default_url, "fallback_url": config.fallback_url,
                                      "policy": config.policy, "data_dir": config.data_dir or None})
    await stop.wait()
    server.close()
    if metrics is not None:
        metrics.close()
    await worker.stop()


def run(config: WorkerConfig) -> int:
    return run_until_signalled(serve, config)
