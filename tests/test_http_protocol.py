"""HttpProtocol driven byte by byte through a fake transport, then a few real-socket checks.

The fake transport records every write, close and pause/resume call. The test app answers with
bytes that name the request, so order and content can be checked exactly; paths under `/async/`
answer with a Future the test resolves itself, to check the order of pipelined async answers.
"""

from __future__ import annotations

import asyncio
import socket

import httptools
import orjson
import pytest
import uvloop
from fakes import FakeTransport

from rinha.http import responses
from rinha.http.protocol import MAX_PIPELINED, HttpProtocol, Limits, ServerState

# Raw requests

SIMPLE_GET = b"GET /hello?x=1 HTTP/1.1\r\nHost: example\r\n\r\n"
GET_CLOSE = b"GET /bye HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n"
GET_HTTP10 = b"GET /old HTTP/1.0\r\nHost: example\r\n\r\n"
POST_BODY = b'{"correlationId":"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3","amount":19.9}'
SIMPLE_POST = (
    b"POST /payments HTTP/1.1\r\nHost: example\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(POST_BODY), POST_BODY)
)
MALFORMED = b"THIS IS NOT HTTP\r\n\r\n"
BOOM_GET = b"GET /boom HTTP/1.1\r\nHost: example\r\n\r\n"
UPGRADE_GET = (
    b"GET /ws HTTP/1.1\r\nHost: example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
)


def get(path: bytes, *extra_headers: bytes) -> bytes:
    head = b"".join(h + b"\r\n" for h in extra_headers)
    return b"GET " + path + b" HTTP/1.1\r\nHost: example\r\n" + head + b"\r\n"


