"""Starts an API node: the HTTP listener(s), the payment buffer and the link to the worker."""

from __future__ import annotations

import asyncio
import logging
import os

from rinha.api.buffer import PaymentBuffer
from rinha.api.metrics import ApiMetrics
from rinha.api.routes import ACCEPTED, ROUTES, ApiApp
from rinha.config import ApiConfig, split_host_port
from rinha.http.metrics_server import MetricsServer
from rinha.http.protocol import HttpProtocol, Limits, ServerState
from rinha.lifecycle import run_until_signalled
from rinha.link.client import LinkClient

log = logging.getLogger(__name__)

# On SIGTERM, how long to wait for the worker to acknowledge what this node still holds.
DRAIN_TIMEOUT_S = 5.0


async def serve(config: ApiConfig, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    # In ack mode every POST waits for its batch, so batches go at the end of each loop iteration
    # (call_later(0)): they still gather every payment parsed in that iteration.
    flush_interval_s = 0.0 if config.ack_mode else config.flush_interval_ms / 1000
    buffer = PaymentBuffer(flush_interval_s=flush_interval_s, batch_max=config.batch_max, capacity=config.buffer_max)
    (host, port), *alternates = [split_host_port(address) for address in config.worker.split(",")]
    link = LinkClient(host, port, secret=config.link_secret, on_connected=buffer.on_connected, on_ack=buffer.on_ack,
                      max_backoff_s=config.reconnect_max_backoff_s, alternates=alternates)
    buffer.link = link
    link.start()

    metrics = (ApiMetrics(buffer, link, routes=ROUTES, accepted=ACCEPTED) if config.metrics == "on" else None)
    app = ApiApp(buffer, link, config.summary_timeout_s, ack_mode=config.ack_mode, metrics=metrics,
                 admin_token=config.admin_token)
    scrape = (MetricsServer(metrics.page, config.metrics_listen) if metrics is not None and config.metrics_listen
              else None)
    if scrape is not None and not await scrape.start():
        scrape = None
    limits = Limits(max_body_bytes=config.max_body_bytes, max_header_bytes=config.max_header_bytes,
                    keepalive_timeout_s=config.keepalive_timeout_s, request_timeout_s=config.request_timeout_s,
                    max_connections=config.max_connections)
    state = ServerState()

    def protocol() -> HttpProtocol:
        return HttpProtocol(app, limits, state)

    servers = []
    if config.socket:
        if os.path.exists(config.socket):
            os.unlink(config.socket)
        os.makedirs(os.path.dirname(config.socket) or ".", exist_ok=True)
        servers.append(await loop.create_unix_server(protocol, config.socket, backlog=4096))
        # NGINX may run as another user (the Docker image's `nginx`): let it connect.
        os.chmod(config.socket, 0o666)
    if config.port:
        servers.append(await loop.create_server(protocol, "127.0.0.1", config.port, backlog=4096))
    log.info("API node started", extra={"event": "api_started", "socket": config.socket, "port": config.port or None,
                                          "worker": config.worker, "metrics_listen": scrape.address if scrape else None,
                                          "ack_mode": config.ack_mode, "purge": config.admin_token != ""})

    await stop.wait()
    log.info("API node stopping", extra={"event": "api_stopping", "held": buffer.held})
    for server in servers:
        server.close()
    if scrape is not None:
        scrape.close()
    for connection in list(state.connections):
        connection.shutdown()
    buffer.flush()
    deadline = loop.time() + DRAIN_TIMEOUT_S
    while buffer.held and loop.time() < deadline:
        await asyncio.sleep(0.01)
        buffer.flush()
    if buffer.held:
        log.error("API node stopped with payments the worker has not acknowledged",
                  extra={"event": "api_stopped_with_payments", "held": buffer.held})
    await link.close()
    if config.socket and os.path.exists(config.socket):
        os.unlink(config.socket)


def run(config: ApiConfig) -> int:
    return run_until_signalled(serve, config)
