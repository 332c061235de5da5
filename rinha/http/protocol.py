"""An HTTP/1.1 server protocol on httptools: keep-alive, pipelining in order, bounded input.

The application is any object with `handle(method, path, query, body, headers)` that returns
the whole response as bytes, or an awaitable of them when the answer needs I/O (the summary,
which asks the worker). Constant answers are prebuilt, so the hot path is: parse, call, one write.

Hostile clients are bounded by `Limits`: a head over max_header_bytes gets 431 and a body over
max_body_bytes 413 (a declared Content-Length at once, before any body byte is read); a request
still incomplete after request_timeout_s gets 408; past max_connections a new connection gets 503.
Each of these answers closes the connection, and nothing the client sent after it is served.

An app that wants to count what it answered has an `answered(path, answer, began)` attribute
(None: not counting); it is looked up once per connection, as httptools looks up its callbacks,
and called once the answer is handed to the transport, `began` being the `time.perf_counter()`
of the request's first byte. An answer that waits (for the worker, or behind a pipelined one)
is counted when it is ready.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass, field
from time import perf_counter
from typing import Awaitable, Callable, Protocol, Union

import httptools

from rinha.http import responses

log = logging.getLogger(__name__)

Response = Union[bytes, Awaitable[bytes]]

# A client that pipelines more requests than this without reading answers is paused.
MAX_PIPELINED = 32

# uvloop's timers have millisecond resolution and may fire a little early: a deadline this close
# counts as reached, and the timer is never re-armed closer than this (no busy loop).
TIMER_SLACK_S = 0.005



class _Refused(Exception):
    """Raised from a parser callback to stop reading a request we will not serve."""

    def __init__(self, answer: bytes) -> None:
        super().__init__()
        self.answer = answer


class HttpApp(Protocol):
    def handle(self, method: bytes, path: bytes, query: bytes, body: bytes,
               headers: dict[bytes, bytes] | None) -> Response: ...


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 4096
    max_header_bytes: int = 8192
    keepalive_timeout_s: float = 75.0
    # A request begun but not complete (head and body) after this gets 408 and a close, so a
    # client trickling bytes (slowloris) cannot hold a connection for ever. NGINX sends each
    # request whole, so behind it this never fires.
    request_timeout_s: float = 10.0
    # Past this many open connections a new one gets 503 and is closed at once: file descriptors
    # and per-connection memory stay bounded whatever clients do.
    max_connections: int = 4096
    # Only the emulator reads headers (X-Rinha-Token); the API node keeps Authorization alone.
    keep_headers: bool = False
    # Derived: a Content-Length with fewer digits than this cannot exceed max_body_bytes, so the
    # common small body is checked without an int().
    max_body_digits: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_body_digits", len(str(self.max_body_bytes)))


@dataclass
class ServerState:
    """What a server shares across its connections, so shutdown can reach every one."""

    connections: set = field(default_factory=set)
    tasks: set = field(default_factory=set)


class HttpProtocol(asyncio.Protocol):
    __slots__ = (
        # Per-connection state
        "app", "limits", "state", "loop", "transport", "parser", "pending", "last_active",
        "idle_timer", "reading_paused", "writing_paused", "closing", "answered",
        # Per-request state
        "url", "body", "body_size", "head_size", "headers", "message_done", "request_start", "open_read",
        "began",
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
        self.answered: Callable[[bytes, bytes, float], None] | None = getattr(app, "answered", None)
        self.url = b""
        self.body: list[bytes] = []
        self.body_size = 0
        self.head_size = 0
        self.headers: dict[bytes, bytes] | None = None
        # True between requests: no request is open, so none can be late.
        self.message_done = True
        self.request_start = 0.0
        # Bytes of later reads that ended with the request still open (-1: it began in this read).
        self.open_read = -1
        # perf_counter() at the request's first byte, taken only for an app that counts: uvloop's
        # loop.time() has millisecond resolution, too coarse for answers of a few microseconds.
        self.began = 0.0

    # asyncio callbacks

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        if len(self.state.connections) >= self.limits.max_connections:
            # Over the limit: one prebuilt write and a close; nothing is kept, no timer is armed.
            self.closing = True
            transport.write(responses.TOO_MANY_CONNECTIONS_CLOSE)
            transport.close()
            return
        self.state.connections.add(self)
        self.last_active = self.loop.time()
        self.idle_timer = self.loop.call_at(self.last_active + self._check_interval(), self._idle_check)

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
            refused = exc.__context__
            if type(refused) is _Refused:
                self._fail(refused.answer)
                return
            # Our own callback raised: a bug of ours, not the client's fault.
            log.error("HTTP callback failed", exc_info=refused or exc)
            self._fail(responses.INTERNAL_ERROR_CLOSE)
        except httptools.HttpParserUpgrade:
            # We speak no other protocol. A complete request was answered already: end after it.
            if self.message_done:
                self._queue(None, keep_alive=False)
            else:
                self._fail(responses.BAD_REQUEST_CLOSE)
        except httptools.HttpParserError:
            self._fail(responses.BAD_REQUEST_CLOSE)
        else:
            # The hot path ends here: a whole request per read leaves none open.
            if not self.message_done:
                self._count_open_read(len(data))

    def pause_writing(self) -> None:
        """The client is not reading its answers: stop reading its requests until it does."""
        self.writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.last_active = self.loop.time()  # the client read something: it is not idle
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
        self.message_done = False
        # The time of the read this request began in: the deadline costs no extra clock call.
        self.request_start = self.last_active
        self.open_read = -1
        if self.answered is not None:
            self.began = perf_counter()
        # Without keep_headers only Authorization is kept (on_header): reset per request, so a
        # token never carries over to the next request of a kept-alive (NGINX-shared) connection.
        self.headers = {} if self.limits.keep_headers else None

    def on_url(self, url: bytes) -> None:
        self.head_size += len(url)
        if self.head_size > self.limits.max_header_bytes:
            # Refuse now: a head that never ends must not grow in memory.
            raise _Refused(responses.HEAD_TOO_LARGE_CLOSE)
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name_size = len(name)
        self.head_size += name_size + len(value) + 4
        if self.head_size > self.limits.max_header_bytes:
            raise _Refused(responses.HEAD_TOO_LARGE_CLOSE)
        # A body declared too large is refused before any byte of it is read. Lengths first: for other
        # headers and for a short Content-Length this costs two compares. llhttp checked the digits.
        if name_size == 14 and len(value) >= self.limits.max_body_digits and name.lower() == b"content-length":
            if int(value) > self.limits.max_body_bytes:
                raise _Refused(responses.BODY_TOO_LARGE_CLOSE)
        if self.limits.keep_headers:
            self.headers[name.lower()] = value
        elif name_size == 13 and name.lower() == b"authorization":
            # The admin routes need it; other headers cost one compare of a length already taken.
            self.headers = {b"authorization": value}

    def on_body(self, chunk: bytes) -> None:
        self.body_size += len(chunk)
        if self.body_size > self.limits.max_body_bytes:
            # Only a chunked body gets here (a Content-Length one was refused at its header):
            # refuse at once rather than read on to a last chunk that may never come.
            raise _Refused(responses.BODY_TOO_LARGE_CLOSE)
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        self.message_done = True
        if self.closing:
            return
        path, _, query = self.url.partition(b"?")
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        method = self.parser.get_method()
        try:
            answer = self.app.handle(method, path, query, body, self.headers)
        except Exception:
            log.exception("handler failed for %r", path)
            answer = responses.INTERNAL_ERROR_CLOSE
        else:
            if method == b"HEAD":
                # No body in an answer to HEAD (RFC 9110 9.3.2): the client, or NGINX on a kept-alive
                # upstream connection, would read it as the start of the next answer.
                answer = _head_only(answer)
        keep_alive = self.parser.should_keep_alive()
        answered = self.answered
        if type(answer) is bytes and not self.pending:
            self.transport.write(answer)  # the hot path: one write, nothing queued
            if answered is not None:
                answered(path, answer, self.began)
            if not keep_alive or answer is responses.INTERNAL_ERROR_CLOSE:
                self._close()
            return
        if answered is not None:
            if type(answer) is bytes:
                answered(path, answer, self.began)  # a pipelined answer: written after those before it
            else:
                answer = _observed(answer, path, self.began, answered)
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
            # A marker: close once everything before it is written, and serve nothing after it
            # (nor read it: a client streaming on behind it must not cost us parsing).
            self.pending.append(None)
            self.closing = True
            self._pause_reading()
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
        if self.answered is not None:
            # Between requests `url` is the last one's: this refusal has no path of its own.
            self.answered(b"" if self.message_done else self.url.partition(b"?")[0], answer, self.began)
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

    def _count_open_read(self, size: int) -> None:
        """A read ended inside a request. httptools keeps an unfinished header line (or trailer)
        to itself, where on_header cannot count it, so count the reads instead: a request open
        across more bytes than a whole head and body (with room for chunk framing) is refused."""
        if self.open_read < 0:
            # The read it began in may hold earlier requests; one read is bounded by the transport.
            self.open_read = 0
            return
        self.open_read += size
        limits = self.limits
        if self.open_read > 2 * (limits.max_header_bytes + limits.max_body_bytes):
            self._fail(responses.BODY_TOO_LARGE_CLOSE if self.body_size else responses.HEAD_TOO_LARGE_CLOSE)

    def _check_interval(self) -> float:
        # A request that begins just after a check is caught at its own deadline by the next one.
        return min(self.limits.request_timeout_s, self.limits.keepalive_timeout_s)

    def _idle_check(self) -> None:
        """The one timer of a connection, re-armed from here, never per request. It ends a request
        that is too slow to arrive (408), a client that neither sends nor reads, and an idle
        keep-alive connection."""
        if self.transport.is_closing():
            self.idle_timer = None
            return
        limits = self.limits
        now = self.loop.time() + TIMER_SLACK_S
        next_check = now + self._check_interval()
        if not self.message_done and not self.closing and not self.reading_paused:
            # Not while our own pause holds the rest of the request back.
            deadline = self.request_start + limits.request_timeout_s
            if now >= deadline:
                self._fail(responses.REQUEST_TIMEOUT_CLOSE)
                if self.transport.is_closing():
                    self.idle_timer = None
                    return
            else:
                next_check = min(next_check, deadline)
        idle_deadline = self.last_active + limits.keepalive_timeout_s
        # Idle: no request open and nothing owed. Or a client that does not read what we wrote
        # (our reads are paused too): it has neither sent nor read for the keep-alive timeout.
        if (self.message_done and not self.pending) or self.writing_paused:
            if now >= idle_deadline:
                self.idle_timer = None
                self._close()
                return
            next_check = min(next_check, idle_deadline)
        self.idle_timer = self.loop.call_at(max(next_check, now), self._idle_check)

    def shutdown(self) -> None:
        """Graceful stop: close now if idle, else after the answers already owed."""
        if self.pending:
            self.closing = True
        else:
            self._close()


def _head_only(answer: Response) -> Response:
    """The same status line and headers (Content-Length included, as RFC 9110 allows), no body."""
    if type(answer) is bytes:
        return answer[:answer.find(b"\r\n\r\n") + 4]
    return _head_only_later(answer)


async def _head_only_later(answer: Awaitable[bytes]) -> bytes:
    return _head_only(await answer)  # an exception propagates to _resolve, which answers 500


async def _observed(answer: Awaitable[bytes], path: bytes, began: float,
                    answered: Callable[[bytes, bytes, float], None]) -> bytes:
    result = await _resolve(answer)
    answered(path, result, began)
    return result


async def _resolve(answer: Awaitable[bytes]) -> bytes:
    try:
        return await answer
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("asynchronous handler failed")
        return responses.INTERNAL_ERROR_CLOSE