def post(path: bytes, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: example\r\nContent-Length: %d\r\n\r\n%s" % (path, len(body), body)


def echo_answer(method: bytes, path: bytes, query: bytes = b"", body: bytes = b"") -> bytes:
    """What EchoApp answers synchronously, so a test can predict the exact bytes."""
    return responses.json(200, {"method": method.decode(), "path": path.decode(),
                                "query": query.decode(), "body": body.decode("latin-1")})


def async_answer(path: bytes) -> bytes:
    return responses.json(201, {"async": path.decode()})


class EchoApp:
    """Echoes the request; `/boom` raises; `/async/...` answers with a Future the test resolves."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.futures: dict[bytes, asyncio.Future] = {}

    def handle(self, method, path, query, body, headers):
        self.calls.append((method, path, query, body, headers))
        if path == b"/boom":
            raise RuntimeError("handler bug")
        if path.startswith(b"/async/"):
            future = asyncio.get_running_loop().create_future()
            self.futures[path] = future
            return future
        return echo_answer(method, path, query, body)

    def paths(self) -> list[bytes]:
        return [call[1] for call in self.calls]


class Collected:
    """httptools response-parser callbacks: a list of (status, headers, body, keep_alive)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.responses: list[tuple[int, dict[bytes, bytes], bytes, bool]] = []
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []

    def on_message_begin(self) -> None:
        self._headers = {}
        self._body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.responses.append((self.parser.get_status_code(), self._headers, b"".join(self._body),
                               self.parser.should_keep_alive()))

    def feed(self, data: bytes) -> Collected:
        self.parser.feed_data(data)
        return self


def parse_responses(data: bytes) -> list[tuple[int, dict[bytes, bytes], bytes, bool]]:
    return Collected().feed(data).responses


def statuses(data: bytes) -> list[int]:
    return [r[0] for r in parse_responses(data)]


@pytest.fixture
def app() -> EchoApp:
    return EchoApp()


@pytest.fixture
def state() -> ServerState:
    return ServerState()


@pytest.fixture
async def connect(app, state):
    """Builds a connected protocol; every one is torn down with connection_lost at the end."""
    made: list[HttpProtocol] = []

    def make(limits: Limits = Limits()) -> tuple[HttpProtocol, FakeTransport]:
        protocol = HttpProtocol(app, limits, state)
        transport = FakeTransport()
        protocol.connection_made(transport)
        made.append(protocol)
        return protocol, transport

    yield make
    for protocol in made:
        if protocol in state.connections:  # not already lost in the test itself
            protocol.connection_lost(None)
    # Let cancelled answer tasks finish so none is destroyed while pending.
    if state.tasks:
        await asyncio.gather(*state.tasks, return_exceptions=True)


# Simple requests and keep-alive


async def test_simple_get_is_answered_with_one_write_and_kept_open(connect, app):
    protocol, transport = connect()
    protocol.data_received(SIMPLE_GET)
    assert transport.writes == [echo_answer(b"GET", b"/hello", b"x=1")]
    assert app.calls == [(b"GET", b"/hello", b"x=1", b"", None)]
    assert not transport.closed


async def test_post_delivers_body_method_and_empty_query(connect, app):
    protocol, transport = connect()
    protocol.data_received(SIMPLE_POST)
    assert app.calls == [(b"POST", b"/payments", b"", POST_BODY, None)]
    assert transport.writes == [echo_answer(b"POST", b"/payments", b"", POST_BODY)]
    assert not transport.closed


async def test_keep_alive_serves_requests_one_after_another(connect, app):
    protocol, transport = connect()
    protocol.data_received(SIMPLE_GET)
    assert len(transport.writes) == 1
    protocol.data_received(SIMPLE_POST)
    protocol.data_received(get(b"/third"))
    assert transport.writes == [
        echo_answer(b"GET", b"/hello", b"x=1"),
        echo_answer(b"POST", b"/payments", b"", POST_BODY),
        echo_answer(b"GET", b"/third"),
    ]
    assert app.paths() == [b"/hello", b"/payments", b"/third"]
    assert not transport.closed


async def test_connection_is_registered_in_state_until_lost(connect, state):
    protocol, transport = connect()
    assert protocol in state.connections
    protocol.connection_lost(None)
    assert protocol not in state.connections


# Pipelining and order


async def test_pipelined_burst_is_answered_in_order(connect, app):
    protocol, transport = connect()
    requests = [get(b"/r%d" % i) if i % 2 else post(b"/p%d" % i, b"body-%d" % i) for i in range(50)]
    protocol.data_received(b"".join(requests))
    expected = [echo_answer(b"GET", b"/r%d" % i) if i % 2 else
                echo_answer(b"POST", b"/p%d" % i, b"", b"body-%d" % i) for i in range(50)]
    assert transport.data == b"".join(expected)
    assert [r[2] for r in parse_responses(transport.data)] == [
        orjson.dumps(orjson.loads(e.split(b"\r\n\r\n", 1)[1])) for e in expected]
    assert len(app.calls) == 50
    assert not transport.closed


async def test_async_answer_then_sync_answer_are_written_in_request_order(connect, app):
    protocol, transport = connect()
    protocol.data_received(get(b"/async/1") + get(b"/sync"))
    # Both were handled, but the sync answer must wait behind the async one.
    assert app.paths() == [b"/async/1", b"/sync"]
    assert transport.writes == []

    app.futures[b"/async/1"].set_result(async_answer(b"/async/1"))
    await transport.until(lambda: len(transport.writes) >= 2)
    assert transport.data == async_answer(b"/async/1") + echo_answer(b"GET", b"/sync")
    assert not transport.closed


async def test_async_answers_resolved_out_of_order_are_written_in_order(connect, app):
    protocol, transport = connect()
    protocol.data_received(get(b"/async/a") + get(b"/async/b") + get(b"/sync") + get(b"/async/c"))
    task_a, task_b, sync_answer, task_c = protocol.pending
    assert sync_answer == echo_answer(b"GET", b"/sync")
    app.futures[b"/async/c"].set_result(async_answer(b"/async/c"))
    app.futures[b"/async/b"].set_result(async_answer(b"/async/b"))
    # Once these tasks are done their done-callbacks have run; they must still wait behind /async/a.
    await asyncio.gather(task_b, task_c)
    assert transport.writes == []

    app.futures[b"/async/a"].set_result(async_answer(b"/async/a"))
    await transport.until(lambda: len(transport.writes) >= 4)
    assert transport.data == (async_answer(b"/async/a") + async_answer(b"/async/b")
                              + echo_answer(b"GET", b"/sync") + async_answer(b"/async/c"))
    assert not protocol.pending
    assert not transport.closed


async def test_async_answer_alone_is_written_when_resolved(connect, app, state):
    protocol, transport = connect()
    protocol.data_received(get(b"/async/only"))
    assert len(state.tasks) == 1
    app.futures[b"/async/only"].set_result(async_answer(b"/async/only"))
    await transport.until(lambda: transport.writes)
    assert transport.writes == [async_answer(b"/async/only")]
    assert state.tasks == set()
    assert not transport.closed


async def test_sync_request_after_async_answer_was_written_takes_the_hot_path(connect, app):
    protocol, transport = connect()
    protocol.data_received(get(b"/async/1"))
    app.futures[b"/async/1"].set_result(async_answer(b"/async/1"))
    await transport.until(lambda: transport.writes)
    protocol.data_received(get(b"/next"))
    assert transport.writes == [async_answer(b"/async/1"), echo_answer(b"GET", b"/next")]


# Fragmentation


async def test_post_fed_one_byte_at_a_time(connect, app):
    protocol, transport = connect()
    stream = SIMPLE_POST + get(b"/after")
    for i in range(len(stream)):
        protocol.data_received(stream[i:i + 1])
    assert app.calls[0] == (b"POST", b"/payments", b"", POST_BODY, None)
    assert app.paths() == [b"/payments", b"/after"]
    assert transport.data == echo_answer(b"POST", b"/payments", b"", POST_BODY) + echo_answer(b"GET", b"/after")
    assert not transport.closed


async def test_chunked_post_body_is_joined(connect, app):
    protocol, transport = connect()
    protocol.data_received(
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert app.calls == [(b"POST", b"/c", b"", b"hello world", None)]
    assert transport.writes == [echo_answer(b"POST", b"/c", b"", b"hello world")]


# Limits


async def test_body_at_the_limit_is_accepted(connect, app):
    protocol, transport = connect(Limits(max_body_bytes=64))
    protocol.data_received(post(b"/p", b"x" * 64))
    assert app.calls == [(b"POST", b"/p", b"", b"x" * 64, None)]
    assert statuses(transport.data) == [200]
    assert not transport.closed


@pytest.mark.parametrize("fragmented", [False, True], ids=["whole", "byte-at-a-time"])
async def test_body_over_the_limit_gets_413_and_close(connect, app, fragmented):
    protocol, transport = connect(Limits(max_body_bytes=64))
    stream = post(b"/p", b"x" * 65) + get(b"/never")
    if fragmented:
        for i in range(len(stream)):
            if transport.closed:
                break
            protocol.data_received(stream[i:i + 1])
    else:
        protocol.data_received(stream)
    assert app.calls == []
    assert transport.writes == [responses.BODY_TOO_LARGE_CLOSE]
    assert transport.closed
    assert transport.writes_after_close == 0


async def test_chunked_body_over_the_limit_gets_413_and_close(connect, app):
    protocol, transport = connect(Limits(max_body_bytes=8))
    protocol.data_received(
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert app.calls == []
    assert transport.writes == [responses.BODY_TOO_LARGE_CLOSE]
    assert transport.closed


async def test_head_within_the_limit_is_accepted(connect, app):
    protocol, transport = connect(Limits(max_header_bytes=1024))
    protocol.data_received(get(b"/" + b"a" * 500, b"X-One: 1", b"X-Two: 2"))
    assert app.paths() == [b"/" + b"a" * 500]
    assert statuses(transport.data) == [200]


@pytest.mark.parametrize("request_bytes", [
    get(b"/" + b"a" * 2000),
    get(b"/", *(b"X-Header-%03d: %s" % (i, b"v" * 20) for i in range(100))),
    get(b"/", b"X-Big: " + b"v" * 2000),
], ids=["long-url", "many-headers", "one-long-header"])
async def test_head_over_the_limit_gets_431_and_close(connect, app, request_bytes):
    protocol, transport = connect(Limits(max_header_bytes=1024))
    protocol.data_received(request_bytes + get(b"/never"))
    assert app.calls == []
    assert transport.writes == [responses.HEAD_TOO_LARGE_CLOSE]
    assert transport.closed


@pytest.mark.parametrize("stream", [
    b"GET /" + b"a" * 64 * 1024,
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-Header-%05d: value\r\n" % i for i in range(3000)),
], ids=["endless-url", "endless-headers"])
async def test_head_over_the_limit_is_refused_before_the_head_ends(connect, app, stream):
    """A client that never finishes its head must not make us buffer it: 431 once over the limit."""
    protocol, transport = connect(Limits(max_header_bytes=1024))
    for i in range(0, len(stream), 512):
        if transport.closed:
            break
        protocol.data_received(stream[i:i + 512])
    assert app.calls == []
    assert transport.writes == [responses.HEAD_TOO_LARGE_CLOSE]
    assert transport.closed
    assert len(protocol.url) <= 1024 + 512


# Errors


async def test_malformed_request_gets_400_and_close(connect, app):
    protocol, transport = connect()
    protocol.data_received(MALFORMED)
    assert app.calls == []
    assert transport.writes == [responses.BAD_REQUEST_CLOSE]
    assert transport.closed
    assert parse_responses(transport.data)[0][1][b"connection"] == b"close"


async def test_garbage_after_a_good_request_answers_it_then_400_and_close(connect, app):
    protocol, transport = connect()
    protocol.data_received(SIMPLE_GET + b"\x00\x01garbage\r\n\r\n")
    assert transport.writes == [echo_answer(b"GET", b"/hello", b"x=1"), responses.BAD_REQUEST_CLOSE]
    assert transport.closed


async def test_garbage_behind_an_async_answer_waits_for_it(connect, app):
    protocol, transport = connect()
    protocol.data_received(get(b"/async/1") + MALFORMED)
    assert transport.writes == []
    assert not transport.closed
    app.futures[b"/async/1"].set_result(async_answer(b"/async/1"))
    await transport.until(lambda: transport.closed)
    assert transport.data == async_answer(b"/async/1") + responses.BAD_REQUEST_CLOSE
    assert transport.writes_after_close == 0


async def test_upgrade_request_gets_exactly_one_answer(connect, app):
    protocol, transport = connect()
    protocol.data_received(UPGRADE_GET)
    assert len(parse_responses(transport.data)) == 1, transport.data
    assert transport.closed


async def test_handler_exception_gets_500_and_close(connect, app):
    protocol, transport = connect()
    protocol.data_received(BOOM_GET + get(b"/never"))
    assert app.paths() == [b"/boom"]
    assert transport.writes == [responses.INTERNAL_ERROR_CLOSE]
    assert transport.closed
    assert parse_responses(transport.data)[0][:1] == (500,)


async def test_async_handler_exception_gets_500_and_close(connect, app):
    protocol, transport = connect()
    protocol.data_received(get(b"/async/1") + get(b"/after"))
    app.futures[b"/async/1"].set_exception(RuntimeError("async handler bug"))
    await transport.until(lambda: transport.closed)
    assert transport.writes == [responses.INTERNAL_ERROR_CLOSE]
    assert transport.writes_after_close == 0


async def test_handler_exception_behind_an_async_answer(connect, app):
    protocol, transport = connect()
    protocol.data_received(get(b"/async/1") + BOOM_GET)
    assert transport.writes == []
    app.futures[b"/async/1"].set_result(async_answer(b"/async/1"))
    await transport.until(lambda: transport.closed)
    assert transport.writes == [async_answer(b"/async/1"), responses.INTERNAL_ERROR_CLOSE]


# Connection: close and HTTP/1.0


@pytest.mark.parametrize("request_bytes", [GET_CLOSE, GET_HTTP10], ids=["connection-close", "http-1.0"])
async def test_non_keep_alive_request_closes_after_the_answer(connect, app, request_bytes):
    protocol, transport = connect()
    protocol.data_received(request_bytes)
    assert len(transport.writes) == 1
    assert parse_responses(transport.writes[0])[0][0] == 200
    assert transport.closed


@pytest.mark.parametrize("request_bytes", [GET_CLOSE, GET_HTTP10], ids=["connection-close", "http-1.0"])
async def test_nothing_is_written_after_a_non_keep_alive_answer(connect, app, request_bytes):
    """Bytes pipelined after a request we close on are ignored: no extra 400 after the answer."""
    protocol, transport = connect()
    protocol.data_received(request_bytes + get(b"/never"))
    assert len(app.calls) == 1
    assert statuses(transport.data) == [200]
    assert transport.closed


async def test_http10_keep_alive_stays_open(connect, app):
    protocol, transport = connect()
    protocol.data_received(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert statuses(transport.data) == [200]
    assert not transport.closed


async def test_connection_close_behind_an_async_answer_closes_after_both(connect, app):
    protocol, transport = connect()
    protocol.data_received(get(b"/async/1") + GET_CLOSE)
    assert transport.writes == []
    assert not transport.closed
    app.futures[b"/async/1"].set_result(async_answer(b"/async/1"))
    await transport.until(lambda: transport.closed)
    assert transport.data == async_answer(b"/async/1") + echo_answer(b"GET", b"/bye")
    assert transport.writes_after_close == 0


@pytest.mark.parametrize("last_served", [GET_CLOSE, BOOM_GET], ids=["connection-close", "handler-500"])
async def test_no_request_is_processed_after_the_last_one_served(connect, app, last_served):
    """RFC 9112 9.6: after a request we close on, later pipelined requests must not be processed
    (for POST /payments that would accept a payment whose answer is never sent)."""
    protocol, transport = connect()
    protocol.data_received(get(b"/async/1") + last_served + post(b"/payments", POST_BODY))
    app.futures[b"/async/1"].set_result(async_answer(b"/async/1"))
    await transport.until(lambda: transport.closed)
    assert b"/payments" not in app.paths()
    assert len(parse_responses(transport.data)) == 2


# Headers


async def test_keep_headers_delivers_lower_cased_names_per_request(connect, app):
    protocol, transport = connect(Limits(keep_headers=True))
    protocol.data_received(get(b"/one", b"X-Rinha-Token: 123", b"Content-TYPE: text/plain"))
    protocol.data_received(get(b"/two", b"Accept: */*"))
    assert app.calls[0][4] == {b"host": b"example", b"x-rinha-token": b"123", b"content-type": b"text/plain"}
    # The second request sees only its own headers.
    assert app.calls[1][4] == {b"host": b"example", b"accept": b"*/*"}


async def test_headers_are_none_unless_kept(connect, app):
    protocol, transport = connect(Limits(keep_headers=False))
    protocol.data_received(get(b"/one", b"X-Rinha-Token: 123"))
    assert app.calls[0][4] is None


# Flow control


async def test_pipelining_cap_pauses_reading_and_resumes_after_answers(connect, app):
    protocol, transport = connect()
    # One slow answer at the head, then sync ones queued behind it, one below the cap.
    protocol.data_received(get(b"/async/head") + b"".join(get(b"/q%d" % i) for i in range(MAX_PIPELINED - 2)))
    assert len(protocol.pending) == MAX_PIPELINED - 1
    assert transport.pause_calls == 0
    protocol.data_received(get(b"/q-last"))
    assert len(protocol.pending) == MAX_PIPELINED
    assert transport.reading_paused
    assert transport.writes == []

    app.futures[b"/async/head"].set_result(async_answer(b"/async/head"))
    await transport.until(lambda: not transport.reading_paused)
    assert transport.resume_calls == 1
    expected = (async_answer(b"/async/head") + b"".join(echo_answer(b"GET", b"/q%d" % i)
                                                         for i in range(MAX_PIPELINED - 2))
                + echo_answer(b"GET", b"/q-last"))
    assert transport.data == expected
    assert not protocol.pending
    assert not transport.closed


async def test_pause_writing_stops_reading_until_resume_writing(connect, app):
    protocol, transport = connect()
    protocol.pause_writing()
    assert transport.reading_paused
    # Answers flushed while the client is not reading must not resume reading.
    protocol.data_received(get(b"/async/1") + get(b"/x"))
    app.futures[b"/async/1"].set_result(async_answer(b"/async/1"))
    await transport.until(lambda: len(transport.writes) == 2)
    assert transport.reading_paused
    protocol.resume_writing()
    assert not transport.reading_paused
    assert (transport.pause_calls, transport.resume_calls) == (1, 1)


async def test_resume_writing_keeps_reading_paused_while_pipeline_is_full(connect, app):
    protocol, transport = connect()
    protocol.data_received(get(b"/async/head") + b"".join(get(b"/q%d" % i) for i in range(MAX_PIPELINED)))
    assert transport.reading_paused
    protocol.pause_writing()
    protocol.resume_writing()
    assert transport.reading_paused
    app.futures[b"/async/head"].set_result(async_answer(b"/async/head"))
    await transport.until(lambda: not transport.reading_paused)
    assert len(parse_responses(transport.data)) == MAX_PIPELINED + 1


# Half-close, shutdown, idle timeout, lost connections


async def test_eof_with_nothing_owed_lets_the_transport_close(connect):
    protocol, transport = connect()
    protocol.data_received(SIMPLE_GET)
    assert protocol.eof_received() is False


async def test_eof_with_answers_owed_writes_them_then_closes(connect, app):
    protocol, transport = connect()
    protocol.data_received(get(b"/async/1"))
    assert protocol.eof_received() is True
    assert not transport.closed
    app.futures[b"/async/1"].set_result(async_answer(b"/async/1"))
    await transport.until(lambda: transport.closed)
    assert transport.writes == [async_answer(b"/async/1")]


async def test_shutdown_closes_an_idle_connection_at_once(connect):
    protocol, transport = connect()
    protocol.data_received(SIMPLE_GET)
    protocol.shutdown()
    assert transport.closed


async def test_shutdown_waits_for_answers_owed(connect, app):
    protocol, transport = connect()
    protocol.data_received(get(b"/async/1"))
    protocol.shutdown()
    assert not transport.closed
    app.futures[b"/async/1"].set_result(async_answer(b"/async/1"))
    await transport.until(lambda: transport.closed)
    assert transport.writes == [async_answer(b"/async/1")]


async def test_idle_connection_is_closed_by_the_keepalive_timer(connect):
    protocol, transport = connect(Limits(keepalive_timeout_s=0.05))
    protocol.data_received(SIMPLE_GET)
    await transport.until(lambda: transport.closed, timeout=2.0)
    assert protocol.idle_timer is None


async def test_connection_lost_cancels_answers_in_flight(connect, app, state):
    protocol, transport = connect()
    protocol.data_received(get(b"/async/1") + get(b"/x"))
    task = next(iter(state.tasks))
    protocol.connection_lost(ConnectionResetError())
    assert not protocol.pending
    assert protocol not in state.connections
    assert task.cancelling()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert state.tasks == set()
    assert transport.writes == []


@pytest.mark.parametrize("behind", [GET_CLOSE, MALFORMED], ids=["connection-close", "malformed"])
async def test_connection_lost_with_a_close_marker_queued(connect, app, state, behind):
    """The close marker (None) queued behind an unanswered request is not a task to cancel."""
    protocol, transport = connect()
    protocol.data_received(get(b"/async/1") + behind)
    task = next(iter(state.tasks))
    protocol.connection_lost(None)
    assert not protocol.pending
    assert task.cancelling()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert transport.writes == []


# Real sockets: asyncio's own loop and uvloop


def request_reader(reader: asyncio.StreamReader):
    collected = Collected()

    async def read_responses(count: int) -> list:
        async with asyncio.timeout(5):
            while len(collected.responses) < count:
                data = await reader.read(65536)
                assert data, f"connection closed after {len(collected.responses)} responses"
                collected.feed(data)
        return collected.responses

    return read_responses


class SocketApp(EchoApp):
    """Like EchoApp, but `/async/...` answers with a coroutine that yields once (like the summary)."""

    def handle(self, method, path, query, body, headers):
        if path.startswith(b"/async/"):
            self.calls.append((method, path, query, body, headers))

            async def later() -> bytes:
                await asyncio.sleep(0)
                return async_answer(path)

            return later()
        return super().handle(method, path, query, body, headers)


LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run_with_server(loop_name: str, unix_path: str | None, scenario) -> None:
    """Starts a server on the given loop (Unix socket if a path is given, else TCP on port 0)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        app, state = SocketApp(), ServerState()
        limits = Limits()
        if unix_path:
            server = await loop.create_unix_server(lambda: HttpProtocol(app, limits, state), unix_path)
            opener = lambda: asyncio.open_unix_connection(unix_path)  # noqa: E731
        else:
            server = await loop.create_server(lambda: HttpProtocol(app, limits, state), "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            assert server.sockets[0].family == socket.AF_INET and port > 0
            opener = lambda: asyncio.open_connection("127.0.0.1", port)  # noqa: E731
        try:
            reader, writer = await opener()
            try:
                await scenario(reader, writer, app)
            finally:
                writer.close()
                await writer.wait_closed()
        finally:
            server.close()
            for connection in list(state.connections):
                connection.shutdown()
            await server.wait_closed()

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(main())


async def keep_alive_scenario(reader, writer, app) -> None:
    read = request_reader(reader)
    writer.write(SIMPLE_GET)
    responses_so_far = await read(1)
    assert responses_so_far[0][0] == 200 and responses_so_far[0][3] is True
    writer.write(SIMPLE_POST)
    responses_so_far = await read(2)
    assert orjson.loads(responses_so_far[1][2])["body"] == POST_BODY.decode()
    assert app.paths() == [b"/hello", b"/payments"]


async def pipelining_scenario(reader, writer, app) -> None:
    read = request_reader(reader)
    paths = [b"/async/%d" % i if i % 3 == 0 else b"/s%d" % i for i in range(40)]
    writer.write(b"".join(get(p) for p in paths) + GET_CLOSE)
    answers = await read(len(paths) + 1)
    bodies = [orjson.loads(a[2]) for a in answers]
    assert [b.get("async") or b["path"] for b in bodies] == [p.decode() for p in paths] + ["/bye"]
    assert [a[0] for a in answers] == [201 if i % 3 == 0 else 200 for i in range(40)] + [200]
    async with asyncio.timeout(5):
        assert await reader.read() == b""  # closed after the Connection: close answer


@pytest.fixture
def short_socket_path(tmp_path) -> str:
    path = str(tmp_path / "s.sock")
    assert len(path) < 100, path
    return path


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("scenario", [keep_alive_scenario, pipelining_scenario], ids=["keepalive", "pipelined"])
def test_real_tcp_socket(loop_name, scenario):
    run_with_server(loop_name, None, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("scenario", [keep_alive_scenario, pipelining_scenario], ids=["keepalive", "pipelined"])
def test_real_unix_socket(loop_name, scenario, short_socket_path):
    run_with_server(loop_name, short_socket_path, scenario)
