"""Starts the worker node: link server, queue, senders, processor clients, health, router, ledger."""

from __future__ import annotations

import asyncio
import logging

from rinha import clock
from rinha.config import WorkerConfig, split_host_port
from rinha.lifecycle import run_until_signalled
from rinha.http.metrics_server import MetricsServer
from rinha.link.server import LinkServer
from rinha.worker.dispatcher import Dispatcher
from rinha.worker.metrics import WorkerMetrics
from rinha.worker.processors import ProcessorClient
from rinha.worker.queue import Payment, PaymentQueue
from rinha.worker.router import ProcessorView, Router, make_policy
from rinha.worker.store import open_store
from rinha.worker.store.base import summary_body

log = logging.getLogger(__name__)

# A health answer slower than this is not worth waiting for: the next poll comes anyway.
HEALTH_TIMEOUT_S = 3.0


class Worker:
    """Owns every payment from the moment an API node's batch arrives until the ledger has it."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.queue = PaymentQueue()
        self.store = open_store(config, self.queue)
        self.clients = [ProcessorClient(name, url, connections=config.max_senders, timeout_s=config.request_timeout_s)
                        for name, url in (("default", config.default_url), ("fallback", config.fallback_url))]
        views = [ProcessorView(client, failure_threshold=config.failure_threshold,
                               probe_interval_s=config.probe_interval_ms / 1000, max_probes=config.max_probes,
                               slow_s=config.slow_threshold_s(), max_in_flight=config.max_senders,
                               request_timeout_s=config.request_timeout_s) for client in self.clients]
        self.router = Router(*views, make_policy(config.policy, config.fallback_after_s, config.hold_ms / 1000, config.hold_payments),
                             max_calls_per_s=config.max_calls_per_s)
        self.store.call_timeouts = {name: view.timeout_s for name, view in self.router.views.items()}
        self.health = [self.store.health_poller(client.name, client.base_url, lambda client=client: client.session,
                                    interval_s=config.health_interval_s, timeout_s=HEALTH_TIMEOUT_S,
                                    on_report=lambda failing, ms, name=client.name: self.router.health_report(name, failing, ms))
                       for client in self.clients]
        self.metrics = WorkerMetrics(self)
        self.dispatcher = Dispatcher(self.queue, self.router, self.store, senders=config.senders,
                                     max_senders=config.max_senders, call_meters=self.metrics.calls,
                                     wait_meter=self.metrics.wait)

    async def start(self) -> None:
        if not self.config.data_dir:
            log.warning("no --data-dir: the store is in a temporary folder; a crash loses the queue and the ledger",
                        extra={"event": "store_ephemeral"})
        owed = await self.store.open()  # only what is still owed: the history stays on disk
        for payment in owed:
            self.queue.put(payment)
        if self.config.data_dir:
            log.info("worker restored", extra={"event": "worker_restored", "owed": len(owed),
                                               "pinned": sum(1 for p in owed if p.processor),
                                               "stored": sum(self.store.stored_count(name) for name in self.router.views)})
        for client in self.clients:
            await client.start()
        self.router.start()
        for poller in self.health:
            poller.start()
        self.dispatcher.start()

    async def stop(self) -> None:
        await self.dispatcher.stop()
        for poller in self.health:
            await poller.stop()
        await self.router.stop()
        for client in self.clients:
            await client.close()
        await self.store.close()
        if len(self.queue):
            log.log(logging.INFO if self.config.data_dir else logging.ERROR, "worker stopped with payments not yet paid",
                    extra={"event": "worker_stopped_owing", "owed": len(self.queue),
                           "kept_in_store": bool(self.config.data_dir)})

    # LinkHandler

    def accept(self, payments: list):
        """Queues the new payments of a batch; the ACK may go once the returned awaitable is done.

        The work runs in a task of its own, shielded: a link lost meanwhile cancels the ACK, not
        the queueing. Payments the store has taken must reach the queue, since a resent batch
        will find them known and drop them."""
        return asyncio.shield(asyncio.get_running_loop().create_task(self._accept(payments)))

    async def _accept(self, payments: list) -> None:
        fresh = await self.store.accept(payments)  # durable on return; repeats are dropped (and counted)
        for payment in fresh:
            self.queue.put(payment)

    async def answer(self, request: dict) -> tuple[int, object]:
        op = request.get("op")
        if op == "summary":
            start, end = request.get("from"), request.get("to")
            recent_ms = self.config.settle_recent_ms
            recent_since = clock.now_ms() - int(recent_ms) if recent_ms > 0 else None
            await self.dispatcher.settle(start, end, self.config.settle_timeout_ms / 1000, recent_since)
            return 200, summary_body(await self.store.summary(start, end))
        if op == "purge":
            await self.store.purge()
            return 200, {"message": "ledger purged"}
        return 400, {"error": f"unknown operation {op!r}"}


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
