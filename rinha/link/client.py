"""The API node's end of the link: one TCP connection to the worker, kept up with backoff.

It knows nothing about payments: it sends frames, hands ACKs to whoever owns the batches, and
matches REPLY frames to the requests that are waiting for them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Callable

from rinha.link import frames

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.02


class LinkDown(Exception):
    """The worker is not reachable right now (or went away while we waited for it)."""


class LinkClient:
    def __init__(self, host: str, port: int, *, on_connected: Callable[[], None],
                 on_ack: Callable[[int], None], max_backoff_s: float = 1.0) -> None:
        self.host = host
        self.port = port
        self.on_connected = on_connected
        self.on_ack = on_ack
        self.max_backoff_s = max_backoff_s
        self.transport: asyncio.Transport | None = None
        self.replies: dict[int, asyncio.Future] = {}
        self.request_ids = itertools.count(1)
        self.reconnects = 0
        self._up = asyncio.Event()          # set while connected, for requests that wait for the link
        self._proven = False                # the worker has answered on this connection
        self._task: asyncio.Task | None = None
        self._lost: asyncio.Future | None = None

    @property
    def connected(self) -> bool:
        return self.transport is not None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._keep_connected())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self.transport is not None:
            self.transport.close()

    def send(self, frame: bytes) -> bool:
        if self.transport is None:
            return False
        self.transport.write(frame)
        return True

    async def request(self, payload: dict, timeout_s: float) -> dict:
        """Sends a REQUEST and waits for its REPLY, within `timeout_s` all told: a link that comes
        back in that time (a blip, a worker restart) still gets the question.
        Raises LinkDown or asyncio.TimeoutError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self.transport is None:
            try:
                await asyncio.wait_for(self._up.wait(), timeout_s)
            except asyncio.TimeoutError:
                raise LinkDown("worker link is down") from None
        request_id = next(self.request_ids)
        reply = loop.create_future()
        self.replies[request_id] = reply
        try:
            self.transport.write(frames.encode(frames.REQUEST, {"id": request_id, **payload}))
            return await asyncio.wait_for(reply, max(deadline - loop.time(), 0.001))
        finally:
            self.replies.pop(request_id, None)

    async def _keep_connected(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = FIRST_BACKOFF_S
        worker = f"{self.host}:{self.port}"
        lost_at: float | None = None  # loop time the link was last lost; None before it was ever up
        while True:
            try:
                transport, _ = await loop.create_connection(lambda: _LinkProtocol(self), self.host, self.port)
                if transport.get_extra_info("sockname") == transport.get_extra_info("peername"):
                    # Nothing listens and the kernel connected the socket to itself (TCP
                    # simultaneous open, possible when the port is in the ephemeral range).
                    transport.abort()
                    raise ConnectionRefusedError("connected to itself: nothing listens there")
            except OSError as exc:
                log.debug("link to worker refused", extra={"worker": worker, "error": repr(exc),
                                                           "retry_ms": round(backoff * 1e3)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            self._lost = loop.create_future()
            self._proven = False
            self.transport = transport
            self._up.set()
            if lost_at is None:
                log.info("link to worker up", extra={"event": "link_up", "worker": worker})
            else:
                log.info("link to worker restored", extra={"event": "link_restored", "worker": worker,
                                                            "down_s": round(loop.time() - lost_at, 3),
                                                            "reconnects": self.reconnects})
            self.on_connected()
            await self._lost
            lost_at = loop.time()
            self.reconnects += 1
            log.warning("link to worker lost; reconnecting", extra={"event": "link_lost", "worker": worker,
                                                                     "proven": self._proven})
            if self._proven:
                backoff = FIRST_BACKOFF_S
            else:
                # Accepted and dropped before the worker ever answered: back off as if refused,
                # or a peer that accepts and closes would have us reconnect in a tight loop.
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

    # Called by _LinkProtocol

    def _frame_received(self, kind: int, payload: dict) -> None:
        self._proven = True
        if kind == frames.ACK:
            self.on_ack(payload["seq"])
        elif kind == frames.REPLY:
            reply = self.replies.get(payload["id"])
            if reply is not None and not reply.done():
                reply.set_result(payload)

    def _connection_lost(self) -> None:
        self.transport = None
        self._up.clear()
        for reply in self.replies.values():
            if not reply.done():
                reply.set_exception(LinkDown("worker link lost"))
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)


class _LinkProtocol(asyncio.Protocol):
    __slots__ = ("client", "decoder", "transport")

    def __init__(self, client: LinkClient) -> None:
        self.client = client
        self.decoder = frames.FrameDecoder()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            for kind, payload in self.decoder.feed(data):
                self.client._frame_received(kind, payload)
        except (frames.FrameError, KeyError, TypeError) as exc:
            log.error("bad frame from worker; dropping the link", extra={"event": "bad_frame", "error": repr(exc)})
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._connection_lost()
