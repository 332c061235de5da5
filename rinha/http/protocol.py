"""An HTTP/1.1 server protocol on httptools: keep-alive, pipelining in order, bounded input.

The application is any object with `handle(method, path, query, body, headers)` that returns
the whole response as bytes, or an awaitable of them when the answer needs I/O (the summary,
which asks the worker). Constant answers are prebuilt, so the hot path is: parse, call, one write.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Protocol, Union

import httptools

from rinha.http import responses

log = logging.getLogger(__name__)

Response = Union[bytes, Awaitable[bytes]]

# A client that pipelines more requests than this without reading answers is paused.
MAX_PIPELINED = 32


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop reading a head that is over the limit."""


class HttpApp(Protocol):
    def handle(self, method: bytes, path: bytes, query: bytes, body: bytes,
               headers: dict[bytes, bytes] | None) -> Response: ...


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 4096
    max_header_bytes: int = 8192
    keepalive_timeout_s: float = 75.0
    # Only the emulator reads headers (X-Rinha-Token); the API node never pays to keep them.
    keep_headers: bool = False


@dataclass
class ServerState:
    """What a server shares across its connections, so shutdown can reach every one."""

    connections: set = field(default_factory=set)
    tasks: set = field(default_factory=set)


class HttpProtocol(asyncio.Protocol):
    __slots__ = (
        # Per-connection state
        "app", "limits", "state", "loop", "transport", "parser", "pending", "last_active",
        "idle_timer", "reading_paused", "writing_paused", "closing",
        # Per-request state
        "url", "body", "body_size", "head_size", "headers", "too_large", "message_done",
    )

    def __init__(self, app: HttpApp, limits: Limits, state: ServerState) -> None:
        self.app = app
        self.limits = limits
        self.state = state
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        # Answers not yet written, in request order: bytes, or a task still computing them.
        self.pending: collections.deque = collections.deque()
        self.last_active = 0.0
        self.idle_timer: asyncio.TimerHandle | None = None
        self.reading_paused = False
        self.writing_paused = False
        self.closing = False
        self.url = b""
        self.body: list[bytes] = []
        self.body_size = 0
        self.head_size = 0
        self.headers: dict[bytes, bytes] | None = None
        self.too_large: bytes | None = None
        self.message_done = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.state.connections.add(self)
        self.last_active = self.loop.time()
        self.idle_timer = self.loop.call_at(self.last_active + self.limits.keepalive_timeout_s, self._idle_check)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.state.connections.discard(self)
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        for item in self.pending:
            if item is not None and type(item) is not bytes:
                item.cancel()
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._fail(responses.HEAD_TOO_LARGE_CLOSE)
                return
            # Our own callback raised: a bug of ours, not the client's fault.
            log.error("HTTP callback failed", exc_info=exc.__context__ or exc)
            self._fail(responses.INTERNAL_ERROR_CLOSE)
        except httptools.HttpParserUpgrade:
            # We speak no other protocol. A complete request was answered already: end after it.
            if self.message_done:
                self._queue(None, keep_alive=False)
            else:
                self._fail(responses.BAD_REQUEST_CLOSE)
        except httptools.HttpParserError:
            self._fail(responses.BAD_REQUEST_CLOSE)

    def pause_writing(self) -> None:
        """The client is not reading its answers: stop reading its requests until it does."""
        self.writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if len(self.pending) < MAX_PIPELINED:
            self._resume_reading()

    def eof_received(self) -> bool:
        # Half-closed by the client: finish the answers already owed, then close.
        if not self.pending:
            return False
        self.closing = True
        return True

    # httptools callbacks: only appends and assignments, so a bug here is rare and visible.

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []
        self.body_size = 0
        self.head_size = 0
        self.too_large = None
        self.message_done = False
        if self.limits.keep_headers:
            self.headers = {}

    def on_url(self, url: bytes) -> None:
        self.head_size += len(url)
        if self.head_size > self.limits.max_header_bytes:
            raise _HeadTooLarge  # refuse now: a head that never ends must not grow in memory
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.limits.max_header_bytes:
            raise _HeadTooLarge
        if self.headers is not None:
            self.headers[name.lower()] = value

    def on_body(self, chunk: bytes) -> None:
        self.body_size += len(chunk)
        if self.body_size > self.limits.max_body_bytes:
            if self.too_large is None:
                self.too_large = responses.BODY_TOO_LARGE_CLOSE
            self.body = []
        elif self.too_large is None:
            self.body.append(chunk)

    def on_message_complete(self) -> None:
        self.message_done = True
        if self.closing:
            return
        if self.too_large is not None:
            self._fail(self.too_large)
            return
        path, _, query = self.url.partition(b"?")
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        try:
            answer = self.app.handle(self.parser.get_method(), path, query, body, self.headers)
        except Exception:
            log.exception("handler failed for %r", path)
            answer = responses.INTERNAL_ERROR_CLOSE
        keep_alive = self.parser.should_keep_alive()
        if type(answer) is bytes and not self.pending:
            self.transport.write(answer)  # the hot path: one write, nothing queued
            if not keep_alive or answer is responses.INTERNAL_ERROR_CLOSE:
                self._close()
            return
        self._queue(answer, keep_alive)

    # Pipelined and asynchronous answers

    def _queue(self, answer: Response | None, keep_alive: bool) -> None:
        if answer is not None:
            if type(answer) is not bytes:
                task = self.loop.create_task(_resolve(answer))
                self.state.tasks.add(task)
                task.add_done_callback(self._answer_ready)
                answer = task
            self.pending.append(answer)
        if not keep_alive or answer is responses.INTERNAL_ERROR_CLOSE:
            # A marker: close once everything before it is written, and serve nothing after it.
            self.pending.append(None)
            self.closing = True
        if len(self.pending) >= MAX_PIPELINED:
            self._pause_reading()
        self._write_ready()

    def _answer_ready(self, task: asyncio.Task) -> None:
        self.state.tasks.discard(task)
        self._write_ready()

    def _write_ready(self) -> None:
        pending = self.pending
        while pending:
            head = pending[0]
            if head is None:
                pending.clear()
                self._close()
                return
            if type(head) is not bytes:
                if not head.done():
                    return
                head = head.result() if not head.cancelled() else responses.INTERNAL_ERROR_CLOSE
            pending.popleft()
            if self.transport.is_closing():
                return
            self.transport.write(head)
            if head is responses.INTERNAL_ERROR_CLOSE:
                self._close()
                return
        if self.closing:
            self._close()
        elif not self.writing_paused:
            self._resume_reading()

    # Connection management

    def _fail(self, answer: bytes) -> None:
        """A request we will not serve: answer it (after those owed before it) and close."""
        if self.closing:
            return  # the connection already ends after the answers owed; nothing more is read
        self.closing = True
        if self.pending:
            self.pending.append(answer)
            self.pending.append(None)
            self._pause_reading()
            self._write_ready()
        else:
            self.transport.write(answer)
            self._close()

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _pause_reading(self) -> None:
        if not self.reading_paused and not self.transport.is_closing():
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and not self.transport.is_closing():
            self.reading_paused = False
            self.transport.resume_reading()

    def _idle_check(self) -> None:
        """The one keep-alive timer: closes an idle connection, else re-arms for the remainder."""
        deadline = self.last_active + self.limits.keepalive_timeout_s
        if self.pending or self.loop.time() < deadline:
            self.idle_timer = self.loop.call_at(max(deadline, self.loop.time() + 0.1), self._idle_check)
            return
        self.idle_timer = None
        self._close()

    def shutdown(self) -> None:
        """Graceful stop: close now if idle, else after the answers already owed."""
        if self.pending:
            self.closing = True
        else:
            self._close()


async def _resolve(answer: Awaitable[bytes]) -> bytes:
    try:
        return await answer
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("asynchronous handler failed")
        return responses.INTERNAL_ERROR_CLOSE
