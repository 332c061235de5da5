"""The worker's end of the link: accepts API node connections, turns frames into worker calls.

The worker itself is anything with `accept(payments)` (synchronous: the batch is queued before
the ACK goes out) and `async answer(request) -> (status, body)`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Protocol

from rinha.link import frames

log = logging.getLogger(__name__)


class LinkHandler(Protocol):
    def accept(self, payments: list) -> Awaitable[None] | None: ...

    async def answer(self, request: dict) -> tuple[int, object]: ...


class LinkServerProtocol(asyncio.Protocol):
    __slots__ = ("handler", "decoder", "transport", "tasks", "peer", "spoke")

    def __init__(self, handler: LinkHandler) -> None:
        self.handler = handler
        self.decoder = frames.FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.tasks: set[asyncio.Task] = set()
        self.peer = None
        # A connection is logged as an API node once it sends a byte: health probes (the launcher's,
        # Docker's HEALTHCHECK every 5 s) connect and leave without a word, and are not news.
        self.spoke = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.peer = transport.get_extra_info("peername")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.spoke:
            log.warning("API node disconnected", extra={"event": "node_disconnected", "peer": _address(self.peer),
                                                        "error": repr(exc) if exc else None})
        for task in self.tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        if not self.spoke:
            self.spoke = True
            log.info("API node connected", extra={"event": "node_connected", "peer": _address(self.peer)})
        try:
            for kind, payload in self.decoder.feed(data):
                if kind == frames.BATCH:
                    durable = self.handler.accept(payload["payments"])
                    ack = frames.encode(frames.ACK, {"seq": payload["seq"]})
                    if durable is None:
                        self.transport.write(ack)
                    else:  # the journal must reach the disk first (fsync policy `always`)
                        self._spawn(self._ack_when_durable(durable, ack))
                elif kind == frames.REQUEST:
                    self._spawn(self._answer(payload))
                else:
                    raise frames.FrameError(f"unexpected frame kind {kind} from an API node")
        except (frames.FrameError, KeyError, TypeError, ValueError) as exc:
            log.error("bad frame from an API node; dropping the connection",
                      extra={"event": "bad_frame", "peer": _address(self.peer), "error": repr(exc)})
            self.transport.close()

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _ack_when_durable(self, durable, ack: bytes) -> None:
        await durable
        if not self.transport.is_closing():
            self.transport.write(ack)

    async def _answer(self, request: dict) -> None:
        try:
            status, body = await self.handler.answer(request)
        except Exception:
            log.exception("request from an API node failed", extra={"request": request})
            status, body = 500, {"error": "worker failed to answer"}
        if not self.transport.is_closing():
            self.transport.write(frames.encode(frames.REPLY, {"id": request.get("id"), "status": status, "body": body}))


def _address(peer) -> str:
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
