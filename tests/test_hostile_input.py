"""Hostile input: HttpProtocol under fuzzing, oversized and endless requests, slow clients,
connection floods and pipelined floods.

The fuzz tests drive the real API app (ApiApp over a PaymentBuffer with no link, so add() only
holds payments, and a worker link that is always down) through a fake transport, and compare what
the protocol did with what an independent httptools parser finds in the whole stream. The other
tests pin each limit in Limits, first through the fake transport, then over real sockets on both
event loops. This file keeps its own fake transport (with a write buffer that calls pause_writing)
so it does not depend on another test module's helpers.
"""

from __future__ import annotations

import asyncio
import collections
import time
import tracemalloc
from decimal import Decimal

import httptools
import pytest
import uvloop
from fakes import FakeTransport
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rinha.api.buffer import PaymentBuffer
from rinha.api.routes import ACCEPTED, ApiApp
from rinha.api.validation import InvalidInput, parse_payment
from rinha.http import responses
from rinha.http.protocol import MAX_PIPELINED, HttpProtocol, Limits, ServerState
from rinha.http.responses import REQUEST_TIMEOUT_CLOSE, TOO_MANY_CONNECTIONS_CLOSE
from rinha.link.client import LinkDown

# Raw requests

POST_BODY = b'{"correlationId":"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3","amount":19.9}'
INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1", b"\xf0\x90\x28\xbc", b"\xed\xa0\x80"]
REFUSALS = {responses.BAD_REQUEST_CLOSE, responses.HEAD_TOO_LARGE_CLOSE, responses.BODY_TOO_LARGE_CLOSE,
            REQUEST_TIMEOUT_CLOSE}


def get(path: bytes, *extra_headers: bytes) -> bytes:
    head = b"".join(h + b"\r\n" for h in extra_headers)
    return b"GET " + path + b" HTTP/1.1\r\nHost: example\r\n" + head + b"\r\n"


