"""The small HTTP listener that answers `GET /metrics` (--metrics-listen), for the worker and the
API nodes alike. It is never the public port: NGINX proxies only the API nodes' main sockets, and
answers 404 for /metrics itself. A scraper reaches this listener on the node directly.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Callable

from rinha.config import is_unix_path, split_host_port
from rinha.http import responses
from rinha.http.protocol import HttpProtocol, Limits, ServerState

log = logging.getLogger(__name__)

NOT_FOUND = responses.error(404, "no such route; try GET /metrics")
METHOD_NOT_ALLOWED = responses.json(405, {"error": "use GET"}, extra_headers=b"allow: GET\r\n")


class MetricsApp:
    """GET /metrics and nothing else, served by the same HTTP protocol as the API nodes."""

    __slots__ = ("page",)

    def __init__(self, page: Callable[[], bytes]) -> None:
        self.page = page

    def handle(self, method, path, query, body, headers):
        if path != b"/metrics":
            return NOT_FOUND
        if method != b"GET":
            return METHOD_NOT_ALLOWED
        return self.page()


class MetricsServer:
    """The listener of `--metrics-listen` (HOST:PORT, or a Unix socket path); a few scrapers at
    most, so small limits."""

    def __init__(self, page: Callable[[], bytes], address: str) -> None:
        self.app = MetricsApp(page)
        self.address = address
        self.limits = Limits(max_body_bytes=1024, max_connections=64)
        self.state = ServerState()
        self.server: asyncio.Server | None = None

    async def start(self) -> bool:
        """Listens; False (logged) when it cannot. Payments matter more than metrics: the node runs on."""
        loop = asyncio.get_running_loop()

        def protocol() -> HttpProtocol:
            return HttpProtocol(self.app, self.limits, self.state)

        try:
            if is_unix_path(self.address):
                if os.path.exists(self.address):
                    os.unlink(self.address)
                # Default permissions: only this node's user (and root) may connect.
                self.server = await loop.create_unix_server(protocol, self.address)
            else:
                host, port = split_host_port(self.address)
                self.server = await loop.create_server(protocol, host, port)
        except OSError as exc:
            log.error("metrics not served", extra={"event": "metrics_unavailable", "listen": self.address,
                                                   "error": repr(exc)})
            return False
        return True

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            if is_unix_path(self.address) and os.path.exists(self.address):
                os.unlink(self.address)
        for connection in list(self.state.connections):
            connection.shutdown()
