"""The API node's end of the link: one TCP connection to the worker, kept up with backoff.

It knows nothing about payments: it sends frames, hands ACKs to whoever owns the batches, and
matches REPLY frames to the requests that are waiting for them. A connection counts as up only
once the handshake is done (rinha/link/handshake.py): the worker has proven the secret too, so
nothing is sent to a stranger posing as the worker.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Callable

from rinha.link import frames, handshake

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.02
# From the connection to the WELCOME: the worker's own deadline for our PROOF, plus room for a
# worker busy with a backlog.
HANDSHAKE_DEADLINE_S = 2 * handshake.HANDSHAKE_TIMEOUT_S


class LinkDown(Exception):
    """The worker is not reachable right now (or went away while we waited for it)."""


class LinkClient:
    def __init__(self, host: str, port: int, *, secret: str, on_connected: Callable[[], None],
                 on_ack: Callable[[int], None], max_backoff_s: float = 1.0,
                 alternates: list[tuple[str, int]] = ()) -> None:
        # Cluster mode: every worker can take a batch. A refused or lost link moves on to the next
        # one at once; the backoff is slept only once every address has been tried.
        self.addresses = [(host, port), *alternates]
        self.current = 0
        self.tried = 0
        self.host = host
        self.port = port
        self.secret = handshake.secret_bytes(secret)
        self.on_connected = on_connected
        self.on_ack = on_ack
        self.max_backoff_s = max_backoff_s
        self.transport: asyncio.Transport | None = None
        self.replies: dict[int, asyncio.Future] = {}
        self.request_ids = itertools.count(1)
        self.reconnects = 0
        self._up = asyncio.Event()          # set while connected, for requests that wait for the link
        self.refusals = 0                   # handshakes that failed in a row
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
        lost_at: float | None = None  # loop time the link was last lost; None before it was ever up
        while True:
            self.host, self.port = self.addresses[self.current]
            worker = f"{self.host}:{self.port}"
            try:
                transport, protocol = await loop.create_connection(lambda: _LinkProtocol(self), self.host, self.port)
                if transport.get_extra_info("sockname") == transport.get_extra_info("peername"):
                    # Nothing listens and the kernel connected the socket to itself (TCP
                    # simultaneous open, possible when the port is in the ephemeral range).
                    transport.abort()
                    raise ConnectionRefusedError("connected to itself: nothing listens there")
            except OSError as exc:
                log.debug("link to worker refused", extra={"worker": worker, "error": repr(exc),
                                                           "retry_ms": round(backoff * 1e3)})
                if self._next_address():
                    continue
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            try:
                await asyncio.wait_for(asyncio.shield(protocol.ready), HANDSHAKE_DEADLINE_S)
            except asyncio.CancelledError:
                transport.abort()  # closed mid-handshake: the connection is nobody's yet
                raise
            except (asyncio.TimeoutError, handshake.HandshakeError, ConnectionError) as exc:
                transport.abort()
                self.refusals += 1
                # Once per streak: a wrong secret on one side is a configuration to fix, not news each second.
                log.log(logging.ERROR if self.refusals == 1 else logging.DEBUG,
                        "link handshake with the worker failed; is RINHA_LINK_SECRET the same on both?",
                        extra={"event": "link_handshake_failed", "worker": worker,
                               "error": repr(exc) or type(exc).__name__})
                if self._next_address():
                    continue
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            if transport.is_closing():  # lost between the WELCOME and this task's turn
                await asyncio.sleep(backoff)
                continue
            self.refusals = 0
            self.tried = 0
            self._lost = loop.create_future()
            self.transport = transport
            protocol.linked = True
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
            log.warning("link to worker lost; reconnecting", extra={"event": "link_lost", "worker": worker})
            # A link that was up reconnects at once; a peer that accepts and drops before the
            # handshake ends is backed off above, like a refusal, so it never causes a tight loop.
            backoff = FIRST_BACKOFF_S

    def _next_address(self) -> bool:
        """Moves to the next worker address; False once a whole round has failed (time to back off)."""
        if len(self.addresses) == 1:
            return False
        self.current = (self.current + 1) % len(self.addresses)
        self.tried += 1
        if self.tried >= len(self.addresses):
            self.tried = 0
            return False
        return True

    # Called by _LinkProtocol

    def _frame_received(self, kind: int, payload: dict) -> None:
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
    __slots__ = ("client", "decoder", "transport", "ready", "linked", "worker_nonce", "api_nonce")

    def __init__(self, client: LinkClient) -> None:
        self.client = client
        self.decoder = frames.FrameDecoder()
        self.transport: asyncio.Transport | None = None
        # Done with None once the worker's WELCOME checks out; with an exception if it does not.
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.linked = False  # set by the client once it has taken the connection as up
        self.worker_nonce: bytes | None = None
        self.api_nonce = handshake.new_nonce()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.linked:  # one attribute test per read once linked: the hot path as before
            if not self.ready.done():
                self._handshake(data)
            # else: handshake done, the client not yet told; the worker sends nothing unasked
            return
        try:
            for kind, payload in self.decoder.feed(data):
                self.client._frame_received(kind, payload)
        except (frames.FrameError, KeyError, TypeError) as exc:
            log.error("bad frame from worker; dropping the link", extra={"event": "bad_frame", "error": repr(exc)})
            self.transport.close()

    def _handshake(self, data: bytes) -> None:
        secret = self.client.secret
        try:
            if self.worker_nonce is None:
                payload = handshake.take_frame(self.decoder.buffer, data, frames.HELLO)
                if payload is None:
                    return
                if payload.get("v") != handshake.VERSION:
                    raise handshake.HandshakeError(f"link version {payload.get('v')!r}, we speak {handshake.VERSION}")
                self.worker_nonce = handshake.read_hex(payload, "nonce")
                self.transport.write(handshake.proof(secret, self.worker_nonce, self.api_nonce))
                return
            payload = handshake.take_frame(self.decoder.buffer, data, frames.WELCOME)
            if payload is None:
                return
            expected = handshake.worker_mac(secret, self.worker_nonce, self.api_nonce)
            if not handshake.matches(expected, handshake.read_hex(payload, "mac")):
                raise handshake.HandshakeError("the worker did not prove the link secret")
        except handshake.HandshakeError as exc:
            self.ready.set_exception(exc)
            self.transport.abort()
            return
        self.ready.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionResetError("closed during the handshake"))
        self.ready.exception()  # retrieved: a failure nobody awaited any more is not reported as lost
        if self.linked:
            self.client._connection_lost()
