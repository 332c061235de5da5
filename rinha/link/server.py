"""The worker's end of the link: accepts API node connections, turns frames into worker calls.

The worker itself is anything with `accept(payments)` (synchronous: the batch is queued before
the ACK goes out) and `async answer(request) -> (status, body)`. A connection is served only
once it has proven the link secret (rinha/link/handshake.py); until then none of its bytes
reaches the worker, and a connection that has not proven it in time is closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Protocol

from rinha.link import frames, handshake

log = logging.getLogger(__name__)

# Connections still in their handshake at once; past this a new one is closed on arrival, so a
# flood of strangers holds a bounded number of sockets and timers (each for at most a second).
MAX_UNPROVEN = 256
# Refused handshakes are logged at most once per this, with how many there were: a stranger
# knocking in a loop must not flood the log.
REFUSAL_LOG_INTERVAL_S = 5.0


class LinkHandler(Protocol):
    def accept(self, payments: list) -> Awaitable[None] | None: ...

    async def answer(self, request: dict) -> tuple[int, object]: ...


class LinkServer:
    """What the worker's connections share: the handler, the secret, the handshakes under way."""

    def __init__(self, handler: LinkHandler, secret: str) -> None:
        self.handler = handler
        self.secret = handshake.secret_bytes(secret)
        self.unproven = 0
        self.refused = 0          # handshakes refused since the start, for tests and logs
        self._unlogged = 0
        self._logged_at: float | None = None

    def protocol(self) -> "LinkServerProtocol":
        return LinkServerProtocol(self)

    def refusal(self, peer, reason: str) -> None:
        self.refused += 1
        self._unlogged += 1
        now = asyncio.get_running_loop().time()
        if self._logged_at is None or now - self._logged_at >= REFUSAL_LOG_INTERVAL_S:
            log.warning("link connection refused: it did not prove the link secret",
                        extra={"event": "link_refused", "peer": _address(peer), "reason": reason,
                               "refused": self._unlogged})
            self._logged_at = now
            self._unlogged = 0


class LinkServerProtocol(asyncio.Protocol):
    __slots__ = ("server", "handler", "decoder", "transport", "tasks", "peer", "spoke", "proven", "nonce",
                 "timer", "counted")

    def __init__(self, server: LinkServer) -> None:
        self.server = server
        self.handler = server.handler
        self.decoder = frames.FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.tasks: set[asyncio.Task] = set()
        self.peer = None
        # A connection is logged as an API node once proven; one that says nothing and leaves (the
        # launcher's probe, Docker's HEALTHCHECK every 5 s) is not news.
        self.spoke = False
        self.proven = False
        self.nonce = handshake.new_nonce()
        self.timer: asyncio.TimerHandle | None = None
        self.counted = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        server = self.server
        if server.unproven >= MAX_UNPROVEN:
            server.refusal(self.peer, "too many connections in their handshake")
            transport.abort()
            return
        server.unproven += 1
        self.counted = True
        self.timer = asyncio.get_running_loop().call_later(handshake.HANDSHAKE_TIMEOUT_S, self._too_slow)
        transport.write(handshake.hello(self.nonce))

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_handshake()
        if self.proven:
            log.warning("API node disconnected", extra={"event": "node_disconnected", "peer": _address(self.peer),
                                                        "error": repr(exc) if exc else None})
        for task in self.tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        if not self.proven:
            self._handshake(data)
            return
        try:
            for kind, payload in self.decoder.feed(data):
                if kind == frames.BATCH:
                    durable = self.handler.accept(payload["payments"])
                    ack = frames.encode(frames.ACK, {"seq": payload["seq"]})
                    if durable is None:
                        self.transport.write(ack)
                    else:  # the store commits the batch first
                        self._spawn(self._ack_when_durable(durable, ack))
                elif kind == frames.REQUEST:
                    self._spawn(self._answer(payload))
                else:
                    raise frames.FrameError(f"unexpected frame kind {kind} from an API node")
        except (frames.FrameError, KeyError, TypeError, ValueError) as exc:
            log.error("bad frame from an API node; dropping the connection",
                      extra={"event": "bad_frame", "peer": _address(self.peer), "error": repr(exc)})
            self.transport.close()

    # The handshake

    def _handshake(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        self.spoke = True
        secret = self.server.secret
        try:
            payload = handshake.take_frame(self.decoder.buffer, data, frames.PROOF)
            if payload is None:
                return
            api_nonce = handshake.read_hex(payload, "nonce")
            mac = handshake.read_hex(payload, "mac")
            if not handshake.matches(handshake.api_mac(secret, self.nonce, api_nonce), mac):
                raise handshake.HandshakeError("wrong MAC: not the link secret")
        except handshake.HandshakeError as exc:
            self._refuse(str(exc))
            return
        self.proven = True
        self._end_handshake()
        self.transport.write(handshake.welcome(secret, self.nonce, api_nonce))
        log.info("API node connected", extra={"event": "node_connected", "peer": _address(self.peer)})

    def _too_slow(self) -> None:
        self.timer = None
        if not self.proven and not self.transport.is_closing():
            if self.spoke:
                self._refuse(f"no proof within {handshake.HANDSHAKE_TIMEOUT_S:g} s")
            else:
                self._end_handshake()
                self.transport.abort()

    def _refuse(self, reason: str) -> None:
        self._end_handshake()
        self.decoder.buffer.clear()
        self.server.refusal(self.peer, reason)
        self.transport.abort()

    def _end_handshake(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.counted:
            self.counted = False
            self.server.unproven -= 1

    # Answers

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