def post(path: bytes, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: example\r\nContent-Length: %d\r\n\r\n%s" % (path, len(body), body)


def chunked_head(path: bytes = b"/payments") -> bytes:
    return b"POST " + path + b" HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked\r\n\r\n"


def payment(n: int) -> bytes:
    return post(b"/payments", b'{"correlationId":"00000000-0000-4000-8000-%012d","amount":19.9}' % n)


# Reading what was written


class Responses:
    """httptools response-parser callbacks: (status, headers, body) of each complete response."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[tuple[int, dict[bytes, bytes], bytes]] = []
        self.open = False
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []

    def on_message_begin(self) -> None:
        self.open = True
        self._headers = {}
        self._body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.open = False
        self.done.append((self.parser.get_status_code(), self._headers, b"".join(self._body)))


def parse_responses(data: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    collected = Responses()
    collected.parser.feed_data(data)
    return collected.done


def statuses(data: bytes) -> list[int]:
    return [r[0] for r in parse_responses(data)]


def assert_one_response(write: bytes, *, head_only: bool = False) -> None:
    """A write is exactly one well-formed HTTP/1.1 response: status line, Content-Length, body."""
    assert write.startswith(b"HTTP/1.1 "), write[:40]
    if head_only:
        # The answer to HEAD: headers only, but they still say how long the body would be.
        head, sep, rest = write.partition(b"\r\n\r\n")
        assert sep and rest == b"", write
        write = head + sep + b"x" * int(parse_head(head + sep)[b"content-length"])
    collected = Responses()
    collected.parser.feed_data(write)
    assert len(collected.done) == 1 and not collected.open, write
    status, headers, body = collected.done[0]
    assert 100 <= status < 600
    assert int(headers[b"content-length"]) == len(body)


def parse_head(head: bytes) -> dict[bytes, bytes]:
    lines = head.split(b"\r\n")[1:]
    return {name.strip().lower(): value.strip() for name, _, value in (line.partition(b":") for line in lines if line)}


# Transports and apps


class DownLink:
    """The worker link, never up: the summary and the purge answer 503 at once."""

    connected = False

    async def request(self, payload: dict, timeout_s: float) -> dict:
        raise LinkDown("no worker in this test")


class RecordingApp:
    """The real ApiApp, with every call it gets recorded."""

    def __init__(self, app: ApiApp) -> None:
        self.app = app
        self.calls: list[tuple[bytes, bytes, bytes, bytes]] = []

    def handle(self, method, path, query, body, headers):
        self.calls.append((method, path, query, body))
        return self.app.handle(method, path, query, body, headers)


def api_app() -> tuple[ApiApp, PaymentBuffer]:
    # A long flush interval: the buffer's one timer is cancelled by flush() at the end of a run.
    buffer = PaymentBuffer(flush_interval_s=60.0, batch_max=1 << 20, capacity=1 << 20)
    return ApiApp(buffer, DownLink(), summary_timeout_s=1.0), buffer


class EchoApp:
    """Echoes the path; `/async/...` answers with a Future the test resolves."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.futures: dict[bytes, asyncio.Future] = {}

    def handle(self, method, path, query, body, headers):
        self.calls.append((method, path, query, body))
        if path.startswith(b"/async/"):
            self.futures[path] = asyncio.get_running_loop().create_future()
            return self.futures[path]
        return echo(path)


def echo(path: bytes) -> bytes:
    return responses.json(200, {"path": path.decode("latin-1")})


@pytest.fixture
def app() -> EchoApp:
    return EchoApp()


@pytest.fixture
def state() -> ServerState:
    return ServerState()


@pytest.fixture
async def connect(app, state):
    """Builds connected protocols; each is torn down with connection_lost at the end."""
    made: list[HttpProtocol] = []

    def make(limits: Limits = Limits(), transport: FakeTransport | None = None, with_app=None):
        transport = transport or FakeTransport()
        protocol = HttpProtocol(with_app or app, limits, state)
        transport.protocol = protocol
        protocol.connection_made(transport)
        made.append(protocol)
        return protocol, transport

    yield make
    for protocol in made:
        protocol.connection_lost(None)
    if state.tasks:
        await asyncio.gather(*state.tasks, return_exceptions=True)


# Fuzzing: the protocol against an independent parse of the same stream

FUZZ_LIMITS = Limits(max_body_bytes=256, max_header_bytes=512)
FUZZ = settings(max_examples=500, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MIN_EXAMPLES = 400  # hypothesis may stop early only if it runs out of distinct inputs
EXAMPLES: collections.Counter = collections.Counter()


class Reference:
    """Parses the whole stream at once: the complete requests in it, up to the first error, and
    up to the first one that ends the connection (no keep-alive, or an upgrade)."""

    def __init__(self, stream: bytes) -> None:
        self.requests: list[tuple[bytes, bytes, bytes, bytes]] = []
        self.parser = httptools.HttpRequestParser(self)
        self.ended = False
        self._url = b""
        self._body: list[bytes] = []
        try:
            self.parser.feed_data(stream)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            pass

    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self.ended:
            return
        path, _, query = self._url.partition(b"?")
        self.requests.append((self.parser.get_method(), path, query, b"".join(self._body)))
        self.ended = not self.parser.should_keep_alive() or self.parser.should_upgrade()


class Outcome:
    __slots__ = ("writes", "calls", "held", "closed", "writes_after_close", "pending_left")


async def serve(pieces: list[bytes], limits: Limits = FUZZ_LIMITS, feed_after_close: bool = False) -> Outcome:
    """Feeds `pieces` to one connection as a client would: nothing once closed, nothing while paused."""
    api, buffer = api_app()
    app = RecordingApp(api)
    state = ServerState()
    protocol = HttpProtocol(app, limits, state)
    transport = FakeTransport()
    transport.protocol = protocol
    protocol.connection_made(transport)
    outcome = Outcome()
    try:
        for piece in pieces:
            if transport.reading_paused:
                await transport.until(lambda: transport.closed or not transport.reading_paused)
            if transport.closed:
                break
            protocol.data_received(piece)  # property: never raises
        # Let asynchronous answers (the summary, the purge) be written.
        await transport.until(lambda: transport.closed or not protocol.pending)
        outcome.pending_left = len(protocol.pending)
        if feed_after_close and transport.closed:
            # Transports never do this, but a protocol bug must not turn it into a crash or a write.
            calls = len(app.calls)
            for piece in pieces:
                protocol.data_received(piece)
            assert len(app.calls) == calls
    finally:
        protocol.connection_lost(None)
        if state.tasks:
            await asyncio.gather(*state.tasks, return_exceptions=True)
        buffer.flush()  # cancels its flush timer; with no link it sends nothing
    outcome.writes = transport.writes
    outcome.calls = app.calls
    outcome.held = buffer.held
    outcome.closed = transport.closed
    outcome.writes_after_close = transport.writes_after_close
    return outcome


async def expected_answers(calls) -> list[bytes]:
    """What a fresh ApiApp answers to the same calls, in order (HEAD answers without a body)."""
    twin, buffer = api_app()
    answers = []
    for method, path, query, body in calls:
        try:
            answer = twin.handle(method, path, query, body, None)
            if type(answer) is not bytes:
                answer = await answer
        except Exception:
            answer = responses.INTERNAL_ERROR_CLOSE
        if method == b"HEAD":
            answer = answer[:answer.find(b"\r\n\r\n") + 4]
        answers.append(answer)
    buffer.flush()
    return answers


def valid_payment(body: bytes) -> bool:
    try:
        parse_payment(body)
    except InvalidInput:
        return False
    return True


def check(stream: bytes, outcome: Outcome, limits: Limits, answers: list[bytes]) -> None:
    writes, calls = outcome.writes, outcome.calls
    reference = Reference(stream)
    served = reference.requests
    # The app saw only complete requests, exactly the ones in the stream, in order, within limits.
    assert calls == served[:len(calls)]
    for method, path, query, body in calls:
        assert len(body) <= limits.max_body_bytes
        assert len(path) + len(query) <= limits.max_header_bytes
    # Every write is one whole, well-formed HTTP/1.1 response; each call got its own answer, in order.
    for i, write in enumerate(writes):
        assert_one_response(write, head_only=i < len(calls) and calls[i][0] == b"HEAD")
    assert writes[:len(calls)] == answers
    assert outcome.writes_after_close == 0
    # Nothing crashed: no 500 from the app or from the protocol.
    assert not any(w.startswith(b"HTTP/1.1 500 ") for w in writes)
    # At most one answer more than calls: a refusal, the last write, and then the connection is closed.
    extra = writes[len(calls):]
    assert len(extra) <= 1
    if extra:
        assert extra[0] in REFUSALS and outcome.closed
    # A write that says close is the last one.
    for write in writes[:-1]:
        assert b"\r\nconnection: close\r\n" not in write.partition(b"\r\n\r\n")[0] + b"\r\n"
    if not extra:
        # Nothing refused: every complete request was served, and all answers were written.
        assert len(calls) == len(served)
        assert outcome.closed or outcome.pending_left == 0
    if reference.ended and len(calls) == len(served):
        # The last request served ended the connection (no keep-alive, or an upgrade): it was
        # closed right after that answer, and whatever came behind got no answer at all.
        assert outcome.closed and not extra
    # Payments were accepted exactly for the valid bodies, and each was answered 202.
    accepted = sum(1 for m, p, q, b in calls if m == b"POST" and p == b"/payments" and valid_payment(b))
    assert outcome.held == accepted == writes.count(ACCEPTED)


def run_case(runner: asyncio.Runner, name: str, stream: bytes, cuts: list[int],
             limits: Limits = FUZZ_LIMITS, feed_after_close: bool = False) -> Outcome:
    EXAMPLES[name] += 1
    pieces = split(stream, cuts)

    async def case() -> Outcome:
        outcome = await serve(pieces, limits, feed_after_close)
        check(stream, outcome, limits, await expected_answers(outcome.calls))
        return outcome

    return runner.run(case())


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(stream)]
    return [stream[a:b] for a, b in zip(points, points[1:]) if b > a]


# Strategies: requests a client might send, and what a hostile one sends instead

ROUTE_PATHS = [b"/payments", b"/payments-summary", b"/purge-payments", b"/healthcheck"]
OTHER_PATHS = [b"/", b"/payments/", b"/PAYMENTS", b"/payments%20", b"//payments", b"/payments/../payments", b"*"]
METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH"]
QUERIES = [b"", b"from=2025-07-15T12:34:56.000Z&to=2025-07-15T12:35:56.000Z", b"from=2025-07-15T12:34:56.000Z",
           b"to=not-a-date", b"from=2025-07-16T00:00:00Z&to=2025-07-15T00:00:00Z", b"from=%ff", b"a=1&&=&to="]
BAD_BODIES = [b"", b"{}", b"[]", b"null", b"{", b'{"correlationId":1,"amount":1}', b'{"amount":"19.90"}',
              b'{"correlationId":"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3","amount":19.999}',
              b'{"correlationId":"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3","amount":-1}',
              b'{"correlationId":"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3","amount":1e400}',
              b'{"correlationId":"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3","amount":123456789012345678901234567890}',
              b'{"correlationId":"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3","amount":true}']
GARBAGE = [b"\r\n", b"\r\n\r\n", b"GET / HTTP/1.1\r\n", b"GET /x HTTP/9.9\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
           b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"GET /" + b"a" * 600 + b" HTTP/1.1\r\n\r\n",
           b"CONNECT example:443 HTTP/1.1\r\nHost: example:443\r\n\r\n",
           b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
           b"GET / HTTP/1.1\r\n Folded: header\r\n\r\n", b"GET / HTTP/1.1\nHost: bare-lf\n\n", b"\x00" * 8]

amounts = st.one_of(st.sampled_from([b"19.9", b"19.90", b"0.01", b"1000000000", b"1", b"0.1"]),
                    st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1000000"), places=2)
                    .map(lambda d: str(d).encode()))
valid_bodies = st.builds(lambda u, a: b'{"correlationId":"%s","amount":%s}' % (str(u).encode(), a), st.uuids(), amounts)


@st.composite
def with_invalid_utf8(draw, base: st.SearchStrategy) -> bytes:
    data = draw(base)
    at = draw(st.integers(0, len(data)))
    return data[:at] + draw(st.sampled_from(INVALID_UTF8)) + data[at:]


bodies = st.one_of(valid_bodies, valid_bodies, st.sampled_from(BAD_BODIES), with_invalid_utf8(valid_bodies),
                   st.binary(max_size=80), st.binary(min_size=200, max_size=400))
header_values = st.one_of(st.sampled_from([b"x", b"application/json", b"*/*", b"gzip, br", b"caf\xc3\xa9"]),
                          st.sampled_from(INVALID_UTF8),
                          st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
                          st.just(b"v" * 520))
header_names = st.sampled_from([b"Content-Type", b"Accept", b"User-Agent", b"X-Junk", b"Expect", b"Cookie"])
headers = st.lists(st.tuples(header_names, header_values), max_size=4)


def mostly(draw, common: st.SearchStrategy, rare: st.SearchStrategy):
    """One draw in ten from `rare`: hostile enough, yet most requests still get past the parser."""
    return draw(rare if draw(st.integers(0, 9)) == 0 else common)


@st.composite
def chunked(draw, body: bytes, hostile: bool) -> bytes:
    cuts = sorted(set(draw(st.lists(st.integers(1, max(len(body), 1)), max_size=4))))
    points = [0, *[c for c in cuts if c < len(body)], len(body)]
    out = []
    for a, b in zip(points, points[1:]):
        if b > a:
            extension = draw(st.sampled_from([b"", b"", b";name=value", b";" + b"e" * 40]))
            out.append(b"%x%s\r\n%s\r\n" % (b - a, extension, body[a:b]))
    trailers = [b"", b"", b"X-Trailer: 1\r\n"] + ([b"X-Trailer: " + b"t" * 600 + b"\r\n"] if hostile else [])
    trailer = draw(st.sampled_from(trailers))
    return b"".join(out) + b"0\r\n" + trailer + b"\r\n"


@st.composite
def requests(draw, hostile: bool = True) -> bytes:
    """One request. `hostile=False` keeps to requests the API must serve: known routes, within limits."""
    if hostile:
        method = mostly(draw, st.sampled_from([b"GET", b"POST"]), st.sampled_from(METHODS))
        path = mostly(draw, st.sampled_from(ROUTE_PATHS),
                      st.one_of(st.sampled_from(OTHER_PATHS), with_invalid_utf8(st.sampled_from(ROUTE_PATHS))))
        query = mostly(draw, st.sampled_from(QUERIES[:1] * 3 + QUERIES), with_invalid_utf8(st.sampled_from(QUERIES)))
        version = mostly(draw, st.just(b"HTTP/1.1"), st.just(b"HTTP/1.0"))
        connection = mostly(draw, st.just(None), st.sampled_from([b"close", b"keep-alive", b"Upgrade"]))
        framing = draw(st.sampled_from(["length"] * 3 + ["chunked"] * 2 + ["none", "lie", "huge", "both"]))
        body = draw(bodies)
        extra = mostly(draw, headers, st.lists(st.tuples(st.sampled_from([b"X-\xff", b"Transfer-Encoding", b"X Y"]),
                                                         header_values), min_size=1, max_size=2))
    else:
        method, path = draw(st.sampled_from([(b"POST", b"/payments"), (b"POST", b"/payments"),
                                             (b"GET", b"/payments-summary"), (b"GET", b"/healthcheck"),
                                             (b"POST", b"/purge-payments"), (b"HEAD", b"/healthcheck")]))
        query = draw(st.sampled_from(QUERIES)) if path == b"/payments-summary" else b""
        version, connection, extra = b"HTTP/1.1", None, []
        framing = draw(st.sampled_from(["length", "length", "chunked"]))
        body = draw(valid_bodies) if path == b"/payments" else b""
    head = [method + b" " + path + (b"?" + query if query else b"") + b" " + version, b"Host: api"]
    head += [name + b": " + value for name, value in extra]
    if connection == b"Upgrade":
        head += [b"Connection: Upgrade", b"Upgrade: websocket"]
    elif connection:
        head.append(b"Connection: " + connection)
    if framing == "length":
        head.append(b"Content-Length: %d" % len(body))
    elif framing == "lie":
        head.append(b"Content-Length: %d" % max(0, len(body) + draw(st.integers(-5, 5))))
    elif framing == "huge":
        head.append(b"Content-Length: %d" % draw(st.sampled_from([257, 4097, 10 ** 9, 10 ** 18, 2 ** 64 - 1])))
        body = body[:draw(st.integers(0, len(body)))]
    elif framing == "both":
        head += [b"Content-Length: %d" % len(body), b"Transfer-Encoding: chunked"]
    if framing == "chunked":
        head.append(b"Transfer-Encoding: chunked")
        body = draw(chunked(body, hostile))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@st.composite
def with_cuts(draw, streams: st.SearchStrategy) -> tuple[bytes, list[int]]:
    stream = draw(streams)
    if len(stream) < 400 and draw(st.integers(0, 9)) == 0:
        return stream, list(range(1, len(stream)))  # byte at a time
    return stream, draw(st.lists(st.integers(0, len(stream)), max_size=10))


@st.composite
def mutated(draw) -> bytes:
    stream = bytearray(draw(st.lists(requests(hostile=False), min_size=1, max_size=4).map(b"".join)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(stream) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip":
            stream[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            stream[at:at] = draw(st.one_of(st.binary(min_size=1, max_size=3),
                                           st.sampled_from(INVALID_UTF8 + [b"\r\n"])))
        else:
            del stream[at:at + draw(st.integers(1, 3))]
    return bytes(stream)


valid_pipelines = st.lists(requests(hostile=False), min_size=1, max_size=6)
mixed_pipelines = st.lists(st.one_of(requests(), requests(), requests(hostile=False), st.sampled_from(GARBAGE),
                                     st.binary(max_size=40)), min_size=1, max_size=6).map(b"".join)


@pytest.fixture(scope="module")
def runner():
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
        yield loop_runner


@pytest.fixture(scope="module", autouse=True)
def report_examples(pytestconfig):
    yield
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if EXAMPLES and reporter is not None and capture is not None:
        detail = ", ".join(f"{name} {count}" for name, count in EXAMPLES.items())
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nhostile-input fuzz: {sum(EXAMPLES.values())} inputs tried ({detail})")


@FUZZ
@given(case=with_cuts(st.one_of(st.binary(max_size=600), st.lists(st.sampled_from(GARBAGE), max_size=4).map(b"".join))),
       feed_after_close=st.booleans())
def fuzz_arbitrary_bytes(runner, case, feed_after_close):
    run_case(runner, "arbitrary bytes", *case, feed_after_close=feed_after_close)


@FUZZ
@given(requests_and_cuts=st.data())
def fuzz_valid_pipelines(runner, requests_and_cuts):
    sent = requests_and_cuts.draw(valid_pipelines)
    stream = b"".join(sent)
    cuts = requests_and_cuts.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    outcome = run_case(runner, "valid pipelines", stream, cuts)
    # Requests a client may send are all served, however the bytes arrive.
    assert len(outcome.calls) == len(sent) == len(outcome.writes)
    assert not outcome.closed


@FUZZ
@given(case=with_cuts(mixed_pipelines))
def fuzz_mixed_pipelines(runner, case):
    run_case(runner, "mixed pipelines", *case)


@FUZZ
@given(case=with_cuts(mutated()))
def fuzz_mutated_requests(runner, case):
    run_case(runner, "mutated requests", *case)


def test_fuzz_arbitrary_bytes_and_splits(runner):
    fuzz_arbitrary_bytes(runner)
    assert EXAMPLES["arbitrary bytes"] >= MIN_EXAMPLES


def test_fuzz_valid_pipelines_are_served_however_split(runner):
    fuzz_valid_pipelines(runner)
    assert EXAMPLES["valid pipelines"] >= MIN_EXAMPLES


def test_fuzz_pipelines_of_valid_invalid_and_garbage(runner):
    fuzz_mixed_pipelines(runner)
    assert EXAMPLES["mixed pipelines"] >= MIN_EXAMPLES


def test_fuzz_mutated_requests(runner):
    fuzz_mutated_requests(runner)
    assert EXAMPLES["mutated requests"] >= MIN_EXAMPLES


def test_fuzz_oracle_catches_a_payment_accepted_without_an_answer(runner):
    """The checker itself: a stream whose outcome breaks a property must fail it."""
    stream = payment(1)
    outcome = runner.run(serve([stream]))
    outcome.held += 1  # as if a payment were held that no 202 answered
    with pytest.raises(AssertionError):
        runner.run(_check_async(stream, outcome))


async def _check_async(stream: bytes, outcome: Outcome) -> None:
    check(stream, outcome, FUZZ_LIMITS, await expected_answers(outcome.calls))


# Oversized heads and bodies


@pytest.mark.parametrize("declared", [65, 10 ** 12, 2 ** 64 - 1])
async def test_declared_body_over_the_limit_gets_413_before_any_body_byte(connect, app, declared):
    protocol, transport = connect(Limits(max_body_bytes=64))
    protocol.data_received(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % declared)
    assert transport.writes == [responses.BODY_TOO_LARGE_CLOSE]
    assert transport.closed
    assert app.calls == []


async def test_declared_body_over_the_limit_is_refused_after_answers_owed(connect, app):
    protocol, transport = connect(Limits(max_body_bytes=64))
    protocol.data_received(get(b"/async/1") + b"POST /p HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n")
    assert transport.writes == [] and transport.reading_paused
    app.futures[b"/async/1"].set_result(echo(b"/async/1"))
    await transport.until(lambda: transport.closed)
    assert transport.writes == [echo(b"/async/1"), responses.BODY_TOO_LARGE_CLOSE]
    assert [c[1] for c in app.calls] == [b"/async/1"]


async def test_body_at_the_limit_is_still_served(connect, app):
    protocol, transport = connect(Limits(max_body_bytes=64))
    protocol.data_received(b"POST /p HTTP/1.1\r\nContent-Length: 64\r\n\r\n")
    protocol.data_received(b"x" * 64)
    assert app.calls == [(b"POST", b"/p", b"", b"x" * 64)]
    assert not transport.closed


async def test_endless_chunked_body_is_refused_once_over_the_limit(connect, app):
    protocol, transport = connect(Limits(max_body_bytes=1000))
    protocol.data_received(chunked_head())
    sent = 0
    while not transport.closed:
        protocol.data_received(b"64\r\n" + b"c" * 100 + b"\r\n")
        sent += 100
        assert sent <= 1100, "still reading a chunked body past the limit"
    assert transport.writes == [responses.BODY_TOO_LARGE_CLOSE]
    assert app.calls == []


async def test_one_huge_chunk_is_refused_before_it_ends(connect, app):
    protocol, transport = connect(Limits(max_body_bytes=1000))
    protocol.data_received(chunked_head() + b"FFFFFFFFFFFF\r\n")
    protocol.data_received(b"c" * 1000)
    assert not transport.closed
    protocol.data_received(b"c")
    assert transport.writes == [responses.BODY_TOO_LARGE_CLOSE]
    assert transport.closed


@pytest.mark.parametrize("start, filler", [
    (b"GET / HTTP/1.1\r\nX-Endless: ", b"v"),
    (b"GET / HTTP/1.1\r\nX-Endless-Name-", b"n"),
    (chunked_head() + b"5\r\nhello\r\n0\r\nX-Endless-Trailer: ", b"t"),
], ids=["header-value", "header-name", "trailer"])
async def test_unfinished_header_line_is_refused_with_memory_bounded(connect, app, start, filler):
    """httptools keeps an unfinished header line to itself (on_header comes only once it ends), so
    these bytes are counted per read: refused after a bounded amount, not held until memory runs out."""
    limits = Limits(max_header_bytes=1024, max_body_bytes=512)
    protocol, transport = connect(limits)
    protocol.data_received(start)
    read = filler * 4096
    tracemalloc.start()
    try:
        sent = 0
        while not transport.closed and sent < 4 * 1024 * 1024:
            protocol.data_received(read)
            sent += len(read)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert transport.closed, "4 MiB of one header line were accepted"
    assert transport.writes in ([responses.HEAD_TOO_LARGE_CLOSE], [responses.BODY_TOO_LARGE_CLOSE])
    assert sent <= 2 * (limits.max_header_bytes + limits.max_body_bytes) + 2 * len(read)
    assert peak < 256 * 1024
    assert app.calls == []


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_request_at_the_limits_fed_byte_by_byte_is_served(connect, app, framing):
    """The per-read count does not refuse what the exact limits allow, however slowly it arrives."""
    limits = Limits(max_header_bytes=1024, max_body_bytes=512)
    protocol, transport = connect(limits)
    body = bytes(97 + i % 26 for i in range(512))
    head = b"POST /p HTTP/1.1\r\nX-Big: " + b"h" * 960 + b"\r\n"
    if framing == "chunked":
        request = head + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(
            b"10\r\n" + body[i:i + 16] + b"\r\n" for i in range(0, 512, 16)) + b"0\r\n\r\n"
    else:
        request = head + b"Content-Length: 512\r\n\r\n" + body
    for i in range(len(request)):
        protocol.data_received(request[i:i + 1])
    assert app.calls == [(b"POST", b"/p", b"", body)]
    assert statuses(transport.data) == [200]
    assert not transport.closed


async def test_pathological_chunk_framing_is_refused(connect, app):
    """One-byte chunks with long extensions: 31 bytes on the wire per body byte. Past twice the
    limits on the wire the request is refused, even though its body alone would fit."""
    limits = Limits(max_header_bytes=1024, max_body_bytes=512)
    protocol, transport = connect(limits)
    protocol.data_received(chunked_head(b"/p"))
    chunk = b"1;ext=" + b"e" * 20 + b"\r\nx\r\n"
    sent = 0
    while not transport.closed:
        protocol.data_received(chunk)
        sent += len(chunk)
    assert transport.writes == [responses.BODY_TOO_LARGE_CLOSE]
    assert sent <= 2 * (limits.max_header_bytes + limits.max_body_bytes) + len(chunk)
    assert app.calls == []


# Slow clients (slowloris) and clients that do not read


async def test_request_not_complete_in_time_gets_408_and_close(connect, app):
    protocol, transport = connect(Limits(request_timeout_s=0.1))
    loop = asyncio.get_running_loop()
    started = loop.time()
    protocol.data_received(b"POST /payments HTTP/1.1\r\nHost: x\r\nContent-Length: 70\r\n\r\n{")
    await transport.until(lambda: transport.closed)
    assert 0.1 - 0.01 <= loop.time() - started < 1.0
    assert transport.writes == [REQUEST_TIMEOUT_CLOSE]
    assert app.calls == []
    assert protocol.idle_timer is None


async def test_trickled_bytes_do_not_extend_the_request_deadline(connect, app):
    protocol, transport = connect(Limits(request_timeout_s=0.15))
    loop = asyncio.get_running_loop()
    started = loop.time()
    trickle = iter(b"GET /slow HTTP/1.1\r\n" + b"X-Slow: " + b"s" * 1000)
    while not transport.closed:
        protocol.data_received(bytes([next(trickle)]))
        await asyncio.sleep(0.01)
    assert loop.time() - started < 1.0
    assert transport.writes == [REQUEST_TIMEOUT_CLOSE]


async def test_408_is_written_after_the_answers_owed_before_it(connect, app):
    protocol, transport = connect(Limits(request_timeout_s=0.05))
    protocol.data_received(get(b"/async/1") + b"GET /late HTTP/1.1\r\nHost")
    await asyncio.sleep(0.2)
    assert transport.writes == [] and not transport.closed
    app.futures[b"/async/1"].set_result(echo(b"/async/1"))
    await transport.until(lambda: transport.closed)
    assert transport.writes == [echo(b"/async/1"), REQUEST_TIMEOUT_CLOSE]
    assert [c[1] for c in app.calls] == [b"/async/1"]


async def test_complete_requests_are_never_timed_out(connect, app):
    protocol, transport = connect(Limits(request_timeout_s=0.05))
    for i in range(10):
        protocol.data_received(get(b"/r%d" % i))
        await asyncio.sleep(0.02)
    assert statuses(transport.data) == [200] * 10
    assert not transport.closed


async def test_idle_connection_is_closed_without_a_408(connect, app):
    """No request open: the keep-alive timeout closes silently (a 408 would be read by the client
    as the answer to its next request)."""
    protocol, transport = connect(Limits(request_timeout_s=0.03, keepalive_timeout_s=0.2))
    protocol.data_received(get(b"/one"))
    await transport.until(lambda: transport.closed)
    assert transport.writes == [echo(b"/one")]


async def test_no_timer_is_armed_per_request(connect, app):
    protocol, transport = connect(Limits(request_timeout_s=5.0))
    timer = protocol.idle_timer
    for i in range(200):
        protocol.data_received(get(b"/r%d" % i))
    assert protocol.idle_timer is timer
    assert len(transport.writes) == 200


async def test_client_that_stops_reading_is_closed_after_the_keepalive_timeout(connect, app):
    protocol, transport = connect(Limits(keepalive_timeout_s=0.1, request_timeout_s=0.05))
    protocol.data_received(get(b"/async/1") + b"GET /part")
    protocol.pause_writing()  # its socket buffer is full: it reads nothing of what we wrote
    await transport.until(lambda: transport.closed)
    assert transport.writes == []  # no 408: the request was held back by our own pause


async def test_client_that_reads_again_in_time_is_kept(connect, app):
    protocol, transport = connect(Limits(keepalive_timeout_s=0.15))
    protocol.data_received(get(b"/one"))
    protocol.pause_writing()
    await asyncio.sleep(0.1)
    protocol.resume_writing()  # it read: the idle clock starts again
    await asyncio.sleep(0.1)
    assert not transport.closed
    protocol.data_received(get(b"/two"))
    assert statuses(transport.data) == [200, 200]


# Many connections


async def test_connection_over_the_limit_gets_503_and_is_not_kept(connect, state):
    limits = Limits(max_connections=2)
    first, _ = connect(limits)
    connect(limits)
    extra, transport = connect(limits)
    assert transport.writes == [TOO_MANY_CONNECTIONS_CLOSE]
    assert transport.closed
    assert extra not in state.connections and extra.idle_timer is None
    assert parse_responses(transport.data)[0][0] == 503
    extra.connection_lost(None)
    # A connection that ends makes room for a new one.
    first.connection_lost(None)
    again, transport = connect(limits)
    assert again in state.connections and transport.writes == []


# Pipelined floods


async def test_pipelined_flood_one_request_per_read_never_exceeds_the_cap(connect, app):
    """A client pipelining thousands of requests and reading nothing: the answers owed never pass
    MAX_PIPELINED, reading stays paused, and everything is answered, in order, once it reads."""
    protocol, transport = connect()
    protocol.data_received(get(b"/async/head"))  # one slow answer at the head holds the rest back
    sent, most_pending = 1, 0
    while not transport.reading_paused:
        protocol.data_received(get(b"/r%d" % sent))
        sent += 1
        most_pending = max(most_pending, len(protocol.pending))
    assert most_pending == MAX_PIPELINED == sent
    for _ in range(3):  # the client keeps trying; the transport delivers nothing while paused
        await asyncio.sleep(0)
    assert transport.reading_paused and transport.writes == []
    app.futures[b"/async/head"].set_result(echo(b"/async/head"))
    await transport.until(lambda: not transport.reading_paused)
    assert statuses(transport.data) == [200] * sent


async def test_pipelined_flood_that_does_not_read_keeps_memory_bounded(connect, state):
    """5000 pipelined payments and summaries in socket-sized reads to a client that reads nothing
    until the end: the write buffer, the queue of answers and the tasks stay bounded, then every
    request is answered in order and exactly the valid payments are held."""
    api, buffer = api_app()
    recording = RecordingApp(api)
    transport = FakeTransport(high_water=64 * 1024)
    protocol, transport = connect(transport=transport, with_app=recording)
    requests = [payment(i) if i % 7 else get(b"/payments-summary") for i in range(5000)]
    requests[100] = post(b"/payments", b'{"correlationId":"nope","amount":1}')
    stream = b"".join(requests)
    read_size = 16 * 1024
    per_read = read_size // min(len(r) for r in requests) + 1
    offset, most_pending, most_tasks, most_buffered = 0, 0, 0, 0
    drained: list[bytes] = []
    while offset < len(stream):
        if transport.reading_paused:
            await asyncio.sleep(0)  # summaries resolve; a paused client still reads nothing
            if transport.reading_paused and transport.writing_paused:
                # Stuck on the client: it finally reads everything written so far.
                most_buffered = max(most_buffered, transport.buffered)
                drained.append(transport.data)
                transport.writes.clear()
                transport.drain()
            continue
        protocol.data_received(stream[offset:offset + read_size])
        offset += read_size
        most_pending = max(most_pending, len(protocol.pending))
        most_tasks = max(most_tasks, len(state.tasks))
        most_buffered = max(most_buffered, transport.buffered)
    await transport.until(lambda: not protocol.pending)
    drained.append(transport.data)
    answers = parse_responses(b"".join(drained))
    assert len(answers) == 5000
    assert [a[0] for a in answers] == [202 if i % 7 else 503 for i in range(100)] + [422] + \
        [202 if i % 7 else 503 for i in range(101, 5000)]
    assert buffer.held == sum(1 for i in range(5000) if i % 7 and i != 100)
    assert most_pending <= MAX_PIPELINED + per_read
    assert most_tasks <= MAX_PIPELINED + per_read
    # Past the high-water mark reading stops: at most one more read's answers are buffered.
    assert most_buffered <= 64 * 1024 + per_read * len(ACCEPTED) * 3
    assert transport.pause_calls > 0 and not transport.closed
    buffer.flush()


# Real sockets: asyncio's own loop and uvloop

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run_with_server(loop_name: str, limits: Limits, scenario) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        api, buffer = api_app()
        state = ServerState()
        server = await loop.create_server(lambda: HttpProtocol(api, limits, state), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await scenario(lambda: asyncio.open_connection("127.0.0.1", port), state)
        finally:
            server.close()
            for connection in list(state.connections):
                connection.shutdown()
            await server.wait_closed()
            buffer.flush()

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as loop_runner:
        loop_runner.run(main())


async def read_to_eof(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    async with asyncio.timeout(timeout):
        return await reader.read()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except ConnectionError:
        pass


@pytest.mark.parametrize("loop_name", LOOPS)
def test_real_socket_slowloris_gets_408_within_the_deadline(loop_name):
    async def scenario(open_connection, state) -> None:
        reader, writer = await open_connection()
        # A request in time on another connection is served.
        ok_reader, ok_writer = await open_connection()
        ok_writer.write(payment(1))
        started = time.monotonic()
        writer.write(b"POST /payments HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(POST_BODY))
        for byte in POST_BODY[:5]:  # trickled, stopping before the deadline (no reset races the 408)
            await asyncio.sleep(0.04)
            writer.write(bytes([byte]))
        data = await read_to_eof(reader)
        elapsed = time.monotonic() - started
        assert statuses(data) == [408], data
        assert 0.3 - 0.02 <= elapsed < 0.3 + 1.5
        assert statuses(await ok_reader.read(4096)) == [202]
        await close(writer)
        await close(ok_writer)

    run_with_server(loop_name, Limits(request_timeout_s=0.3), scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_real_socket_connection_over_the_limit_gets_503(loop_name):
    async def scenario(open_connection, state) -> None:
        kept = []
        for i in range(3):
            reader, writer = await open_connection()
            writer.write(get(b"/healthcheck"))
            assert statuses(await reader.read(4096)) == [200]  # accepted and registered
            kept.append((reader, writer))
        reader, writer = await open_connection()
        data = await read_to_eof(reader)
        assert statuses(data) == [503]
        assert parse_responses(data)[0][1][b"connection"] == b"close"
        await close(writer)
        # One leaves; a new connection is served again.
        await close(kept.pop()[1])
        async with asyncio.timeout(5):
            while len(state.connections) > 2:
                await asyncio.sleep(0.01)
        reader, writer = await open_connection()
        writer.write(payment(2))
        assert statuses(await reader.read(4096)) == [202]
        kept.append((reader, writer))
        for _, writer in kept:
            await close(writer)

    run_with_server(loop_name, Limits(max_connections=3), scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_real_socket_huge_content_length_gets_413_at_once(loop_name):
    async def scenario(open_connection, state) -> None:
        reader, writer = await open_connection()
        writer.write(b"POST /payments HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n")
        data = await read_to_eof(reader, timeout=2.0)  # no body byte sent: answered on the head alone
        assert statuses(data) == [413]
        await close(writer)

    run_with_server(loop_name, Limits(), scenario)
